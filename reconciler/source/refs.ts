/**
 * Refs and suggestions: a branch, tag (annotated too, peeled to its commit) or full or abbreviated commit id
 * to a commit oid; an unknown name gets the nearest branch and tag names as its hint.
 */
import * as fs from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import git from 'isomorphic-git';
import { editDistance } from '../common/edit-distance.ts';
import { SourceError } from './errors.ts';

/** The repository a source reads: its git dir, how it is shown, and isomorphic-git's per-repository memo. */
export interface RepoContext {
  gitdir: string;
  description: string;
  cache: object;
  /** A remote's cache (fetched), as opposed to a local repository. */
  remote: boolean;
  /**
   * A linked worktree's private git directory (`git worktree add`): its own HEAD lives there, while `gitdir`
   * is the repository's common directory (objects, branches) whose HEAD is the main worktree's.
   */
  worktreeGitdir?: string;
}

/**
 * What HEAD names in this checkout: `refs/heads/…` (symbolic), a commit id (detached), or undefined when the
 * repository has no HEAD. A linked worktree's own HEAD, not the main worktree's.
 */
export async function readHead(ctx: RepoContext): Promise<string | undefined> {
  const text = await readFile(join(ctx.worktreeGitdir ?? ctx.gitdir, 'HEAD'), 'utf8').catch(() => undefined);
  const head = text?.trim();
  if (!head) return undefined;
  return /^ref:\s*(refs\/\S+)$/.exec(head)?.[1] ?? (HEX_OID.test(head) ? head : undefined);
}

export const HEX_OID = /^[0-9a-f]{40}$/;
const SHORT_OID = /^[0-9a-f]{4,39}$/;

/** Most generations `~N` / `^N` suffixes may walk back in all (a typo of `HEAD~10000000` ends, with a reason). */
export const MAX_ANCESTRY = 10_000;

/**
 * The commit a ref names: a branch, a tag (peeled), `HEAD` or `@`, a commit id (full or abbreviated, unique),
 * each optionally followed by git's ancestry suffixes (gitrevisions(7)): `~N` (the Nth first-parent
 * ancestor, `~` = `~1`) and `^N` (the Nth parent, `^` = `^1`, `^0` the commit itself), in any sequence, e.g.
 * `HEAD~1`, `main^2~3`. Throws SourceError `unknown-ref` with a hint.
 */
