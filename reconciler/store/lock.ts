/**
 * One reconciler per state directory: a lock on `LOCK` (common/file-lock.ts, flock), never waited for. The
 * kernel gives it up when its holder exits however it exits (SIGKILL, a crash), so a later start takes it
 * over; one held by a live process, this one included (a second open of the same store), is refused with its pid.
 */
import { LockBusyError, lockFile } from '../common/file-lock.ts';

export class StateDirLockedError extends Error {}

export interface HeldLock {
  release(): Promise<void>;
}

/** Takes the lock at `path` for this process. Throws StateDirLockedError if a live process holds it. */
export async function acquireLock(path: string): Promise<HeldLock> {
  try {
    const lock = await lockFile(path, {
      busyMessage: (pid) =>
        `state directory is in use by another reconciler (pid ${pid ?? 'unknown'}, lock ${path}); stop it, or give this one its own --state-dir`,
    });
    return { release: async () => lock.release() };
  } catch (err) {
    if (err instanceof LockBusyError) throw new StateDirLockedError(err.message);
    throw err;
  }
}
