/**
 * A long-running command stopped while it is still loading exits 0, as a stop at any later moment does
 * (bin/riptides-cli.mjs). A preloaded module sends the signal as soon as the process has a handler for it,
 * which, with the early handler, is long before the command has loaded: it exits 0 at once, having started
 * nothing and said nothing. (Node's own SIGTERM/SIGINT handling makes /proc's SigCgt useless for this.)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

describe('a stop signal during start-up', () => {
  it.each(['SIGTERM', 'SIGINT'] as const)(
    '%s while the reconciler is loading: exit 0, nothing started',
    async (signal) => {
      const state = join(mkdtempSync(join(tmpdir(), 'riptides-early-')), 'state');
      try {
        const preload = `data:text/javascript,const t = setInterval(() => { if (process.listenerCount('${signal}') > 0) { clearInterval(t); process.kill(process.pid, '${signal}'); } }, 1);`;
        const child = spawn(
          process.execPath,
          [
            '--import',
            preload,
            join(root, 'bin', 'riptides-cli.mjs'),
            'reconciler',
            '--repo',
            join(root, 'policies', 'quickstart'),
            '--listen',
            '127.0.0.1:0',
            '--state-dir',
            state,
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        let output = '';
        child.stdout.on('data', (b: Buffer) => (output += b));
        child.stderr.on('data', (b: Buffer) => (output += b));
        const exited = await new Promise<{ code: number | null; signal: string | null }>((resolve) =>
          child.on('exit', (code, sig) => resolve({ code, signal: sig })),
        );
        expect(exited).toEqual({ code: 0, signal: null });
        expect(output).toBe('');
        expect(() => readdirSync(state)).toThrow(/ENOENT/);
      } finally {
        rmSync(join(state, '..'), { recursive: true, force: true });
      }
    },
  );
});
