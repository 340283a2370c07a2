import { type ChildProcess, execFileSync } from 'node:child_process';
import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LockBusyError, lockFile } from '../../reconciler/common/file-lock.ts';
import { classify } from '../../reconciler/errors/classify.ts';
import { holdLock } from '../support/hold-lock.ts';
import { scratch } from '../support/scratch.ts';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

/** Another process holding the lock on `path`; killed after the test. */
async function holder(path: string, shared = false): Promise<ChildProcess> {
  const child = await holdLock(path, { shared });
  children.push(child);
  return child;
}

const busyMessage = (pid: number | null) => `held by ${pid ?? 'someone'}`;

describe('locks between processes (flock)', () => {
  it('a lock another process holds is refused at once, naming its pid', async () => {
    const tmp = scratch('file-lock');
    const path = join(tmp.dir, 'a.lock');
    const other = await holder(path);
    const err = await lockFile(path, { busyMessage }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockBusyError);
    expect((err as LockBusyError).holder).toBe(other.pid);
    expect((err as Error).message).toBe(`held by ${other.pid}`);
    tmp.cleanup();
  });

  it('a waiter is told once, and gets the lock as soon as its holder is killed (never stale)', async () => {
    const tmp = scratch('file-lock');
    const path = join(tmp.dir, 'a.lock');
    const other = await holder(path);
    const told: Array<number | null> = [];
    const taking = lockFile(path, {
      waitMs: 20_000,
      busyMessage,
      onWait: (pid) => {
        told.push(pid);
        other.kill('SIGKILL');
      },
    });
    const lock = await taking;
    expect(told).toEqual([other.pid]);
    // Held now: a second taker in this very process is refused like another process.
    await expect(lockFile(path, { busyMessage })).rejects.toThrow(`held by ${process.pid}`);
    lock.release();
    (await lockFile(path, { busyMessage })).release();
    tmp.cleanup();
  });

  it('shared holders coexist; an exclusive taker waits for all of them, and gives up after waitMs', async () => {
    const tmp = scratch('file-lock');
    const path = join(tmp.dir, 'a.lock');
    await holder(path, true);
    const mine = await lockFile(path, { shared: true, busyMessage });
    const started = performance.now();
    await expect(lockFile(path, { waitMs: 300, busyMessage })).rejects.toBeInstanceOf(LockBusyError);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    mine.release();
    tmp.cleanup();
  });

  it('a lock path that is a symlink or a FIFO is refused with the path and the reason', async () => {
    const tmp = scratch('file-lock');
    const target = join(tmp.dir, 'target');
    writeFileSync(target, 'keep');
    symlinkSync(target, join(tmp.dir, 'link.lock'));
    await expect(lockFile(join(tmp.dir, 'link.lock'), { busyMessage })).rejects.toThrow(
      `cannot lock ${join(tmp.dir, 'link.lock')}: ELOOP`,
    );
    execFileSync('mkfifo', [join(tmp.dir, 'fifo.lock')]);
    await expect(lockFile(join(tmp.dir, 'fifo.lock'), { busyMessage })).rejects.toThrow(
      `cannot lock ${join(tmp.dir, 'fifo.lock')}: EINVAL`,
    );
    // The errno fields stay: classify() maps EACCES/EROFS/ENOSPC by code, the CLI reads syscall.
    const missing = join(tmp.dir, 'missing', 'x.lock');
    const err = await lockFile(missing, { busyMessage }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      message: `cannot lock ${missing}: ENOENT`,
      code: 'ENOENT',
      syscall: 'open',
    });
    expect(classify(Object.assign(err as Error, { code: 'EACCES' })).code).toBe('StateDirUnusable');
    tmp.cleanup();
  });
});
