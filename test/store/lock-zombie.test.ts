/**
 * Found by review (with two `reconciler` processes): a reconciler killed with SIGKILL whose parent has
 * not reaped it yet (a zombie: dead, its flock gone) blocked the next start on its state directory:
 * "state directory is in use by another reconciler (pid N)". acquireLock's check of an earlier version's record
 * (liveRecordHolder) reads /proc/<pid>/stat, which a zombie still has, with the same start time. A supervisor
 * that restarted before it waited (or a PID 1 that never reaps) could not bring the reconciler back; README: "a
 * killed one's lock went with it".
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { acquireLock } from '../../reconciler/store/lock.ts';
import { tempDir } from '../support/scratch.ts';

const root = join(import.meta.dirname, '..', '..');

describe('state directory lock after SIGKILL ', () => {
  it('is taken over while the killed holder is a zombie', async () => {
    const dir = tempDir('review-lock-zombie');
    const lock = join(dir, 'LOCK');
    const holder = `import('./reconciler/store/lock.ts').then((m) => m.acquireLock(${JSON.stringify(lock)})).then(() => { console.log('held'); setInterval(() => {}, 1000); })`;
    // The shell starts the holder in the background, prints its pid, then becomes `sleep`, which never reaps it.
    const sh = spawn('sh', ['-c', `node --import tsx -e "$HOLDER" & echo $!; exec sleep 20`], {
      cwd: root,
      env: { ...process.env, HOLDER: holder },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      let out = '';
      sh.stdout.on('data', (b: Buffer) => {
        out += b.toString();
      });
      const started = Date.now();
      while (!out.includes('held') && Date.now() - started < 15_000)
        await new Promise((r) => setTimeout(r, 50));
      expect(out).toContain('held');
      const pid = Number(out.split('\n')[0]);
      process.kill(pid, 'SIGKILL');
      // Dead: its flock is released; not reaped: /proc/<pid>/stat says Z.
      let state = '';
      for (let i = 0; i < 100 && state !== 'Z'; i++) {
        await new Promise((r) => setTimeout(r, 20));
        state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[0]!;
      }
      expect(state).toBe('Z');
      const taken = await acquireLock(lock);
      await taken.release();
    } finally {
      sh.kill('SIGKILL');
    }
  }, 30_000);
});
