/**
 * Pull-request jobs on one CI runner often share the plan cache (the default one, or one restored per
 * branch): `plan` processes running at once on one --cache-dir each get the plan, where they used to
 * interleave isomorphic-git's ref writes and fail with "unknown ref", "cannot connect (ENOENT)" or an
 * isomorphic-git parameter error.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { scratch } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';
import { H } from './plan-helpers.ts';

const BIN = join(repoRoot, 'bin', 'riptides-cli.mjs');
const PARALLEL = 6;

const service = (name: string) =>
  `${H}kind: Service\nmetadata:\n  name: ${name}\nspec:\n  addresses:\n    - address: ${name}.internal\n      port: 443\n  labels:\n    app: ${name}\n`;

function plan(url: string, cacheDir: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      [BIN, 'plan', '--repo', url, '--path', 'policies', '--base', 'main~1', '--head', 'main'],
      {
        cwd: repoRoot,
        encoding: 'utf8',
        timeout: 120_000,
        env: { ...process.env, XDG_CACHE_HOME: cacheDir },
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 2) : 0, stdout, stderr }),
    ),
  );
}

describe('plan processes sharing one cache', () => {
  const tmp = scratch('plan-shared-cache');
  let server: GitServer;
  let work: WorkClone;

  beforeAll(async () => {
    const root = join(tmp.dir, 'srv');
    await createBareRepo(root, 'policy');
    server = await startGitServer({ root });
    work = await WorkClone.create(`${server.url}/policy.git`, join(tmp.dir, 'work'));
    work.write({
      'policies/riptides.config.yaml': 'trustDomain: example.com\n',
      'policies/a.yaml': service('a'),
    });
    await work.commit('a');
  });
  afterAll(async () => {
    await server?.close();
    tmp.cleanup();
  });

  it('each of six at once, cold and then warm with new commits, plans the head it was asked for', async () => {
    // The default cache (under XDG_CACHE_HOME), shared by every run as on a CI runner.
    const cache = join(tmp.dir, 'xdg');
    for (const name of ['b', 'c', 'd']) {
      work.write({ [`policies/${name}.yaml`]: service(name) });
      await work.commit(name);
      await work.push('HEAD:main');
      const runs = await Promise.all(
        Array.from({ length: PARALLEL }, () => plan(`${server.url}/policy.git`, cache)),
      );
      for (const run of runs) {
        expect(run.stderr).not.toMatch(/riptides-cli plan:/);
        // Exit 1: the plan has changes (one Service added), as every run must say.
        expect(run.code).toBe(1);
        expect(run.stdout).toContain(`Service/riptides-system/${name} created`);
      }
    }
  }, 180_000);
});
