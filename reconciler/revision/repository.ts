/**
 * The policy repository a reconciler follows, opened once: a remote over smart HTTP(S) (cloned into a cache
 * directory, fetched on each update), a local git repository (working copy, linked worktree or bare: only
 * commits of the tracked branch count, uncommitted edits are invisible), or a plain directory that is not a
 * git repository (its files as they are on disk, for authors iterating without git).
 *
 * `update()` brings the newest state and names the tracked revision: a commit id for git, `dir:<16 hex>` (a
 * digest of every policy file's path and content) for a directory. `sourceFor(revision)` is what a
 * RevisionReader renders; a directory can only render the files it last read.
 */
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import type { PendingDiagnostic } from '../policy/diagnostics.ts';
import {
  openSource,
  type PolicySource,
  SourceError,
  type SourceOptions,
  type TreeEntry,
} from '../source/index.ts';
import { checkedOut, isWorkingCopy, readWorktree, type Worktree } from './worktree.ts';

/** `remote`: an http(s) URL; `git`: a local repository; `directory`: a plain directory of policy files. */
export type RepositoryKind = 'remote' | 'git' | 'directory';

export interface RepositoryOptions extends Omit<SourceOptions, 'repo'> {
  /** An http(s) URL, a local git repository, or a directory. */
  repo: string;
  /** The policy path inside it (a directory is read only below it). */
  path: string;
  /**
   * The tracked branch. Default: a working copy's checked-out branch, else the repository's default branch
   * (a remote's HEAD, a bare repository's HEAD).
   */
  branch?: string;
  /** The per-file cap when reading a directory (the same as rendering uses). */
  maxFileBytes?: number;
}

/** What a RevisionReader renders. */
export type RevisionSource = Pick<PolicySource, 'listFiles' | 'readBlob'>;

export interface TrackedRevision {
  /** A commit id, or `dir:<16 hex>` for a directory. */
  revision: string;
  /** ISO 8601: when this update ran. */
  fetchedAt: string;
}

export interface PolicyRepository {
  readonly kind: RepositoryKind;
  /** The URL without credentials, or the directory. */
  readonly description: string;
  /** The tracked branch; null for a plain directory. */
  readonly branch: string | null;
  /** Something the operator should know about what is followed (a detached checkout); null when nothing. */
  readonly notice: string | null;
  /** The local directory (git or plain), for watches and the ctl editor; null for a remote. */
  readonly dir: string | null;
  /** Refs, history, trees and blobs; null for a plain directory. */
  readonly git: PolicySource | null;
  /** Fetches (remote), reads the branch (git) or re-reads the files (directory); returns the tracked revision. */
  update(): Promise<TrackedRevision>;
  /** What renders `revision`, or null when it cannot be read any more (a directory whose files moved on). */
  sourceFor(revision: string): RevisionSource | null;
  /** Diagnostics found while reading `revision`'s files (a directory's refused files), for the render. */
  readDiagnostics(revision: string): readonly PendingDiagnostic[];
}

const isUrl = (repo: string) => /^[a-z][a-z0-9+.-]*:\/\//i.test(repo);

/**
 * Opens `opts.repo`. Errors are SourceErrors: `not-a-repo` for a path that is neither a directory nor a
 * repository, `unknown-ref` for a tracked branch that does not exist (after the first update, for a remote).
 */
export async function openPolicyRepository(opts: RepositoryOptions): Promise<PolicyRepository> {
  if (isUrl(opts.repo)) {
    const git = await openSource({ ...opts, repo: opts.repo });
    return new GitRepository('remote', git, null, opts.branch ?? null);
  }
  const dir = resolve(opts.repo);
  let git: PolicySource;
  try {
    git = await openSource({ ...opts, repo: dir });
  } catch (err) {
    // Neither a working copy nor a bare repository: a plain directory of policy files, if it is one.
    if (err instanceof SourceError && err.code === 'not-a-repo' && !/no such directory/.test(err.message))
      return new DirectoryRepository(dir, opts.path, opts.maxFileBytes);
    throw err;
  }
  let branch = opts.branch ?? null;
  let notice: string | null = null;
  if (!branch && isWorkingCopy(dir)) {
    const head = checkedOut(dir);
    if (head?.startsWith('refs/heads/')) branch = head.slice('refs/heads/'.length);
    else if (head)
      // Commits made on a detached HEAD are on no branch: say so rather than silently follow another.
      notice = `${dir} is on a detached HEAD (${head.slice(0, 12)}): commits made there are on no branch and are not followed; the repository's default branch is followed instead (check out a branch, or pass --branch)`;
  }
  return new GitRepository('git', git, dir, branch, notice);
}

