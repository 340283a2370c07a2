/**
 * Pull requests as people make them, planned from a local clone made with the git CLI: each branch starts
 * from main, changes one thing a reviewer must see (or nothing that matters), and the plan must say so.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { capture } from '../support/cli.ts';
import { git } from '../support/git-fixtures.ts';
import { scratch } from '../support/scratch.ts';
import { BASE, edit } from './plan-helpers.ts';

let tmp: ReturnType<typeof scratch>;
let repo: string;

/** Writes (string) or deletes (null) files under the repository, relative to its root. */
function write(files: Record<string, string | null>): void {
  for (const [path, content] of Object.entries(files)) {
    const full = join(repo, path);
    if (content === null) rmSync(full, { recursive: true, force: true });
    else {
      mkdirSync(dirname(full), { recursive: true });
      writeFileSync(full, content);
    }
  }
}

/** Branch `name` from main with `files` changed in one commit; back on main afterwards. */
async function branch(name: string, files: Record<string, string | null>): Promise<void> {
  await git(repo, 'checkout', '--quiet', '-b', name, 'main');
  write(files);
  await git(repo, 'add', '--all');
  await git(repo, 'commit', '--quiet', '--allow-empty', '-m', name);
  await git(repo, 'checkout', '--quiet', 'main');
}

const inPolicy = (files: Record<string, string>) =>
  Object.fromEntries(Object.entries(files).map(([k, v]) => [`policy/${k}`, v]));

async function plan(args: string[], cwd = repo) {
  const out = capture(cwd, {});
  const code = await main(
    ['plan', '--cache-dir', join(tmp.dir, 'cache', String(Math.random())), ...args],
    out.io,
  );
  return { code, ...out };
}

beforeAll(async () => {
  tmp = scratch('pr-shapes');
  repo = join(tmp.dir, 'repo');
  mkdirSync(repo);
  await git(repo, 'init', '--quiet', '-b', 'main');
  write({ 'policy/riptides.config.yaml': 'trustDomain: example.com\n', ...inPolicy(BASE) });
  await git(repo, 'add', '--all');
  await git(repo, 'commit', '--quiet', '-m', 'base');
});

afterAll(() => tmp?.cleanup());

describe('a change of trust domain', () => {
  it('is planned as every identity replaced, each side compiled in its own trust domain', async () => {
    await branch('new-trust-domain', { 'policy/riptides.config.yaml': 'trustDomain: example.org\n' });
    const r = await plan([
      '--repo',
      repo,
      '--path',
      'policy',
      '--head',
      'new-trust-domain',
      '--format',
      'json',
    ]);
    expect(r.code, r.stderr).toBe(1);
    const json = JSON.parse(r.stdout);
    expect(json.changes).toBe(true);
    expect(json.notes).toContain(
      'the trust domain changes from example.com to example.org: every SPIFFE ID changes, so every workload gets a new identity and every peer that pins an old one refuses it',
    );
    const identities = json.programs.flatMap(
      (p: { identities: Array<{ change: string; spiffeId: string }> }) => p.identities,
    );
    expect(identities).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ change: 'removed', spiffeId: 'spiffe://example.com/apps/server' }),
        expect.objectContaining({ change: 'added', spiffeId: 'spiffe://example.org/apps/server' }),
      ]),
    );
    expect(json.risks.map((x: { rule: string }) => x.rule)).toContain('identity-removed-while-referenced');
  });

  it('is still planned in the one trust domain --trust-domain names, on both sides', async () => {
    const r = await plan([
      '--repo',
      repo,
      '--path',
      'policy',
      '--head',
      'new-trust-domain',
      '--trust-domain',
      'example.net',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('no changes');
  });
});

describe('a linked worktree (git worktree add)', () => {
  it('plans its own HEAD, not the main worktree’s, attached or detached', async () => {
    await branch('in-worktree', inPolicy(edit(BASE, 'services.yaml', 'port: 9000', 'port: 9001')));
    const tree = join(tmp.dir, 'linked');
    await git(repo, 'worktree', 'add', '--quiet', tree, 'in-worktree');
    const commit = await git(tree, 'rev-parse', 'HEAD');
    for (const head of ['HEAD', '@']) {
      const r = await plan(['--repo', '.', '--path', 'policy', '--head', head, '--format', 'json'], tree);
      expect(r.code, r.stderr).toBe(1);
      const json = JSON.parse(r.stdout);
      expect(json.head.commit).toBe(commit);
      expect(json.base.ref).toBe('merge-base(main)');
      expect(json.resources.map((c: { name: string }) => c.name)).toEqual(['billing']);
    }
    await git(tree, 'checkout', '--quiet', '--detach');
    const detached = await plan(['--repo', tree, '--path', 'policy', '--head', 'HEAD', '--format', 'json']);
    expect(JSON.parse(detached.stdout).head.commit).toBe(commit);
  });
});

describe('the pull request that adds the policy path', () => {
  it('plans everything in it as created, against a base without the path', async () => {
    const fresh = join(tmp.dir, 'fresh');
    mkdirSync(fresh);
    await git(fresh, 'init', '--quiet', '-b', 'main');
    writeFileSync(join(fresh, 'README.md'), 'policy comes next\n');
    await git(fresh, 'add', '--all');
    await git(fresh, 'commit', '--quiet', '-m', 'readme');
    await git(fresh, 'checkout', '--quiet', '-b', 'adopt');
    mkdirSync(join(fresh, 'policy'));
    writeFileSync(join(fresh, 'policy', 'riptides.config.yaml'), 'trustDomain: example.com\n');
    for (const [name, text] of Object.entries(BASE)) writeFileSync(join(fresh, 'policy', name), text);
    await git(fresh, 'add', '--all');
    await git(fresh, 'commit', '--quiet', '-m', 'adopt riptides');
    const r = await plan(['--repo', fresh, '--path', 'policy', '--head', 'adopt'], fresh);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toMatch(
      /^note: policy does not exist at base merge-base\(main\) \([0-9a-f]{8}\): everything under it is new$/m,
    );
    expect(r.stdout).toContain('► Service/riptides-system/api created');
    expect(r.stdout).toContain('► WorkloadIdentity/riptides-system/server created');
    expect(r.stdout).toMatch(/^7 created, 0 changed, 0 deleted; 1 node program\(s\) change;/m);
  });
});
