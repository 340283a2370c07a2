/**
 * `openSource`: the policy repository as commits, trees and blobs. This file opens a repository (a remote,
 * or a local working copy, bare repository or linked worktree) and composes the parts that each do one job:
 * remote.ts (URL, credentials, cache), fetch.ts, refs.ts (refs and suggestions), history.ts, tree.ts,
 * object-size.ts, errors.ts.
 */
import * as fs from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import git from 'isomorphic-git';
import { BlobCache } from './blob-cache.ts';
import {
  BlobTooLargeError,
  isScpLikeRemote,
  OBJECT_FAULT_HINT,
  objectFault,
  SourceError,
  sshUnsupported,
} from './errors.ts';
import { fetchRemote, type TransferProgress } from './fetch.ts';
import * as history from './history.ts';
import { ObjectSizes } from './object-size.ts';
import { HEX_OID, type RepoContext, resolveRef } from './refs.ts';
import { openRemote, type Remote, type RemoteOptions, withCacheLock } from './remote.ts';
import { type ChangedFiles, diffTrees, normalizeSubdir, type TreeEntry, TreeReader } from './tree.ts';

export type { TransferProgress } from './fetch.ts';

/** Where and how to open the repository (see RemoteOptions for a remote's bounds and credentials). */
export interface SourceOptions extends RemoteOptions {
  /**
   * Steps as lines ("fetching …", "fetched …"), and transfer ticks (at most one per phase and 10 % step) with
   * their figures in `transfer`, so a terminal can draw a bar and a CI log can skip them.
   */
  onProgress?: (msg: string, transfer?: TransferProgress) => void;
}

export interface PolicySource {
  /** The URL without credentials, or the directory. */
  readonly description: string;
  /** Updates the cache from the remote; a no-op for a local repository. */
  fetch(): Promise<void>;
  /** Branch, tag (annotated too), full or abbreviated commit id → commit oid. */
  resolveRef(ref: string): Promise<string>;
  defaultBranch(): Promise<string>;
  /**
   * What `head` merges into when no base is given: its merge base with the default branch. Throws
   * SourceError('unknown-ref') saying how to fetch the base when the clone cannot know it (see history.ts).
   */
  defaultBase(headCommit: string, headRef: string): Promise<{ ref: string; branch: string; commit: string }>;
  mergeBase(a: string, b: string): Promise<string | null>;
  isAncestor(ancestor: string, descendant: string): Promise<boolean>;
  /** Throws SourceError('force-push') unless `newCommit` contains `previousCommit` in its history. */
  checkFastForward(previousCommit: string, newCommit: string): Promise<void>;
  /** All blobs under `subdir`, recursively, sorted by path; paths are relative to the repository root. */
  listFiles(commit: string, subdir?: string): Promise<TreeEntry[]>;
  /** Blobs that differ between two commits under `subdir`; unchanged subtrees are skipped by tree id. */
  changedFiles(base: string, head: string, subdir?: string): Promise<ChangedFiles>;
  /**
   * A blob's bytes. With `maxBytes`, its size is read from the object header first and a larger blob is
   * refused with BlobTooLargeError before anything is inflated.
   */
  readBlob(oid: string, opts?: { maxBytes?: number }): Promise<Uint8Array>;
  stats(): { blobsRead: number; treesRead: number };
}

export async function openSource(opts: SourceOptions): Promise<PolicySource> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(opts.repo)) {
    const onWait = opts.onWait ?? opts.onProgress;
    const remote = await openRemote({ ...opts, ...(onWait ? { onWait: (msg) => onWait(msg) } : {}) });
    return new GitPolicySource(remote.gitdir, remote.description, remote, opts.onProgress);
  }
  if (isScpLikeRemote(opts.repo)) throw sshUnsupported(opts.repo.replace(/^[^@]*@/, ''));
  const dir = resolve(opts.repo);
  const { gitdir, worktreeGitdir } = await findGitDir(dir);
  return new GitPolicySource(gitdir, dir, undefined, undefined, worktreeGitdir);
}

