/**
 * Durable, atomic file replacement for the control tree: write a temp file in the same directory (created with
 * its final mode, O_EXCL so no planted file or symlink is followed), fsync it, rename it over the target,
 * fsync the directory. A reader sees the old file or the new one, never a part; a crash leaves one of the two.
 *
 * kernel-module/ is the lowest layer, so this is the project's one atomic writer: the agent (agent/files.ts)
 * and the reconciler (reconciler/common/atomic-file.ts, which also creates parent directories) use it.
 */
import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ControlError } from './errors.ts';

/** Temp files are `.<name>.<random>.tmp`; readers and drift detection ignore names of that shape. */
export const TEMP_FILE = /^\..+\.[0-9a-f]{12}\.tmp$/;

export interface Owner {
  uid: number;
  gid: number;
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `path` with `data`, ending with exactly `mode` (the umask does not apply) and, when given, `owner`.
 * The parent directory must exist (see {@link ensureDir}).
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode: number,
  owner?: Owner,
): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode);
    if (owner) await handle.chown(owner.uid, owner.gid);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

/**
 * Makes `dir` (and its missing parents up to `root`, which must exist) a real directory with exactly `mode`.
 * A symlink or a file in the way is refused: the writer runs as root and must never be steered outside its
 * tree by something planted in it.
 */
export async function ensureDir(root: string, rel: string, mode: number, owner?: Owner): Promise<string> {
  let current = root;
  const parts = rel.split('/').filter((p) => p !== '');
  for (let i = 0; i < parts.length; i++) {
    current = join(current, parts[i]!);
    const last = i === parts.length - 1;
    let st = await lstat(current).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (!st) {
      await mkdir(current, { mode: last ? mode : 0o755 }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      st = await lstat(current);
      await fsyncDir(dirname(current));
    }
    if (!st.isDirectory())
      throw new ControlError(
        'unsafe-path',
        `${current} is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}; the control tree only holds real directories`,
        `remove ${current} by hand; the writer recreates it`,
      );
    if (last) {
      if ((st.mode & 0o7777) !== mode) await chmod(current, mode);
      if (owner && (st.uid !== owner.uid || st.gid !== owner.gid)) await chown(current, owner.uid, owner.gid);
    }
  }
  return current;
}