export async function resolveRef(ctx: RepoContext, ref: string): Promise<string> {
  const ancestry = /^(.+?)((?:[~^]\d*)+)$/.exec(ref.trim());
  if (ancestry) {
    let oid = await resolveRef(ctx, ancestry[1]!);
    let walked = 0;
    for (const [, op, digits] of ancestry[2]!.matchAll(/([~^])(\d*)/g)) {
      const n = digits === '' ? 1 : Number(digits);
      walked += op === '~' ? n : Math.min(n, 1);
      if (walked > MAX_ANCESTRY)
        throw new SourceError(
          'unknown-ref',
          `${ctx.description}: ${JSON.stringify(ref)} walks back more than ${MAX_ANCESTRY} commits`,
          'give the commit id instead',
        );
      if (op === '~') for (let i = 0; i < n; i++) oid = await parentOf(ctx, oid, 1, ref);
      else if (n > 0) oid = await parentOf(ctx, oid, n, ref);
    }
    return oid;
  }
  // `@` alone is git's name for HEAD.
  const name = ref.trim() === '@' ? 'HEAD' : ref.trim();
  if (!name || /\.\.|[\x00-\x20~^:?*[\\]|^\/|\/$|\.lock$|@\{/.test(name)) {
    throw new SourceError(
      'unknown-ref',
      `${ctx.description}: ${JSON.stringify(ref)} is not a valid ref name`,
      'give a branch, a tag, or a commit id (full or abbreviated), optionally with ~N or ^N as git takes them',
    );
  }
  if (HEX_OID.test(name)) return peelToCommit(ctx, name, ref);
  if (ctx.worktreeGitdir && name === 'HEAD') {
    // isomorphic-git knows no worktrees: it would read the common directory's HEAD, the main worktree's.
    const head = await readHead(ctx);
    if (head) return HEX_OID.test(head) ? peelToCommit(ctx, head, ref) : resolveRef(ctx, head);
  }
  const viaRef = await git
    .resolveRef({ fs, gitdir: ctx.gitdir, ref: name })
    .catch((err: { code?: string }) => {
      if (err.code === 'NotFoundError') return undefined;
      throw err;
    });
  if (viaRef) return peelToCommit(ctx, viaRef, ref);
  if (SHORT_OID.test(name)) {
    const full = await git.expandOid({ fs, gitdir: ctx.gitdir, oid: name, cache: ctx.cache }).catch((err) => {
      if ((err as { code?: string }).code === 'AmbiguousError') {
        throw new SourceError(
          'unknown-ref',
          `${ctx.description}: abbreviated commit id ${name} is ambiguous`,
          'give more hex digits of the commit id',
        );
      }
      return undefined;
    });
    if (full) return peelToCommit(ctx, full, ref);
  }
  throw new SourceError(
    'unknown-ref',
    `${ctx.description}: unknown ref ${JSON.stringify(ref)}`,
    await nearNames(ctx, name),
  );
}

/** Parent number `n` (1-based) of commit `oid`, for the ancestry suffixes of `asked`. */
async function parentOf(ctx: RepoContext, oid: string, n: number, asked: string): Promise<string> {
  let parents: string[];
  try {
    ({
      commit: { parent: parents },
    } = await git.readCommit({ fs, gitdir: ctx.gitdir, oid, cache: ctx.cache }));
  } catch {
    throw new SourceError(
      'unknown-ref',
      `${ctx.description}: ${JSON.stringify(asked)} reaches commit ${oid}, which is not in the repository`,
      ctx.remote
        ? 'the history is cut: fetch more of it'
        : 'a shallow clone holds only part of the history: fetch more of it (`git fetch --deepen N`)',
    );
  }
  const parent = parents[n - 1];
  if (!parent)
    throw new SourceError(
      'unknown-ref',
      `${ctx.description}: ${JSON.stringify(asked)}: commit ${oid.slice(0, 12)} has ${parents.length === 0 ? 'no parent' : parents.length === 1 ? 'one parent' : `${parents.length} parents`}, so it has no parent ${n}`,
      'count from a later commit, or give the commit id',
    );
  return parent;
}

/** A tag (annotated tags may nest) is followed to the commit it names; trees and blobs are refused. */
async function peelToCommit(ctx: RepoContext, oid: string, asked: string): Promise<string> {
  let current = oid;
  for (let depth = 0; depth < 10; depth++) {
    let obj: Awaited<ReturnType<typeof git.readObject>>;
    try {
      obj = await git.readObject({ fs, gitdir: ctx.gitdir, oid: current, cache: ctx.cache });
    } catch {
      throw new SourceError(
        'unknown-ref',
        `${ctx.description}: commit ${current} is not in the repository`,
        ctx.remote ? 'fetch first, or check the commit id' : 'check the commit id',
      );
    }
    if (obj.type === 'commit') return current;
    if (obj.type !== 'tag') break;
    current = (obj.object as { object: string }).object;
  }
  throw new SourceError(
    'unknown-ref',
    `${ctx.description}: ${JSON.stringify(asked)} does not name a commit`,
    'give a branch, a tag of a commit, or a commit id',
  );
}

/** The hint for an unknown ref: the closest branch and tag names, or what there is. */
async function nearNames(ctx: RepoContext, name: string): Promise<string> {
  const [branches, tags] = await Promise.all([
    git.listBranches({ fs, gitdir: ctx.gitdir }),
    git.listTags({ fs, gitdir: ctx.gitdir }),
  ]);
  const all = [...branches.map((b) => ({ kind: 'branch', b })), ...tags.map((b) => ({ kind: 'tag', b }))];
  if (all.length === 0) {
    return ctx.remote
      ? 'the repository has no branches yet; fetch first, or push a branch to it'
      : 'the repository has no branches or tags yet';
  }
  const lower = name.toLowerCase();
  const limit = Math.max(2, Math.floor(name.length / 3));
  const near = all
    .map((n) => ({ ...n, d: editDistance(lower, n.b.toLowerCase(), limit) }))
    .filter((n) => n.d <= limit || n.b.toLowerCase().includes(lower))
    .sort((x, y) => x.d - y.d || x.b.localeCompare(y.b))
    .slice(0, 5);
  if (near.length) return `did you mean ${near.map((n) => `${n.kind} ${n.b}`).join(', ')}?`;
  const some = (list: string[]) => list.slice(0, 8).join(', ') + (list.length > 8 ? ', …' : '');
  return `branches: ${some(branches) || '(none)'}; tags: ${some(tags) || '(none)'}`;
}
