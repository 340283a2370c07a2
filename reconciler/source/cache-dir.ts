import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { makeDirsSync } from '../common/atomic-file.ts';

/**
 * A cache directory of this user's own for `key` (a repository URL or path): under $XDG_CACHE_HOME or
 * ~/.cache, created 0700. Never a predictable path in a shared temp directory, where another user could
 * prepare a cache that makes a plan show something other than what the repository holds.
 */
export function userCacheDir(kind: string, key: string, env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME || join(homedir(), '.cache');
  const dir = join(base, 'riptides', kind, createHash('sha256').update(key).digest('hex').slice(0, 16));
  makeDirsSync(dir, 0o700);
  return dir;
}