class GitRepository implements PolicyRepository {
  constructor(
    readonly kind: 'remote' | 'git',
    readonly git: PolicySource,
    readonly dir: string | null,
    private tracked: string | null,
    readonly notice: string | null = null,
  ) {}

  get description(): string {
    return this.git.description;
  }

  get branch(): string | null {
    return this.tracked;
  }

  async update(): Promise<TrackedRevision> {
    const fetchedAt = new Date().toISOString();
    await this.git.fetch();
    this.tracked ??= await this.git.defaultBranch();
    // A branch, not a tag or a commit: the reconciler follows where the branch goes.
    const revision = await this.git.resolveRef(`refs/heads/${this.tracked}`).catch((err: unknown) => {
      if (err instanceof SourceError && err.code === 'unknown-ref')
        throw new SourceError(
          'unknown-ref',
          `${this.description}: branch ${this.tracked} does not exist`,
          err.hint || 'push the branch, or pass --branch with one that exists',
        );
      throw err;
    });
    return { revision, fetchedAt };
  }

  sourceFor(): RevisionSource {
    return this.git;
  }

  readDiagnostics(): readonly PendingDiagnostic[] {
    return [];
  }
}

/** A plain directory's files must be quiet this long (ms) before a pass reads them. */
export const FILE_QUIET_MS = 300;
/** The longest (ms) a read waits for a plain directory's files to be quiet. */
const FILE_SETTLE_MAX_MS = 3_000;

class DirectoryRepository implements PolicyRepository {
  readonly kind = 'directory';
  readonly branch = null;
  readonly notice = null;
  readonly git = null;
  #current: { revision: string; tree: Worktree } | null = null;

  constructor(
    readonly dir: string,
    private readonly path: string,
    private readonly maxFileBytes: number | undefined,
  ) {}

  get description(): string {
    return this.dir;
  }

  /**
   * Re-reads the files once they have been quiet for FILE_QUIET_MS: a script or editor that truncates and
   * then writes (most do) must not have half a save applied. Waits at most FILE_SETTLE_MAX_MS, then takes
   * what it read; a change after that starts another pass through the watch.
   */
  async update(): Promise<TrackedRevision> {
    const fetchedAt = new Date().toISOString();
    const deadline = Date.now() + FILE_SETTLE_MAX_MS;
    let tree = readWorktree(this.dir, this.path, this.maxFileBytes);
    for (;;) {
      const wait = tree.lastChangeMs + FILE_QUIET_MS - Date.now();
      if (wait <= 0 || Date.now() + wait > deadline) break;
      await new Promise((r) => setTimeout(r, wait));
      tree = readWorktree(this.dir, this.path, this.maxFileBytes);
    }
    this.#current = { revision: directoryRevision(tree.entries, tree.diagnostics), tree };
    return { revision: this.#current.revision, fetchedAt };
  }

  sourceFor(revision: string): RevisionSource | null {
    return this.#current?.revision === revision ? this.#current.tree : null;
  }

  readDiagnostics(revision: string): readonly PendingDiagnostic[] {
    return this.#current?.revision === revision ? this.#current.tree.diagnostics : [];
  }
}

/**
 * `dir:` + 16 hex of a SHA-256 over every file's path and blob id, and what the reader refused (a file over the
 * cap, a symlink out): equal exactly when the files read the same.
 */
export function directoryRevision(
  entries: readonly TreeEntry[],
  refused: readonly PendingDiagnostic[] = [],
): string {
  const h = createHash('sha256');
  for (const e of entries) h.update(`${e.path}\u0000${e.oid}\u0000`);
  for (const d of refused) h.update(`\u0001${d.code}\u0000${d.file}\u0000${d.message}`);
  return `dir:${h.digest('hex').slice(0, 16)}`;
}
