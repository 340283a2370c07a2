/**
 * `mkdir -p` that cannot hang, for every directory the product creates (state, caches, control trees, reports).
 * Node's own `mkdir(…, { recursive: true })` (Node 20, libuv) loops forever under /proc and /sys, where mkdir
 * answers ENOENT for a parent that exists: `plan --cache-dir /proc` never returned. Here each missing level is
 * made in turn, nearest the root first, with `mode` (less the umask, as mkdir does); the first error that is
 * not EEXIST is thrown (ENOENT, ENOTDIR, EACCES…), naming the directory.
 */
import { mkdirSync, statSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/** The missing levels of `path`, nearest the root first; throws when an existing level is not a directory. */
function missingLevels(path: string, isDir: (p: string) => boolean | null): string[] {
  const missing: string[] = [];
  for (let p = resolve(path); ; ) {
    const dir = isDir(p);
    if (dir === true) break;
    if (dir === false)
      throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${p}'`), { code: 'ENOTDIR', path: p });
    missing.push(p);
    const parent = dirname(p);
    if (parent === p) break;
    p = parent;
  }
  return missing.reverse();
}

const exists = (err: unknown) => (err as NodeJS.ErrnoException).code === 'EEXIST';
const absent = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';

/** Creates `path` and its missing parents (`mode` for each one created, default 0o777 less the umask). */
export function makeDirsSync(path: string, mode = 0o777): void {
  const levels = missingLevels(path, (p) => {
    try {
      return statSync(p).isDirectory();
    } catch (err) {
      if (absent(err)) return null;
      throw err;
    }
  });
  for (const dir of levels)
    try {
      mkdirSync(dir, { mode });
    } catch (err) {
      if (!exists(err)) throw err;
    }
}

/** The same, asynchronously. */
export async function makeDirs(path: string, mode = 0o777): Promise<void> {
  const known = new Map<string, boolean | null>();
  // Stat every level up to the first that exists, then decide synchronously over the answers.
  for (let p = resolve(path); ; ) {
    const dir = await stat(p).then(
      (s) => s.isDirectory(),
      (err: unknown) => {
        if (absent(err)) return null;
        throw err;
      },
    );
    known.set(p, dir);
    if (dir !== null || dirname(p) === p) break;
    p = dirname(p);
  }
  for (const dir of missingLevels(path, (p) => known.get(p) ?? null))
    await mkdir(dir, { mode }).catch((err: unknown) => {
      if (!exists(err)) throw err;
    });
}
