/**
 * One reconciler per state directory: a lock file holding the owner's pid and process start time. A lock left
 * by a process that is gone (killed with SIGKILL, the machine rebooted) is taken over; one held by a live
 * process, this one included (a second open of the same store), is refused with its pid. The start time (from /proc) tells a live owner from a new process that
 * reused its pid.
 */
import { readFileSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { writeFileAtomic } from '../common/atomic-file.ts';

export class StateDirLockedError extends Error {}

interface LockOwner {
  pid: number;
  /** Clock ticks since boot at which the process started (/proc/<pid>/stat field 22), or null where unknown. */
  start: string | null;
}

function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces and parentheses: count fields after its closing parenthesis.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function alive(owner: LockOwner): boolean {
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  const start = startTimeOf(owner.pid);
  return owner.start === null || start === null || start === owner.start;
}

export interface HeldLock {
  release(): Promise<void>;
}

/** Takes the lock at `path` for this process. Throws StateDirLockedError if a live process holds it. */
export async function acquireLock(path: string): Promise<HeldLock> {
  const me: LockOwner = { pid: process.pid, start: startTimeOf(process.pid) };
  const text = `${JSON.stringify(me)}\n`;
  try {
    const handle = await open(path, 'wx', 0o600);
    await handle.writeFile(text);
    await handle.sync();
    await handle.close();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    let owner: LockOwner | null = null;
    try {
      owner = JSON.parse(await readFile(path, 'utf8')) as LockOwner;
    } catch {
      // An unreadable lock (cut short by a crash while it was written) belongs to nobody.
    }
    if (owner && alive(owner))
      throw new StateDirLockedError(
        `state directory is in use by another reconciler (pid ${owner.pid}, lock ${path}); stop it, or give this one its own --state-dir`,
      );
    await writeFileAtomic(path, text, { mode: 0o600 });
  }
  return {
    async release() {
      const current = await readFile(path, 'utf8').catch(() => '');
      if (current === text) await rm(path, { force: true });
    },
  };
}
