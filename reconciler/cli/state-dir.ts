/**
 * Where the agent keeps its state when --state-dir is not given. (The reconciler, `up`, `ctl`, `drift` and
 * `token` share store/state-dir.ts defaultStateDir.)
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { CommandIO } from './command.ts';

/**
 * `--state-dir DIR`, else `$XDG_STATE_HOME/riptides/<role>` (XDG's default `~/.local/state`): per user,
 * never a shared temp dir (keys and tokens live there).
 */
export function stateDirOf(flag: string | undefined, io: CommandIO, role: 'agent'): string {
  if (flag) return resolve(io.cwd, flag);
  const base = io.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'riptides', role);
}

/** `HOST:PORT` (IPv6 as `[::1]:PORT`) → parts; null when it is not one. */
export function parseHostPort(text: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  return { host: m[1] ?? m[2]!, port };
}
