/**
 * A git http-backend server on loopback (git-server.ts) holding this checkout's `policies/quickstart` under
 * `policy/` in `policy.git`, committed and pushed from a work clone: for tests of a reconciler that follows a
 * remote and must see the server fail (`server.setMode`).
 */
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createBareRepo, WorkClone } from './git-fixtures.ts';
import { type GitServer, startGitServer } from './git-server.ts';
import { repoRoot } from './shared.ts';

export async function quickstartRemote(
  dir: string,
): Promise<{ server: GitServer; clone: WorkClone; url: string }> {
  mkdirSync(join(dir, 'srv'), { recursive: true });
  await createBareRepo(join(dir, 'srv'), 'policy');
  const server = await startGitServer({ root: join(dir, 'srv') });
  const url = `${server.url}/policy.git`;
  const clone = await WorkClone.create(url, join(dir, 'clone'));
  cpSync(join(repoRoot, 'policies', 'quickstart'), join(clone.dir, 'policy'), { recursive: true });
  await clone.commit('quickstart');
  await clone.push();
  return { server, clone, url };
}
