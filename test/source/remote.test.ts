import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource, type PolicySource } from '../../reconciler/source/index.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { decode, scratch, sourceError } from './helpers.ts';

const yaml = (name: string, rev = 1) => `kind: Service\nmetadata:\n  name: ${name}\nspec:\n  rev: ${rev}\n`;

describe('git source over smart HTTP (git-http-backend on loopback)', () => {
  const tmp = scratch('git-remote');
  let server: GitServer;
  let work: WorkClone;
  let source: PolicySource;
  const commits: Record<string, string> = {};
  const progress: string[] = [];

  beforeAll(async () => {
    const root = join(tmp.dir, 'srv');
    await createBareRepo(root, 'policy');
    server = await startGitServer({ root });
    // Pushes go through the server too, so receive-pack and upload-pack are both the real thing.
    work = await WorkClone.create(`${server.url}/policy.git`, join(tmp.dir, 'work'));
    work.write({
      'README.md': '# policy\n',
      'policies/prod/a.yaml': yaml('a'),
      'policies/prod/b.yaml': yaml('b'),
      'policies/prod/deep/c.yaml': yaml('c'),
      'policies/staging/d.yaml': yaml('d'),
      'other/e.yaml': yaml('e'),
    });
    commits.first = await work.commit('first');
    await work.git('tag', 'v1-light');
    await work.git('tag', '-a', 'v1', '-m', 'release 1');
    work.write({ 'policies/prod/a.yaml': yaml('a', 2) });
    commits.second = await work.commit('change a');
    await work.git('checkout', '--quiet', '-b', 'feature');
    work.write({ 'policies/prod/b.yaml': null, 'policies/prod/new.yaml': yaml('new') });
    commits.feature = await work.commit('feature work');
    await work.push('main', 'feature', '--tags');
    source = await openSource({
      repo: `${server.url}/policy.git`,
      cacheDir: join(tmp.dir, 'cache'),
      onProgress: (m) => progress.push(m),
    });
    await source.fetch();
  });
  afterAll(async () => {
    await server?.close();
    tmp.cleanup();
  });

  it('describes the remote by its URL and reports fetch progress', () => {
    expect(source.description).toBe(`${server.url}/policy.git`);
    expect(progress[0]).toBe(`fetching ${server.url}/policy.git`);
    expect(progress.at(-1)).toMatch(/^fetched .* received in \d+ ms$/);
  });

  it('resolves branches, lightweight and annotated tags, full and short commit ids', async () => {
    expect(await source.resolveRef('main')).toBe(commits.second);
    expect(await source.resolveRef('refs/heads/main')).toBe(commits.second);
    expect(await source.resolveRef('feature')).toBe(commits.feature);
    expect(await source.resolveRef('v1-light')).toBe(commits.first);
    expect(await source.resolveRef('v1')).toBe(commits.first);
    expect(await source.resolveRef(commits.first!)).toBe(commits.first);
    expect(await source.resolveRef(commits.feature!.slice(0, 8))).toBe(commits.feature);
    expect(await source.defaultBranch()).toBe('main');
  });

  it('names near refs when a ref is unknown', async () => {
    const err = await sourceError(source.resolveRef('mian'));
    expect(err.code).toBe('unknown-ref');
    expect(err.message).toContain('"mian"');
    expect(err.hint).toContain('branch main');
    expect((await sourceError(source.resolveRef('a'.repeat(40)))).code).toBe('unknown-ref');
    expect((await sourceError(source.resolveRef('main..feature'))).code).toBe('unknown-ref');
  });

  it('finds merge bases and ancestry', async () => {
    expect(await source.mergeBase('main', 'feature')).toBe(commits.second);
    expect(await source.isAncestor(commits.first!, commits.feature!)).toBe(true);
    expect(await source.isAncestor(commits.feature!, commits.first!)).toBe(false);
    expect(await source.isAncestor(commits.second!, commits.second!)).toBe(true);
  });

  it('lists the blobs under a subdirectory recursively, sorted, with repo-root paths', async () => {
    const files = await source.listFiles(commits.first!, 'policies/prod');
    expect(files.map((f) => f.path)).toEqual([
      'policies/prod/a.yaml',
      'policies/prod/b.yaml',
      'policies/prod/deep/c.yaml',
    ]);
    expect(files.every((f) => f.mode === '100644' && /^[0-9a-f]{40}$/.test(f.oid))).toBe(true);
    expect(decode(await source.readBlob(files[0]!.oid))).toBe(yaml('a'));
    expect((await source.listFiles(commits.first!)).length).toBe(6);
    expect((await source.listFiles(commits.first!, './policies/')).length).toBe(4);
  });

  it('refuses a path that does not exist at that commit, or that leaves the repository', async () => {
    const missing = await sourceError(source.listFiles(commits.first!, 'policy'));
    expect(missing.code).toBe('bad-path');
    expect(missing.hint).toContain('policies');
    expect((await sourceError(source.listFiles(commits.first!, 'README.md'))).code).toBe('bad-path');
    expect((await sourceError(source.listFiles(commits.first!, '../etc'))).code).toBe('bad-path');
    expect((await sourceError(source.changedFiles('v1', 'main', 'nope'))).code).toBe('bad-path');
  });

  it('diffs two commits by tree ids: a one-file change reads one blob', async () => {
    const before = source.stats();
    const changes = await source.changedFiles('v1', 'main', 'policies');
    expect(changes).toEqual({
      added: [],
      modified: [{ path: 'policies/prod/a.yaml', oid: expect.any(String), mode: '100644' }],
      deleted: [],
    });
    for (const f of [...changes.added, ...changes.modified]) await source.readBlob(f.oid);
    const after = source.stats();
    expect(after.blobsRead - before.blobsRead).toBe(1);
    // Root, policies and policies/prod on each side at most; the unchanged staging and deep trees are skipped.
    expect(after.treesRead - before.treesRead).toBeLessThanOrEqual(6);
  });

  it('reports added and deleted files between branches', async () => {
    const changes = await source.changedFiles('main', 'feature', 'policies/prod');
    expect(changes.added.map((f) => f.path)).toEqual(['policies/prod/new.yaml']);
    expect(changes.deleted.map((f) => f.path)).toEqual(['policies/prod/b.yaml']);
    expect(changes.modified).toEqual([]);
  });

  it('does not re-read trees it has already listed', async () => {
    await source.listFiles('feature', 'policies');
    const before = source.stats().treesRead;
    await source.listFiles('feature', 'policies');
    expect(source.stats().treesRead).toBe(before);
  });

  it('concurrent fetches share one transfer', async () => {
    const seen = server.requests.length;
    await Promise.all([source.fetch(), source.fetch(), source.fetch()]);
    expect(server.requests.slice(seen).filter((r) => r.startsWith('GET '))).toEqual([
      'GET /policy.git/info/refs?service=git-upload-pack',
    ]);
  });

  it('fetches new commits and detects force-pushed history', async () => {
    const applied = await source.resolveRef('main');
    await work.git('checkout', '--quiet', 'main');
    work.write({ 'policies/prod/z.yaml': yaml('z') });
    const next = await work.commit('fast-forward');
    await work.push('main');
    await source.fetch();
    expect(await source.resolveRef('main')).toBe(next);
    await source.checkFastForward(applied, next);

    await work.git('reset', '--quiet', '--hard', commits.first!);
    work.write({ 'policies/prod/a.yaml': yaml('a', 3) });
    const rewritten = await work.commit('rewrite');
    await work.git('push', '--quiet', '--force', 'origin', 'main');
    await source.fetch();
    expect(await source.resolveRef('main')).toBe(rewritten);
    const err = await sourceError(source.checkFastForward(next, rewritten));
    expect(err.code).toBe('force-push');
    expect(err.message).toContain(next.slice(0, 12));
  });

  it('a fresh cache of a force-pushed branch knows nothing of the old commit: still a force-push', async () => {
    const fresh = await openSource({
      repo: `${server.url}/policy.git`,
      cacheDir: join(tmp.dir, 'cache-fresh'),
    });
    await fresh.fetch();
    const head = await fresh.resolveRef('main');
    expect((await sourceError(fresh.checkFastForward(commits.second!, head))).code).toBe('force-push');
  });

  it('before the first fetch, a ref lookup says to fetch', async () => {
    const cold = await openSource({
      repo: `${server.url}/policy.git`,
      cacheDir: join(tmp.dir, 'cache-cold'),
    });
    const err = await sourceError(cold.resolveRef('main'));
    expect(err.code).toBe('unknown-ref');
    expect(err.hint).toContain('fetch first');
  });

  it('refuses a cache directory that holds another repository, and changes nothing in it', async () => {
    // A loose ref git itself would call damaged: the repair of our own cache would remove it, not here.
    const odd = join(tmp.dir, 'cache', 'refs', 'heads', 'odd');
    writeFileSync(odd, 'not a ref');
    const head = readFileSync(join(tmp.dir, 'cache', 'HEAD'), 'utf8');
    const err = await sourceError(
      openSource({ repo: `${server.url}/other.git`, cacheDir: join(tmp.dir, 'cache') }),
    );
    expect(err.code).toBe('not-a-repo');
    expect(readFileSync(odd, 'utf8')).toBe('not a ref');
    expect(readFileSync(join(tmp.dir, 'cache', 'HEAD'), 'utf8')).toBe(head);
    unlinkSync(odd);
  });

  it('says when there is no repository at the URL', async () => {
    const missing = await openSource({
      repo: `${server.url}/missing.git`,
      cacheDir: join(tmp.dir, 'cache-404'),
    });
    const err = await sourceError(missing.fetch());
    expect(err.code).toBe('not-a-repo');
    expect(err.message).toContain('missing.git');
  });

  it('explains a remote whose HEAD names a branch that was never pushed', async () => {
    await createBareRepo(join(tmp.dir, 'srv'), 'odd-head', 'trunk');
    const odd = await WorkClone.create(`${server.url}/odd-head.git`, join(tmp.dir, 'odd-work'), 'main');
    await odd.commit('on main');
    await odd.push('main');
    const src = await openSource({
      repo: `${server.url}/odd-head.git`,
      cacheDir: join(tmp.dir, 'cache-odd'),
    });
    const err = await sourceError(src.fetch());
    expect(err.code).toBe('unknown-ref');
    expect(err.hint).toContain('symbolic-ref HEAD');
  });
  it('fetches again after a kill left the HEAD and a branch of the cache empty (a ref rewritten in place)', async () => {
    const cacheDir = join(tmp.dir, 'cache-killed');
    const first = await openSource({ repo: `${server.url}/policy.git`, cacheDir });
    await first.fetch();
    const main = await first.resolveRef('main');
    // What a SIGKILL between truncating and writing a ref file leaves behind.
    writeFileSync(join(cacheDir, 'HEAD'), '');
    writeFileSync(join(cacheDir, 'refs', 'heads', 'main'), '');
    const reopened = await openSource({ repo: `${server.url}/policy.git`, cacheDir });
    await reopened.fetch();
    expect(await reopened.resolveRef('main')).toBe(main);
    expect(await reopened.resolveRef('HEAD')).toBe(main);
  });
});
