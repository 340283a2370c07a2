/**
 * The reconciler's door to the one atomic file writer, `kernel-module/control/atomic.ts` (the lowest layer, so
 * that the kernel module's control tree, the agent and the reconciler all write the same way): a temporary
 * file created with its final mode (O_EXCL, so nothing planted is followed), fsync, rename over the target,
 * fsync of the directory. After a crash at any point the target holds the old content or the new, never a
 * mix or nothing. Here it also creates the parent directories, which the reconciler's callers expect. A crash
 * between create and rename leaves a temporary file matching `TEMP_FILE`, which a directory's owner may remove
 * at open (the state store does).
 */
import { dirname } from 'node:path';
import { TEMP_FILE, writeFileAtomic as writeReplacing } from '../../kernel-module/control/atomic.ts';
import { makeDirs, makeDirsSync } from '../../kernel-module/control/make-dirs.ts';

export { makeDirs, makeDirsSync, TEMP_FILE };

export interface AtomicWriteOptions {
  /** The file's exact mode (the umask does not apply); default 0o644. 0o600 for keys and private state. */
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
  await makeDirs(dirname(path), opts.dirMode ?? 0o700);
  await writeReplacing(path, data, opts.mode ?? 0o644);
}