/** The repository's git directory, and for a linked worktree also its private one (where its HEAD is). */
async function findGitDir(dir: string): Promise<{ gitdir: string; worktreeGitdir?: string }> {
  const notARepo = (why: string) =>
    new SourceError(
      'not-a-repo',
      `${dir}: ${why}`,
      'pass the root of a git working copy or a bare repository, or an http(s) URL',
    );
  const dirStat = await stat(dir).catch(() => undefined);
  if (!dirStat?.isDirectory()) throw notARepo('no such directory');
  const dotGit = join(dir, '.git');
  const dotGitStat = await stat(dotGit).catch(() => undefined);
  if (dotGitStat?.isDirectory()) return { gitdir: dotGit };
  if (dotGitStat?.isFile()) {
    // A linked worktree: `.git` names its private git dir, whose `commondir` holds the objects and refs.
    const pointer = /^gitdir:\s*(.+)$/m.exec(await readFile(dotGit, 'utf8'))?.[1]?.trim();
    if (!pointer) throw notARepo('.git is a file without a gitdir: line');
    const privateDir = resolve(dir, pointer);
    const common = await readFile(join(privateDir, 'commondir'), 'utf8').catch(() => undefined);
    return common
      ? { gitdir: resolve(privateDir, common.trim()), worktreeGitdir: privateDir }
      : { gitdir: privateDir };
  }
  const isBare = (
    await Promise.all(['HEAD', 'objects', 'refs'].map((f) => stat(join(dir, f)).catch(() => null)))
  )
    .map((s) => s !== null)
    .every(Boolean);
  if (isBare) return { gitdir: dir };
  throw notARepo('not a git repository (no .git, and not a bare repository)');
}

class GitPolicySource implements PolicySource {
  readonly #ctx: RepoContext;
  readonly #trees: TreeReader;
  readonly #commitTrees = new BlobCache<string>(4096);
  readonly #sizes: ObjectSizes;
  #blobsRead = 0;
  #fetching: Promise<void> | undefined;

