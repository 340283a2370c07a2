/**
 * The default state directory, shared by `up`, `reconciler`, `ctl` and `drift` so that they find each other
 * without flags: `$RIPTIDES_STATE_DIR`, else `$XDG_STATE_HOME/riptides`, else `~/.local/state/riptides`
 * (the XDG base directory for state that survives restarts). Services pass `--state-dir /var/lib/riptides`.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RIPTIDES_STATE_DIR) return env.RIPTIDES_STATE_DIR;
  if (env.XDG_STATE_HOME) return join(env.XDG_STATE_HOME, 'riptides');
  return join(env.HOME || homedir(), '.local', 'state', 'riptides');
}
