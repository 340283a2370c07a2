import { chmodSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSource } from '../../reconciler/source/index.ts';
import { createBareRepo, git, WorkClone } from '../support/git-fixtures.ts';
import { decode, scratch, sourceError } from './helpers.ts';

describe('git source on a local repository, no server', () => {
  const tmp = scratch('git-local');
  let work: WorkClone;
  let bare: string;
  let first: string;
  let second: string;

  beforeAll(async () => {
    bare = await createBareRepo(tmp.dir, 'policy');
    work = await WorkClone.create(bare, join(tmp.dir, 'work'));
    work.write({
      'policies/run.sh': '#!/bin/sh\n',
      'policies/svc.yaml': 'kind: Service\n',
      'policies/thing': 'a file that becomes a directory\n',
    });
    chmodSync(join(work.dir, 'policies/run.sh'), 0o644);
    symlinkSync('svc.yaml', join(work.dir, 'policies/link.yaml'));
    first = await work.commit('first');
    chmodSync(join(work.dir, 'policies/run.sh'), 0o755);
    work.write({ 'policies/thing': null, 'policies/thing/inner.yaml': 'kind: Service\n' });
    second = await work.commit('mode change and file-to-directory');
    await work.push('main');
    // Uncommitted work is not part of any revision: the source reads commits only.
    work.write({ 'policies/uncommitted.yaml': 'kind: Service\n' });
  });
  afterAll(() => tmp.cleanup());

  it('reads a working copy through its .git directory', async () => {
    const src = await openSource({ repo: work.dir });
    expect(src.description).toBe(work.dir);
    await src.fetch(); // a no-op: nothing to fetch from
    expect(await src.resolveRef('main')).toBe(second);
    expect(await src.resolveRef('HEAD')).toBe(second);
    expect(await src.defaultBranch()).toBe('main');
    const files = await src.listFiles('main', 'policies');
    expect(files.map((f) => [f.path, f.mode])).toEqual([
      ['policies/link.yaml', '120000'],
      ['policies/run.sh', '100755'],
      ['policies/svc.yaml', '100644'],
      ['policies/thing/inner.yaml', '100644'],
    ]);
    expect(decode(await src.readBlob(files[0]!.oid))).toBe('svc.yaml');
  });

  it('reports a mode-only change as modified and a file replaced by a directory as deleted + added', async () => {
    const src = await openSource({ repo: work.dir });
    const changes = await src.changedFiles(first, second, 'policies');
    expect(changes.modified.map((f) => [f.path, f.mode])).toEqual([['policies/run.sh', '100755']]);
    expect(changes.deleted.map((f) => f.path)).toEqual(['policies/thing']);
    expect(changes.added.map((f) => f.path)).toEqual(['policies/thing/inner.yaml']);
  });

  it("takes git's ancestry suffixes (HEAD~1, main^, @~0^0) as git resolves them, and says why one goes too far", async () => {
    const src = await openSource({ repo: work.dir });
    for (const ref of ['HEAD~1', 'main^', 'HEAD~', '@~1', 'main^1', `${second}~1`, `${second.slice(0, 10)}^`])
      expect([ref, await src.resolveRef(ref)]).toEqual([ref, first]);
    expect(await src.resolveRef('HEAD~0')).toBe(second);
    expect(await src.resolveRef('main^0')).toBe(second);
    // As git itself answers.
    expect(await src.resolveRef('HEAD~1')).toBe((await work.git('rev-parse', 'HEAD~1')).trim());
    const tooFar = await sourceError(src.resolveRef('HEAD~2'));
    expect(tooFar.code).toBe('unknown-ref');
    expect(tooFar.message).toBe(
      `${work.dir}: "HEAD~2": commit ${first.slice(0, 12)} has no parent, so it has no parent 1`,
    );
    const second2 = await sourceError(src.resolveRef('HEAD^2'));
    expect(second2.message).toContain('has one parent, so it has no parent 2');
    const bounded = await sourceError(src.resolveRef('HEAD~10001'));
    expect(bounded.message).toContain('walks back more than 10000 commits');
  });

  it('reads a bare repository directly', async () => {
    const src = await openSource({ repo: bare });
    expect(await src.resolveRef('main')).toBe(second);
    expect(await src.defaultBranch()).toBe('main');
    expect((await src.listFiles(first)).length).toBe(4);
  });

  it('reads a linked worktree through its commondir', async () => {
    const linked = join(tmp.dir, 'linked');
    await work.git('worktree', 'add', '--quiet', '-b', 'side', linked, first);
    const src = await openSource({ repo: linked });
    expect(await src.resolveRef('side')).toBe(first);
    expect(await src.resolveRef('main')).toBe(second);
  });

  it('falls back to main for the default branch when HEAD is detached', async () => {
    const detached = await WorkClone.create(bare, join(tmp.dir, 'detached'));
    await detached.git('checkout', '--quiet', '--detach', first);
    const src = await openSource({ repo: detached.dir });
    expect(await src.defaultBranch()).toBe('main');
    expect(await src.resolveRef('HEAD')).toBe(first);
  });

  it("takes a working copy's default branch from origin/HEAD, not from the branch checked out", async () => {
    const dir = join(tmp.dir, 'feature-clone');
    await work.git('clone', '--quiet', '--branch', 'main', bare, dir);
    const clone = await openSource({ repo: dir });
    await git(dir, 'checkout', '--quiet', '-b', 'feature');
    await git(dir, 'branch', '--quiet', '-D', 'main');
    expect(await clone.defaultBranch()).toBe('origin/main');
    expect(await clone.resolveRef(await clone.defaultBranch())).toBe(second);
  });

  it('says when a directory is not a repository', async () => {
    const plain = join(tmp.dir, 'plain');
    mkdirSync(plain);
    const err = await sourceError(openSource({ repo: plain }));
    expect(err.code).toBe('not-a-repo');
    expect(err.message).toContain(plain);
    expect((await sourceError(openSource({ repo: join(tmp.dir, 'absent') }))).code).toBe('not-a-repo');
    expect((await sourceError(openSource({ repo: 'git@github.com:org/repo.git' }))).code).toBe('not-a-repo');
    expect((await sourceError(openSource({ repo: 'ftp://example.invalid/repo.git' }))).code).toBe(
      'not-a-repo',
    );
  });

  it('reports an empty repository as having no branches', async () => {
    const empty = await createBareRepo(tmp.dir, 'empty');
    const src = await openSource({ repo: empty });
    expect((await sourceError(src.defaultBranch())).code).toBe('unknown-ref');
    const err = await sourceError(src.resolveRef('main'));
    expect(err.hint).toContain('no branches');
  });
});