  constructor(
    readonly gitdir: string,
    readonly description: string,
    readonly remote: Remote | undefined,
    readonly onProgress?: (msg: string, transfer?: TransferProgress) => void,
    worktreeGitdir?: string,
  ) {
    // isomorphic-git's per-repository memo (pack indexes); without it every read reloads them.
    this.#ctx = {
      gitdir,
      description,
      cache: {},
      remote: remote !== undefined,
      ...(worktreeGitdir ? { worktreeGitdir } : {}),
    };
    this.#trees = new TreeReader((oid) => git.readTree({ fs, gitdir, oid, cache: this.#ctx.cache }));
    this.#sizes = new ObjectSizes(gitdir);
  }

  async fetch(): Promise<void> {
    const remote = this.remote;
    if (!remote) return;
    // A webhook and a poll may ask at once: they share one transfer rather than race on the same refs.
    // Both the line and the transfer's phase are server text (a phase is what the server's progress line says).
    this.#fetching ??= fetchRemote(remote, this.#ctx.cache, (msg, transfer) =>
      this.onProgress?.(
        remote.redactor.redact(msg),
        transfer && { ...transfer, phase: remote.redactor.redact(transfer.phase) },
      ),
    ).finally(() => {
      this.#fetching = undefined;
    });
    return this.#fetching;
  }

  /** A remote's refs are read under the cache's shared lock (another process may be fetching into it). */
  #readingRefs<T>(read: () => Promise<T>): Promise<T> {
    return this.remote ? withCacheLock(this.remote, 'shared', read) : read();
  }

  resolveRef(ref: string): Promise<string> {
    return this.#readingRefs(() => resolveRef(this.#ctx, ref));
  }

  defaultBranch(): Promise<string> {
    return this.#readingRefs(() => history.defaultBranch(this.#ctx));
  }

  defaultBase(headCommit: string, headRef: string) {
    return this.#readingRefs(() => history.defaultBase(this.#ctx, headCommit, headRef));
  }

  mergeBase(a: string, b: string): Promise<string | null> {
    return this.#readingRefs(() => history.mergeBase(this.#ctx, a, b));
  }

  isAncestor(ancestor: string, descendant: string): Promise<boolean> {
    return this.#readingRefs(() => history.isAncestor(this.#ctx, ancestor, descendant));
  }

  checkFastForward(previousCommit: string, newCommit: string): Promise<void> {
    return this.#readingRefs(() => history.checkFastForward(this.#ctx, previousCommit, newCommit));
  }

  async #rootTree(commit: string): Promise<string> {
    // Callers pass the same resolved commit ids again and again: skip re-resolving them.
    const known = HEX_OID.test(commit) ? this.#commitTrees.get(commit) : undefined;
    if (known) return known;
    const oid = await this.resolveRef(commit);
    return this.#commitTrees.getOrLoad(oid, async () => {
      const { commit: c } = await git.readCommit({ fs, gitdir: this.gitdir, oid, cache: this.#ctx.cache });
      return c.tree;
    });
  }

  async listFiles(commit: string, subdir?: string): Promise<TreeEntry[]> {
    const sub = this.#subdir(subdir);
    try {
      const root = await this.#rootTree(commit);
      const tree = await this.#trees.subtree(root, sub);
      if (tree === null) throw await this.#badPath(root, sub, commit);
      return await this.#trees.list(tree, sub);
    } catch (err) {
      throw this.#objectError(err, `revision ${commit.slice(0, 12)}`);
    }
  }

  async changedFiles(base: string, head: string, subdir?: string): Promise<ChangedFiles> {
    const sub = this.#subdir(subdir);
    try {
      const [baseRoot, headRoot] = [await this.#rootTree(base), await this.#rootTree(head)];
      const [baseTree, headTree] = [
        await this.#trees.subtree(baseRoot, sub),
        await this.#trees.subtree(headRoot, sub),
      ];
      // A subdir that exists on one side only is all-added or all-deleted; on neither side it is a typo.
      if (baseTree === null && headTree === null) throw await this.#badPath(headRoot, sub, head);
      return await diffTrees(this.#trees, baseTree, headTree, sub);
    } catch (err) {
      throw this.#objectError(err, `revisions ${base.slice(0, 12)}..${head.slice(0, 12)}`);
    }
  }

  /** `err` as a SourceError('bad-object') when it is a malformed object of the revision, else as it is. */
  #objectError(err: unknown, what: string): unknown {
    const fault = objectFault(err);
    if (fault === undefined) return err;
    return new SourceError(
      'bad-object',
      `${this.description}: ${what}: a git object cannot be read: ${fault}`,
      OBJECT_FAULT_HINT,
    );
  }

  #subdir(subdir: string | undefined): string {
    const sub = normalizeSubdir(subdir);
    if (sub === null) {
      throw new SourceError(
        'bad-path',
        `${this.description}: path ${JSON.stringify(subdir)} must be relative to the repository root and stay inside it`,
        'give a directory such as policies or policies/prod (no leading /, no ..)',
      );
    }
    return sub;
  }

  async #badPath(root: string, sub: string, commit: string): Promise<SourceError> {
    const dirs = await this.#trees.directories(root);
    return new SourceError(
      'bad-path',
      `${this.description}: path ${sub} does not exist (or is not a directory) at ${commit}`,
      dirs.length
        ? `top-level directories there: ${dirs.slice(0, 10).join(', ')}${dirs.length > 10 ? ', …' : ''}`
        : 'that commit has no directories; omit the path to read the repository root',
    );
  }

  async readBlob(oid: string, opts: { maxBytes?: number } = {}): Promise<Uint8Array> {
    if (opts.maxBytes !== undefined) {
      const size = await this.#sizes.size(oid);
      if (size !== undefined && size > opts.maxBytes) throw new BlobTooLargeError(oid, size, opts.maxBytes);
    }
    this.#blobsRead++;
    let blob: Uint8Array;
    try {
      ({ blob } = await git.readBlob({ fs, gitdir: this.gitdir, oid, cache: this.#ctx.cache }));
    } catch (err) {
      throw this.#objectError(err, `a file listed in the revision (object ${oid})`);
    }
    // A header this reader could not parse: the object is read, and still never passed on over the cap.
    if (opts.maxBytes !== undefined && blob.byteLength > opts.maxBytes)
      throw new BlobTooLargeError(oid, blob.byteLength, opts.maxBytes);
    return blob;
  }

  stats(): { blobsRead: number; treesRead: number } {
    return { blobsRead: this.#blobsRead, treesRead: this.#trees.treesRead };
  }
}
