/**
 * Which branch the loop follows in a local working copy (openPolicyRepository): the checked-out one; on a
 * detached HEAD, where new commits are on no branch, the default branch, with a notice saying so.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openPolicyRepository } from '../../reconciler/revision/repository.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function workingCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'riptides-repo-'));
  dirs.push(dir);
  const git = (...args: string[]) =>
    execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], { cwd: dir });
  git('init', '-q', '-b', 'main');
  writeFileSync(join(dir, 'riptides.config.yaml'), 'trustDomain: example.com\n');
  git('add', '.');
  git('commit', '-q', '-m', 'first');
  git('checkout', '-q', '-b', 'feature');
  return dir;
}

describe('the branch a working copy is followed on', () => {
  it('is the checked-out branch, with nothing to say', async () => {
    const repo = await openPolicyRepository({ repo: workingCopy(), path: '' });
    expect(repo.branch).toBe('feature');
    expect(repo.notice).toBeNull();
  });

  it('on a detached HEAD is the default branch, and the notice says why commits there are not followed', async () => {
    const dir = workingCopy();
    execFileSync('git', ['checkout', '-q', '--detach'], { cwd: dir });
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: dir }).toString().trim();
    const repo = await openPolicyRepository({ repo: dir, path: '' });
    expect(repo.notice).toBe(
      `${dir} is on a detached HEAD (${head.slice(0, 12)}): commits made there are on no branch and are not followed; the repository's default branch is followed instead (check out a branch, or pass --branch)`,
    );
    await repo.update();
    expect(repo.branch).toBe('main');
  });
});
