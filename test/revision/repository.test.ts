/**
 * Which branch the loop follows in a local working copy (openPolicyRepository): the checked-out one; on a
 * detached HEAD, where new commits are on no branch, the default branch, with a notice saying so. And a plain
 * directory is read only once its files are quiet, so a save in progress is never applied.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  directoryRevision,
  FILE_QUIET_MS,
  openPolicyRepository,
} from '../../reconciler/revision/repository.ts';
import { readWorktree } from '../../reconciler/revision/worktree.ts';

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

describe('a plain directory of policy files', () => {
  const identity = (n: number) =>
    [
      'apiVersion: core.riptides.io/v1alpha1',
      'kind: WorkloadIdentity',
      `metadata: { name: w${n}, namespace: riptides-system }`,
      `spec: { workloadID: app/w${n}, selectors: [{ "process:name": w${n} }] }`,
    ].join('\n');

  it('is read once a save in progress (truncated, then written) is over, not halfway', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'riptides-dir-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'riptides.config.yaml'), 'trustDomain: example.com\n');
    const file = join(dir, 'identities.yaml');
    writeFileSync(file, `${identity(1)}\n`);
    const repo = await openPolicyRepository({ repo: dir, path: '' });
    expect(repo.kind).toBe('directory');
    await new Promise((r) => setTimeout(r, FILE_QUIET_MS + 100));

    // The writer truncates, the pass reads, the writer writes: the pass must see the written file.
    writeFileSync(file, '');
    const reading = repo.update();
    await new Promise((r) => setTimeout(r, FILE_QUIET_MS / 3));
    writeFileSync(file, `${identity(1)}\n---\n${identity(2)}\n`);
    const { revision } = await reading;

    const written = readWorktree(dir, '');
    expect(written.entries.find((e) => e.path === 'identities.yaml')).toBeDefined();
    expect(revision).toBe(directoryRevision(written.entries, written.diagnostics));
    const source = repo.sourceFor(revision)!;
    const entry = (await source.listFiles(revision)).find((e) => e.path === 'identities.yaml')!;
    expect(new TextDecoder().decode(await source.readBlob(entry.oid))).toContain('app/w2');
  });

  it("that was quiet is read at once, whatever the files' dates say", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'riptides-dir-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'riptides.config.yaml'), 'trustDomain: example.com\n');
    writeFileSync(join(dir, 'identities.yaml'), `${identity(1)}\n`);
    // A date far in the future (an archive's, a skewed clock) is not a change that never ends.
    const future = new Date(Date.now() + 86_400_000);
    utimesSync(join(dir, 'identities.yaml'), future, future);
    await new Promise((r) => setTimeout(r, FILE_QUIET_MS + 100));
    const repo = await openPolicyRepository({ repo: dir, path: '' });
    const tree = readWorktree(dir, '');
    expect(tree.lastChangeMs).toBeLessThanOrEqual(Date.now() - FILE_QUIET_MS);
    expect((await repo.update()).revision).toBe(directoryRevision(tree.entries, tree.diagnostics));
  });
});
