/**
 * One reconciler per state directory: a lock on `LOCK` (common/file-lock.ts, flock), never waited for. The
 * kernel gives it up when its holder exits however it exits (SIGKILL, a crash), so a later start takes it
 * over; one held by a live process, this one included (a second open of the same store), is refused with its pid.
 *
 * Earlier versions took no flock: they wrote `{"pid":N,"start":S}` (pid and process start time) into LOCK and
 * refused a start while that process lived. So that an upgrade done while one of them still runs cannot put two
 * reconcilers on one directory, in either order, the holder writes the same record, and a record naming a
 * live process (same pid, same start time) is refused even when no flock is held on the file.
 */
import { readFileSync } from 'node:fs';
import { LockBusyError, lockFile } from '../common/file-lock.ts';

export class StateDirLockedError extends Error {}

export interface HeldLock {
  release(): Promise<void>;
}

const busy = (path: string, pid: number | null) =>
  `state directory is in use by another reconciler (pid ${pid ?? 'unknown'}, lock ${path}); stop it, or give this one its own --state-dir`;

/**
 * Clock ticks since boot at which the process started (/proc/<pid>/stat field 22), or null where unknown or when
 * the process is dead: a zombie (state Z or X: killed, its flock gone, not reaped yet by its parent) keeps its
 * stat file and start time, and must not hold the directory (found by review: a supervisor that restarts before
 * it reaps could not bring the reconciler back).
 */
function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces and parentheses: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return null;
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/** The pid a LOCK record names when that very process still runs (an earlier version's holder), else null. */
function liveRecordHolder(path: string): number | null {
  let owner: { pid?: unknown; start?: unknown };
  try {
    owner = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
  if (typeof owner !== 'object' || owner === null) return null;
  const { pid, start } = owner;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return null;
  if (typeof start !== 'string') return null;
  return startTimeOf(pid) === start ? pid : null;
}

/** Takes the lock at `path` for this process. Throws StateDirLockedError if a live process holds it. */
export async function acquireLock(path: string): Promise<HeldLock> {
  const earlier = liveRecordHolder(path);
  if (earlier !== null) throw new StateDirLockedError(busy(path, earlier));
  try {
    const lock = await lockFile(path, {
      busyMessage: (pid) => busy(path, pid),
      record: `${JSON.stringify({ pid: process.pid, start: startTimeOf(process.pid) })}\n`,
    });
    return { release: async () => lock.release() };
  } catch (err) {
    if (err instanceof LockBusyError) throw new StateDirLockedError(err.message);
    throw err;
  }
}
