/**
 * The API's credentials and where the running reconciler can be found, in `<state-dir>/api/` (0700):
 *
 * | file | mode | what |
 * | --- | --- | --- |
 * | `admin.token` | 0600 | the admin bearer credential (`rt_admin_` + 256 random bits, base64url), made once |
 * | `metrics.token` | 0600 | a credential that may only read `/metrics` (for a Prometheus scrape config) |
 * | `endpoint.json` | 0600 | `{url, pid, caFile?}` of the serving API, written when it listens, removed at shutdown |
 *
 * `ctl` and `drift` read these through `--state-dir` (whoever can read the state directory is an admin, as
 * with a kubeconfig), or get `--server URL` with `--credential-file` (a copy of `admin.token`).
 * The `rt_admin_` / `rt_metrics_` prefixes let secret scanners recognise a leaked credential.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeDirs, writeFileAtomic } from '../common/atomic-file.ts';

export type ApiRole = 'admin' | 'metrics';

export interface ApiEndpoint {
  url: string;
  pid: number;
  /** PEM file that verifies the server's certificate (https only). */
  caFile?: string;
}

export function apiDir(stateDir: string): string {
  return join(stateDir, 'api');
}

const TOKEN_FORMAT = /^rt_(admin|metrics)_[A-Za-z0-9_-]{43}$/;

/** Reads the credential of `role`, creating it (0600, in a 0700 directory) if there is none. */
export async function ensureApiCredential(stateDir: string, role: ApiRole): Promise<string> {
  const dir = apiDir(stateDir);
  await makeDirs(dir, 0o700);
  const path = join(dir, `${role}.token`);
  const existing = await readFile(path, 'utf8').catch(() => null);
  if (existing !== null && TOKEN_FORMAT.test(existing.trim())) return existing.trim();
  const token = `rt_${role}_${randomBytes(32).toString('base64url')}`;
  await writeFileAtomic(path, `${token}\n`, { mode: 0o600 });
  return token;
}

export async function writeEndpoint(stateDir: string, endpoint: ApiEndpoint): Promise<void> {
  await makeDirs(apiDir(stateDir), 0o700);
  await writeFileAtomic(join(apiDir(stateDir), 'endpoint.json'), `${JSON.stringify(endpoint)}\n`, {
    mode: 0o600,
  });
}

export async function removeEndpoint(stateDir: string, pid = process.pid): Promise<void> {
  const path = join(apiDir(stateDir), 'endpoint.json');
  const current = await readEndpoint(stateDir).catch(() => null);
  // Only our own: a newer reconciler on the same state dir may have written its endpoint since.
  if (current?.pid === pid) await rm(path, { force: true });
}

export async function readEndpoint(stateDir: string): Promise<ApiEndpoint | null> {
  const text = await readFile(join(apiDir(stateDir), 'endpoint.json'), 'utf8').catch(
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    },
  );
  return text === null ? null : (JSON.parse(text) as ApiEndpoint);
}
