/**
 * Locks between processes of one host on a lock file: flock(2), through libc (koffi; Node has no binding).
 * The kernel drops a lock when its holder exits however it exits (SIGKILL, a crash), so a lock is never stale
 * and nothing guesses from pids or file ages. The holder writes its pid into the file, for the message of
 * whoever waits. The file is left in place when released: removing a lock file races with its next taker.
 *
 * Locks are per open file, so two takers in one process exclude each other as two processes do.
 */
import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EINTR = 4;
const EWOULDBLOCK = 11;

/** First and longest pause between two attempts while another process holds the lock, milliseconds. */
const FIRST_PAUSE_MS = 20;
const LONGEST_PAUSE_MS = 250;

interface Libc {
  flock(fd: number, op: number): number;
  errno(): number;
}

let libc: Libc | null = null;

/** glibc's name, then musl's (Alpine): the C library that holds flock(2). */
const LIBC_NAMES = ['libc.so.6', 'libc.musl-x86_64.so.1', 'libc.musl-aarch64.so.1'];

async function loadLibc(path: string): Promise<Libc> {
  if (libc) return libc;
  let koffi: typeof import('koffi').default;
  try {
    koffi = (await import('koffi')).default;
  } catch (err) {
    throw new Error(
      `cannot lock ${path}: the koffi package did not load (${(err as Error).message}); run npm ci`,
    );
  }
  for (const name of LIBC_NAMES) {
    let lib: ReturnType<typeof koffi.load>;
    try {
      lib = koffi.load(name);
    } catch {
      continue;
    }
    const flock = lib.func('int flock(int fd, int operation)') as (fd: number, op: number) => number;
    libc = { flock, errno: () => koffi.errno() };
    return libc;
  }
  throw new Error(`cannot lock ${path}: no C library with flock(2) found (tried ${LIBC_NAMES.join(', ')})`);
}

/** Another process (or another open in this one) holds the lock; `holder` is its pid when it wrote one. */
export class LockBusyError extends Error {
  constructor(
    message: string,
    readonly holder: number | null,
  ) {
    super(message);
  }
}

export interface LockOptions {
  /** Several shared holders at once, or one exclusive holder (the default). */
  shared?: boolean;
  /** How long to wait for a busy lock, milliseconds; 0 (the default) fails at once. */
  waitMs?: number;
  /** Called once, when the lock is found busy and the caller waits (not when waitMs is 0). */
  onWait?: (holder: number | null) => void;
  /** Text of the LockBusyError when the lock stays busy: gets the holder's pid (null when unknown). */
  busyMessage: (holder: number | null) => string;
  /**
   * What an exclusive holder writes into the file: its pid on a line (the default), or a record that starts
   * with `{"pid":N` (the state directory's, which earlier versions read as JSON).
   */
  record?: string;
}

export interface FileLock {
  /** Gives the lock up; a second call does nothing. */
  release(): void;
}

/**
 * Takes the lock on `path` (created 0600 if missing; a symlink there is refused with ELOOP). Resolves once it is
 * held; rejects with LockBusyError when it is still busy after `waitMs`, or with the error of open(2).
 */
export async function lockFile(path: string, opts: LockOptions): Promise<FileLock> {
  const { flock, errno } = await loadLibc(path);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    throw lockError(path, err);
  }
  // A FIFO or a device there would block the read of a holder's pid, or take no pid at all: refused at once.
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw lockError(
      path,
      Object.assign(new Error('not a regular file'), { code: 'EINVAL', syscall: 'open' }),
    );
  }
  const op = (opts.shared ? LOCK_SH : LOCK_EX) | LOCK_NB;
  const deadline = performance.now() + (opts.waitMs ?? 0);
  let pause = FIRST_PAUSE_MS;
  let told = false;
  try {
    for (;;) {
      if (flock(fd, op) === 0) break;
      const code = errno();
      if (code === EINTR) continue;
      if (code !== EWOULDBLOCK) throw new Error(`cannot lock ${path}: flock(2) failed with errno ${code}`);
      const holder = holderOf(fd);
      const left = deadline - performance.now();
      if (left <= 0) throw new LockBusyError(opts.busyMessage(holder), holder);
      if (!told) {
        told = true;
        opts.onWait?.(holder);
      }
      await new Promise((r) => setTimeout(r, Math.min(pause, left)));
      pause = Math.min(pause * 2, LONGEST_PAUSE_MS);
    }
    if (!opts.shared) {
      try {
        ftruncateSync(fd);
        writeSync(fd, opts.record ?? `${process.pid}\n`, 0);
      } catch (err) {
        // Not a regular file (a FIFO, a device): say which.
        throw lockError(path, err);
      }
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  let open = true;
  return {
    release() {
      if (!open) return;
      open = false;
      // The pid goes first, so that a waiter never names a holder that has left; closing drops the lock,
      // whatever the truncation did.
      try {
        if (!opts.shared) ftruncateSync(fd);
      } catch {
        // The lock goes with the close below; only the pid may stay behind.
      } finally {
        closeSync(fd);
      }
    },
  };
}

/** Runs `fn` holding the lock on `path` (see lockFile), and gives it up however `fn` ends. */
export async function withFileLock<T>(path: string, opts: LockOptions, fn: () => Promise<T>): Promise<T> {
  const lock = await lockFile(path, opts);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}

/**
 * A system error of open(2), ftruncate(2) or write(2) on the lock file, named by the lock path, keeping its errno
 * fields: errors/classify.ts reads `code` (EACCES, EROFS: the state directory is unusable; ENOSPC: the disk is
 * full) and the CLI reads `syscall` (a system error is the operator's to fix, not an unexpected one).
 */
function lockError(path: string, err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  const out: NodeJS.ErrnoException = new Error(`cannot lock ${path}: ${e.code ?? e.message}`, { cause: err });
  if (e.code !== undefined) out.code = e.code;
  if (e.errno !== undefined) out.errno = e.errno;
  if (e.syscall !== undefined) out.syscall = e.syscall;
  if (e.path !== undefined) out.path = e.path;
  return out;
}

/** The pid a holder wrote, read through our own open file (never a file swapped in since), at most 64 bytes. */
function holderOf(fd: number): number | null {
  try {
    const buf = Buffer.alloc(64);
    const text = buf.toString('utf8', 0, readSync(fd, buf, 0, 64, 0));
    const pid = Number.parseInt(/^\{"pid":(\d+)/.exec(text)?.[1] ?? text, 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
