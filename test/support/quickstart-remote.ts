/**
 * A git http-backend server on loopback (git-server.ts) holding this checkout's `policies/quickstart` under
 * `policy/` in `policy.git`, committed and pushed from a work clone: for tests of a reconciler that follows a
 * remote and must see the server fail (`server.setMode`); `follow` starts a reconciler on it (state in
 * `dir/state`, no API, no polling, silent), with `options` on top.
 */
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Reconciler, type ReconcilerOptions } from '../../reconciler/loop/reconciler.ts';
import { createLogger } from '../../reconciler/telemetry/logger.ts';
import { createBareRepo, WorkClone } from './git-fixtures.ts';
import { type GitServer, startGitServer } from './git-server.ts';
import { repoRoot } from './shared.ts';

export async function quickstartRemote(dir: string): Promise<{
  server: GitServer;
  clone: WorkClone;
  url: string;
  follow: (options: Partial<ReconcilerOptions>) => Promise<Reconciler>;
}> {
  mkdirSync(join(dir, 'srv'), { recursive: true });
  await createBareRepo(join(dir, 'srv'), 'policy');
  const server = await startGitServer({ root: join(dir, 'srv') });
  const url = `${server.url}/policy.git`;
  const clone = await WorkClone.create(url, join(dir, 'clone'));
  cpSync(join(repoRoot, 'policies', 'quickstart'), join(clone.dir, 'policy'), { recursive: true });
  await clone.commit('quickstart');
  await clone.push();
  const follow = (options: Partial<ReconcilerOptions>) =>
    Reconciler.start({
      repo: url,
      path: 'policy',
      stateDir: join(dir, 'state'),
      agents: { host: '127.0.0.1', port: 0 },
      api: null,
      pollIntervalMs: 0,
      logger: createLogger({ level: 'silent' }),
      ...options,
    });
  return { server, clone, url, follow };
}
