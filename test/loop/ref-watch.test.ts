import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type RefWatch, watchLocalRef } from '../../reconciler/loop/ref-watch.ts';
import { createBareRepo, git, WorkClone } from '../support/git-fixtures.ts';
import { tempDir } from '../support/scratch.ts';

/** Commits seen by a watch, with a way to wait for the next one (bounded, so a missed event fails the test). */
function recorder() {
  const seen: Array<string | null> = [];
  const waiters: Array<() => void> = [];
  return {
    seen,
    onCommit: (c: string | null) => {
      seen.push(c);
      for (const w of waiters.splice(0)) w();
    },
    async next(count: number): Promise<void> {
      const deadline = Date.now() + 15_000;
      while (seen.length < count) {
        if (Date.now() > deadline) throw new Error(`no ref change seen (have ${seen.length}, want ${count})`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
  };
}

const watches: RefWatch[] = [];
afterEach(async () => {
  for (const w of watches.splice(0)) await w.close();
});

async function workingCopy(): Promise<WorkClone> {
  const root = tempDir('refwatch');
  const bare = await createBareRepo(root, 'origin');
  const clone = await WorkClone.create(bare, join(root, 'work'));
  clone.write({ 'policies/a.yaml': 'a: 1\n' });
  await clone.commit('first');
  return clone;
}

describe('watchLocalRef', () => {
  it('sees new commits, resets and amends on the tracked branch; not edits, other branches or pack-refs', async () => {
    const clone = await workingCopy();
    const rec = recorder();
    const watch = await watchLocalRef({ repo: clone.dir, branch: 'main', onCommit: rec.onCommit });
    watches.push(watch);
    const first = await clone.git('rev-parse', 'HEAD');
    expect(watch.current()).toBe(first);

    // Uncommitted edits, a commit on another branch and packing the refs move nothing on main.
    clone.write({ 'policies/a.yaml': 'a: 2\n' });
    await clone.git('stash');
    await clone.git('checkout', '--quiet', '-b', 'feature');
    clone.write({ 'policies/b.yaml': 'b: 1\n' });
    await clone.commit('on feature');
    await clone.git('checkout', '--quiet', 'main');
    await clone.git('pack-refs', '--all');

    clone.write({ 'policies/c.yaml': 'c: 1\n' });
    const second = await clone.commit('second');
    await rec.next(1);
    expect(rec.seen).toEqual([second]);

    await clone.git('commit', '--quiet', '--amend', '-m', 'second, amended');
    const amended = await clone.git('rev-parse', 'HEAD');
    await rec.next(2);
    await clone.git('reset', '--quiet', '--hard', first);
    await rec.next(3);
    expect(rec.seen).toEqual([second, amended, first]);
  });

  it('sees a ref that exists only in packed-refs change, and a branch deleted', async () => {
    const clone = await workingCopy();
    const first = await clone.git('rev-parse', 'HEAD');
    clone.write({ 'x.yaml': 'x: 1\n' });
    const second = await clone.commit('second');
    await clone.git('checkout', '--quiet', '--detach');
    await clone.git('pack-refs', '--all');
    const rec = recorder();
    const watch = await watchLocalRef({ repo: clone.dir, branch: 'main', onCommit: rec.onCommit });
    watches.push(watch);
    expect(watch.current()).toBe(second);
    // Rewrite packed-refs by hand, as a tool that does not use git's loose refs would.
    const packed = join(clone.dir, '.git', 'packed-refs');
    const { readFileSync } = await import('node:fs');
    writeFileSync(
      packed,
      readFileSync(packed, 'utf8').replace(`${second} refs/heads/main`, `${first} refs/heads/main`),
    );
    await rec.next(1);
    await clone.git('branch', '-D', 'main');
    await rec.next(2);
    expect(rec.seen).toEqual([first, null]);
  });

  it('follows a bare repository receiving pushes, and a linked worktree', async () => {
    const root = tempDir('refwatch-bare');
    const bare = await createBareRepo(root, 'policies');
    const clone = await WorkClone.create(bare, join(root, 'work'));
    clone.write({ 'a.yaml': 'a: 1\n' });
    await clone.commit('first');
    const bareRec = recorder();
    watches.push(await watchLocalRef({ repo: bare, branch: 'main', onCommit: bareRec.onCommit }));
    await clone.push('HEAD:main');
    await bareRec.next(1);
    expect(bareRec.seen).toEqual([await clone.git('rev-parse', 'HEAD')]);

    const worktree = join(root, 'linked');
    await git(clone.dir, 'worktree', 'add', '--quiet', worktree, '-b', 'side');
    const wtRec = recorder();
    watches.push(await watchLocalRef({ repo: worktree, branch: 'main', onCommit: wtRec.onCommit }));
    clone.write({ 'b.yaml': 'b: 1\n' });
    const next = await clone.commit('second');
    await wtRec.next(1);
    expect(wtRec.seen).toEqual([next]);
  });
});
