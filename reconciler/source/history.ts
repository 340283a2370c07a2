/**
 * History: the default branch, merge bases, ancestry, fast-forward checks, and the base a change merges into
 * when none is given, refusing to guess when the clone cannot know it (single-branch and shallow clones).
 */
import * as fs from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import git from 'isomorphic-git';
import { SourceError } from './errors.ts';
import { HEX_OID, type RepoContext, readHead, resolveRef } from './refs.ts';

export async function defaultBranch(ctx: RepoContext): Promise<string> {
  const found = (await defaultBranchCandidates(ctx)).find((c) => c.exists);
  if (!found) {
    throw new SourceError(
      'unknown-ref',
      `${ctx.description}: the repository has no branches`,
      ctx.remote ? 'fetch first, or push a branch to the repository' : 'commit to a branch first',
    );
  }
  return found.name;
}

interface Candidate {
  name: string;
  /** Named by the repository itself (a bare repository's or a remote cache's HEAD, origin/HEAD), not guessed. */
  declared: boolean;
  exists: boolean;
}

/**
 * Where the default branch may be, in order. A remote's cache and a bare repository: HEAD is the default
 * branch. A working copy's HEAD is whatever is checked out, often the very branch being planned: the branch
 * origin/HEAD names comes first, then main and master (local or remote-tracking), then the checked-out one.
 */
