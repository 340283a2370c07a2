/**
 * The one atomic file writer: every file the product writes to keep (CA keys and state, caches, plan and
 * compile output) goes through it. Write a temporary file in the same directory, fsync it, rename it over the
 * target, then fsync the directory, so that after a crash at any point the target holds either the old
 * content or the new, never a mix or nothing (POSIX rename is atomic; the directory fsync makes the rename
 * itself durable, as SQLite and etcd do). A crash between create and rename leaves a `.<12 hex>.tmp` file in
 * the directory, which its owner may remove at open (the state store does).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface AtomicWriteOptions {
  /**
   * The file's exact mode, e.g. 0o600 for a private key: the temporary file is created with it (so the data
   * is never readable by others, not even for an instant) and chmod-ed after, since open() honours the umask.
   * Without it the file gets 0o666 less the umask, as any new file.
   */
  mode?: number;
  /**
   * Mode of parent directories created on the way, less the umask (default 0o700: what we keep is private
   * until said otherwise; 0o777 for output a user asked for, as any new directory).
   */
  dirMode?: number;
}

export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: opts.dirMode ?? 0o700 });
  const temp = join(dir, `.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', opts.mode ?? 0o666);
  try {
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    if (opts.mode !== undefined) await chmod(temp, opts.mode);
    await rename(temp, path);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw err;
  }
  await syncDirectory(dir);
}

/** Makes a rename (or create) in `dir` durable. Some file systems refuse fsync on a directory: nothing to do then. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM' && code !== 'EBADF') throw err;
  } finally {
    await handle?.close();
  }
}