async function defaultBranchCandidates(ctx: RepoContext): Promise<Candidate[]> {
  const { gitdir } = ctx;
  // This checkout's branch: a linked worktree's own HEAD, which isomorphic-git would not read.
  const checkedOut = await readHead(ctx);
  const head = checkedOut?.startsWith('refs/heads/') ? checkedOut.slice('refs/heads/'.length) : undefined;
  const branches = new Set(await git.listBranches({ fs, gitdir }));
  const tracking = new Set(
    (await git.listBranches({ fs, gitdir, remote: 'origin' }))
      .filter((b) => b !== 'HEAD')
      .map((b) => `origin/${b}`),
  );
  const bare = (await git.getConfig({ fs, gitdir, path: 'core.bare' })) === true;
  const has = (name: string) => branches.has(name) || tracking.has(name);
  const out: Candidate[] = [];
  const add = (name: string | undefined, declared: boolean) => {
    if (name && !out.some((c) => c.name === name)) out.push({ name, declared, exists: has(name) });
  };
  if (ctx.remote || bare) {
    add(head, true);
    add('main', false);
    add('master', false);
  } else {
    const originHead = await git
      .resolveRef({ fs, gitdir, ref: 'refs/remotes/origin/HEAD', depth: 2 })
      .then((ref): string | undefined => ref.replace(/^refs\/remotes\/origin\//, ''))
      .catch((): undefined => undefined);
    // A fresh clone may have no local branch of that name: the remote-tracking one is what it means.
    if (originHead) add(branches.has(originHead) ? originHead : `origin/${originHead}`, true);
    for (const name of ['main', 'master', 'origin/main', 'origin/master']) add(name, false);
    add(head, false);
  }
  for (const b of [...branches].sort()) add(b, false);
  return out;
}

/**
 * The base a change on `head` merges into when no base is given: its merge base with the default branch.
 * A guessed default branch that is `head` itself is never used: a single-branch or shallow clone
 * (`git clone --depth 1 --branch feature`, CI checkouts) holds only the branch being planned, and comparing
 * it with itself would report "no changes" for a real change. When the base cannot be found, or the history
 * to it is not in the clone, this throws SourceError('unknown-ref') saying how to fetch it.
 */
export async function defaultBase(
  ctx: RepoContext,
  headCommit: string,
  headRef: string,
): Promise<{ ref: string; branch: string; commit: string }> {
  const candidates = (await defaultBranchCandidates(ctx)).filter((c) => c.exists);
  const asked = headRef.replace(/^refs\/heads\//, '');
  let chosen: Candidate | undefined;
  for (const c of candidates) {
    if (c.declared) {
      chosen = c;
      break;
    }
    if (c.name === asked || c.name === `origin/${asked}`) continue;
    if ((await resolveRef(ctx, c.name)) === headCommit) continue;
    chosen = c;
    break;
  }
  const shallow = await isShallow(ctx);
  const fetchHint = (branch: string) =>
    `fetch the branch it merges into, e.g. \`git fetch${shallow ? ' --unshallow' : ''} origin ${branch}:refs/remotes/origin/${branch}\` ` +
    '(in GitHub Actions: actions/checkout with fetch-depth: 0), or pass --base REF';
  if (!chosen) {
    const have = [
      ...(await git.listBranches({ fs, gitdir: ctx.gitdir })),
      ...(await git.listBranches({ fs, gitdir: ctx.gitdir, remote: 'origin' }))
        .filter((b) => b !== 'HEAD')
        .map((b) => `origin/${b}`),
    ];
    throw new SourceError(
      'unknown-ref',
      `${ctx.description}: cannot tell which branch ${headRef} merges into: this ${shallow ? 'shallow ' : ''}clone holds ${have.length ? `only ${have.join(', ')}` : 'no branch'} (a single-branch or shallow clone, as \`git clone --depth 1 --branch\` and CI checkouts make), and comparing ${headRef} with itself would show no changes`,
      fetchHint('main'),
    );
  }
  const branchCommit = await resolveRef(ctx, chosen.name);
  let base: string | undefined;
  try {
    base = (
      await git.findMergeBase({ fs, gitdir: ctx.gitdir, oids: [headCommit, branchCommit], cache: ctx.cache })
    )[0] as string | undefined;
  } catch (err) {
    if ((err as { code?: string }).code !== 'NotFoundError') throw err;
  }
  if (!base) {
    throw new SourceError(
      'unknown-ref',
      shallow
        ? `${ctx.description}: the history of this shallow clone ends before ${headRef} and ${chosen.name} meet, so their merge base is unknown`
        : `${ctx.description}: ${headRef} shares no history with ${chosen.name}`,
      shallow ? fetchHint(chosen.name.replace(/^origin\//, '')) : 'pass --base REF',
    );
  }
  return { ref: `merge-base(${chosen.name})`, branch: chosen.name, commit: base };
}

async function isShallow(ctx: RepoContext): Promise<boolean> {
  return (await stat(join(ctx.gitdir, 'shallow')).catch(() => undefined))?.isFile() === true;
}

export async function mergeBase(ctx: RepoContext, a: string, b: string): Promise<string | null> {
  const oids = [await resolveRef(ctx, a), await resolveRef(ctx, b)];
  const bases = await git.findMergeBase({ fs, gitdir: ctx.gitdir, oids, cache: ctx.cache });
  return (bases[0] as string | undefined) ?? null;
}

export async function isAncestor(ctx: RepoContext, ancestor: string, descendant: string): Promise<boolean> {
  const head = await resolveRef(ctx, descendant);
  const base = HEX_OID.test(ancestor) ? ancestor : await resolveRef(ctx, ancestor);
  if (base === head) return true;
  try {
    return await git.isDescendent({
      fs,
      gitdir: ctx.gitdir,
      oid: head,
      ancestor: base,
      depth: -1,
      cache: ctx.cache,
    });
  } catch (err) {
    // A remote's cache holds whole histories (no shallow fetches), so an ancestor we do not hold is not one.
    if ((err as { code?: string }).code === 'NotFoundError') return false;
    throw err;
  }
}

export async function checkFastForward(
  ctx: RepoContext,
  previousCommit: string,
  newCommit: string,
): Promise<void> {
  if (await isAncestor(ctx, previousCommit, newCommit)) return;
  throw new SourceError(
    'force-push',
    `${ctx.description}: history was rewritten: ${newCommit.slice(0, 12)} does not contain the previously applied commit ${previousCommit.slice(0, 12)}`,
    'the branch was force-pushed or reset; review the new history, then apply that commit explicitly to make it the new baseline',
  );
}
