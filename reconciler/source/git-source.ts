import * as fs from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import git from 'isomorphic-git';
import { editDistance } from '../common/edit-distance.ts';
import { Redactor } from '../common/redact.ts';
import { BlobCache } from './blob-cache.ts';
import { userCacheDir } from './cache-dir.ts';
import { authorizationHeader, type SourceAuth } from './credentials.ts';
import { CREDENTIAL_ENV_HINT, messageOf, SourceError } from './errors.ts';
import { GuardedHttp } from './http.ts';
import { type ChangedFiles, diffTrees, normalizeSubdir, type TreeEntry, TreeReader } from './tree.ts';

export interface SourceOptions {
  /** https://… / http://… URL, or a local directory (working copy or bare repo, read through its git dir). */
  repo: string;
  /** Where a remote is fetched to (bare, no checkout); default a per-user cache dir (see userCacheDir). */
  cacheDir?: string;
  /** From credentialsFromEnv(); never from argv, never logged, redacted from every error and progress line. */
  auth?: SourceAuth;
  /** PEM CA bundle for a self-hosted HTTPS server; replaces the default roots, as git's http.sslCAInfo does. */
  caFile?: string;
  /** Per network wait (connect, response, each body chunk); default 30 s. */
  timeoutMs?: number;
  /** Cap on the fetched repository (packs already cached + what the server sends); default 512 MiB. */
  maxRepoBytes?: number;
  onProgress?: (msg: string) => void;
}

export interface PolicySource {
  /** The URL without credentials, or the directory. */
  readonly description: string;
  /** Updates the cache from the remote; a no-op for a local repository. */
  fetch(): Promise<void>;
  /** Branch, tag (annotated too), full or abbreviated commit id → commit oid. */
  resolveRef(ref: string): Promise<string>;
  defaultBranch(): Promise<string>;
  mergeBase(a: string, b: string): Promise<string | null>;
  isAncestor(ancestor: string, descendant: string): Promise<boolean>;
  /** Throws SourceError('force-push') unless `newCommit` contains `previousCommit` in its history. */
  checkFastForward(previousCommit: string, newCommit: string): Promise<void>;
  /** All blobs under `subdir`, recursively, sorted by path; paths are relative to the repository root. */
  listFiles(commit: string, subdir?: string): Promise<TreeEntry[]>;
  /** Blobs that differ between two commits under `subdir`; unchanged subtrees are skipped by tree id. */
  changedFiles(base: string, head: string, subdir?: string): Promise<ChangedFiles>;
  readBlob(oid: string): Promise<Uint8Array>;
  stats(): { blobsRead: number; treesRead: number };
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_REPO_BYTES = 512 * 1024 * 1024;
const HEX_OID = /^[0-9a-f]{40}$/;
const SHORT_OID = /^[0-9a-f]{4,39}$/;

export async function openSource(opts: SourceOptions): Promise<PolicySource> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(opts.repo)) return openRemote(opts);
  if (/^[^/\\]+@[^/\\]+:/.test(opts.repo)) {
    throw new SourceError(
      'not-a-repo',
      `${opts.repo}: SSH remotes are not supported`,
      'use the https:// URL of the repository with a token in RIPTIDES_GIT_TOKEN, or a local clone',
    );
  }
  const dir = resolve(opts.repo);
  return new GitPolicySource(await findGitDir(dir), dir, undefined);
}

async function findGitDir(dir: string): Promise<string> {
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
  if (dotGitStat?.isDirectory()) return dotGit;
  if (dotGitStat?.isFile()) {
    // A linked worktree: `.git` names its private git dir, whose `commondir` holds the objects and refs.
    const pointer = /^gitdir:\s*(.+)$/m.exec(await readFile(dotGit, 'utf8'))?.[1]?.trim();
    if (!pointer) throw notARepo('.git is a file without a gitdir: line');
    const privateDir = resolve(dir, pointer);
    const common = await readFile(join(privateDir, 'commondir'), 'utf8').catch(() => undefined);
    return common ? resolve(privateDir, common.trim()) : privateDir;
  }
  const isBare = (
    await Promise.all(['HEAD', 'objects', 'refs'].map((f) => stat(join(dir, f)).catch(() => null)))
  )
    .map((s) => s !== null)
    .every(Boolean);
  if (isBare) return dir;
  throw notARepo('not a git repository (no .git, and not a bare repository)');
}

interface Remote {
  http: GuardedHttp;
  authorization: string | undefined;
  maxRepoBytes: number;
  redactor: Redactor;
}

async function openRemote(opts: SourceOptions): Promise<PolicySource> {
  const redactor = new Redactor();
  redactor.add(opts.auth?.token);
  redactor.add(opts.auth?.password);
  const authorization = authorizationHeader(opts.auth);
  redactor.add(authorization?.slice('Basic '.length));

  let url: URL;
  try {
    url = new URL(opts.repo);
  } catch {
    throw new SourceError(
      'not-a-repo',
      `not a valid URL: ${redactor.redact(opts.repo.replace(/\/\/[^/@]*@/, '//***@'))}`,
      'pass an http(s) URL',
    );
  }
  if (url.password) {
    url.password = '';
    throw new SourceError(
      'auth',
      `${url.href}: credentials in the repository URL are refused (they would end up in shell history and process lists)`,
      CREDENTIAL_ENV_HINT,
    );
  }
  url.username = '';
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new SourceError(
      'not-a-repo',
      `${url.href}: unsupported protocol ${url.protocol}`,
      'use an http(s) URL or a local directory',
    );
  }
  const description = url.href.replace(/\/+$/, '');
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
  if (authorization && url.protocol === 'http:' && !loopback) {
    throw new SourceError(
      'auth',
      `${description}: refusing to send credentials over plain http to a non-loopback host`,
      'use the https:// URL of the repository',
    );
  }
  let ca: Buffer | undefined;
  if (opts.caFile) {
    try {
      ca = await readFile(opts.caFile);
    } catch (err) {
      throw new SourceError(
        'unreachable',
        `cannot read the CA bundle ${opts.caFile}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`,
        'pass the PEM file of the CA that signed the git server certificate (--ca-file)',
      );
    }
  }
  const gitdir = resolve(opts.cacheDir ?? userCacheDir('git', description));
  await git.init({ fs, dir: gitdir, bare: true, defaultBranch: 'main' });
  const existingUrl = await git.getConfig({ fs, gitdir, path: 'remote.origin.url' });
  if (existingUrl && existingUrl !== description) {
    throw new SourceError(
      'not-a-repo',
      `cache directory ${gitdir} holds a clone of ${existingUrl}, not ${description}`,
      'use a separate cacheDir per repository, or remove that directory',
    );
  }
  await git.setConfig({ fs, gitdir, path: 'remote.origin.url', value: description });
  // Mirror the remote's branches onto local branch names, so that a fetched cache resolves refs exactly as a
  // local bare repository does; `+` lets a force-pushed branch move (checkFastForward reports it).
  await git.setConfig({ fs, gitdir, path: 'remote.origin.fetch', value: '+refs/heads/*:refs/heads/*' });
  const remote: Remote = {
    http: new GuardedHttp({ timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, ca, description }),
    authorization,
    maxRepoBytes: opts.maxRepoBytes ?? DEFAULT_MAX_REPO_BYTES,
    redactor,
  };
  return new GitPolicySource(gitdir, description, remote, opts.onProgress);
}

class GitPolicySource implements PolicySource {
  /** isomorphic-git's per-repository memo (pack indexes); without it every read reloads them. */
  readonly #cache = {};
  readonly #trees: TreeReader;
  readonly #commitTrees = new BlobCache<string>(4096);
  #blobsRead = 0;
  #fetching: Promise<void> | undefined;

  constructor(
    readonly gitdir: string,
    readonly description: string,
    readonly remote: Remote | undefined,
    readonly onProgress?: (msg: string) => void,
  ) {
    this.#trees = new TreeReader((oid) => git.readTree({ fs, gitdir, oid, cache: this.#cache }));
  }

  #progress(msg: string): void {
    this.onProgress?.(this.remote ? this.remote.redactor.redact(msg) : msg);
  }

  async fetch(): Promise<void> {
    if (!this.remote) return;
    // A webhook and a poll may ask at once: they share one transfer rather than race on the same refs.
    this.#fetching ??= this.#fetchOnce(this.remote).finally(() => {
      this.#fetching = undefined;
    });
    return this.#fetching;
  }

  async #fetchOnce(remote: Remote): Promise<void> {
    const cached = await packBytes(this.gitdir);
    remote.http.begin(remote.maxRepoBytes, cached);
    const started = Date.now();
    this.#progress(`fetching ${this.description}`);
    const throttle = progressThrottle((msg) => this.#progress(`${this.description}: ${msg}`));
    // isomorphic-git writes the new refs before it has received the pack; if the transfer then fails, the
    // refs would name objects we do not have. Put them back as they were.
    const before = await this.#refs();
    let result: Awaited<ReturnType<typeof git.fetch>>;
    try {
      result = await git.fetch({
        fs,
        http: remote.http,
        gitdir: this.gitdir,
        cache: this.#cache,
        remote: 'origin',
        singleBranch: false,
        tags: true,
        prune: true,
        pruneTags: true,
        // A fresh object each time: isomorphic-git writes into it.
        headers: remote.authorization ? { Authorization: remote.authorization } : {},
        onProgress: (p) => throttle(p.phase, p.loaded, p.total),
      });
    } catch (err) {
      await this.#restoreRefs(before);
      throw this.#networkError(err);
    }
    if (result.defaultBranch) {
      await git.writeRef({
        fs,
        gitdir: this.gitdir,
        ref: 'HEAD',
        value: result.defaultBranch,
        symbolic: true,
        force: true,
      });
    }
    this.#progress(
      `fetched ${this.description}: ${formatBytes(remote.http.received)} received in ${Date.now() - started} ms`,
    );
  }

  async #refs(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const prefix of ['refs/heads', 'refs/tags']) {
      for (const name of await git.listRefs({ fs, gitdir: this.gitdir, filepath: prefix })) {
        const ref = `${prefix}/${name}`;
        out.set(ref, await git.resolveRef({ fs, gitdir: this.gitdir, ref, depth: 1 }));
      }
    }
    return out;
  }

  async #restoreRefs(before: Map<string, string>): Promise<void> {
    const now = await this.#refs();
    for (const [ref, oid] of now) {
      if (before.get(ref) !== oid && !before.has(ref)) await git.deleteRef({ fs, gitdir: this.gitdir, ref });
    }
    for (const [ref, oid] of before) {
      if (now.get(ref) !== oid) await git.writeRef({ fs, gitdir: this.gitdir, ref, value: oid, force: true });
    }
  }

  #networkError(err: unknown): SourceError {
    const remote = this.remote!;
    const guard = remote.http.failure;
    if (guard) return guard;
    if (err instanceof SourceError) return err;
    const e = err as { code?: string; data?: { statusCode?: number; statusMessage?: string } };
    const where = this.description;
    const r = (s: string) => remote.redactor.redact(s);
    if (e.code === 'HttpError') {
      const status = e.data?.statusCode ?? 0;
      if (status === 401 || status === 403) {
        return new SourceError(
          'auth',
          remote.authorization
            ? `${where}: the server refused the credentials (HTTP ${status})`
            : `${where}: the server requires credentials (HTTP ${status}) and none were given`,
          CREDENTIAL_ENV_HINT,
        );
      }
      if (status === 404) {
        return new SourceError(
          'not-a-repo',
          `${where}: no git repository at this URL (HTTP 404)`,
          'check the repository URL; a private repository may also answer 404 without credentials',
        );
      }
      return new SourceError(
        'unreachable',
        `${where}: the server answered HTTP ${status} ${r(e.data?.statusMessage ?? '')}`.trim(),
        'check the git server; retry later if it is overloaded',
      );
    }
    if (e.code === 'NotFoundError' && (err as { data?: { what?: string } }).data?.what === 'HEAD') {
      // isomorphic-git cannot fetch at all when the remote's HEAD names a branch that does not exist.
      return new SourceError(
        'unknown-ref',
        `${where}: the remote's HEAD names a branch that does not exist, so its default branch is unknown`,
        'on the server, point HEAD at an existing branch (git symbolic-ref HEAD refs/heads/main in the bare repository, or the default-branch setting of the hosting service)',
      );
    }
    if (e.code === 'SmartHttpError') {
      return new SourceError(
        'not-a-repo',
        `${where}: the server did not answer as a git smart-HTTP server`,
        'check the repository URL (it usually ends in .git)',
      );
    }
    if (e.code && /CERT|SSL|TLS|SELF_SIGNED|VERIFY|ISSUER/.test(e.code)) {
      return new SourceError(
        'unreachable',
        `${where}: TLS verification of the server failed (${e.code})`,
        'for a self-hosted server with its own CA, pass that CA bundle with caFile (--ca-file)',
      );
    }
    if (e.code && /^E[A-Z]+$/.test(e.code)) {
      return new SourceError(
        'unreachable',
        `${where}: cannot connect (${e.code})`,
        'check the URL and that the git server is running and reachable from here',
      );
    }
    return new SourceError(
      'unreachable',
      `${where}: fetch failed: ${r(messageOf(err))}`,
      'check the URL and the git server',
    );
  }

  async resolveRef(ref: string): Promise<string> {
    const name = ref.trim();
    if (!name || /\.\.|[\x00-\x20~^:?*[\\]|^\/|\/$|\.lock$|@\{/.test(name)) {
      throw new SourceError(
        'unknown-ref',
        `${this.description}: ${JSON.stringify(ref)} is not a valid ref name`,
        'give a branch, a tag, or a commit id (full or abbreviated)',
      );
    }
    if (HEX_OID.test(name)) {
      return this.#peelToCommit(name, ref);
    }
    const viaRef = await git
      .resolveRef({ fs, gitdir: this.gitdir, ref: name })
      .catch((err: { code?: string }) => {
        if (err.code === 'NotFoundError') return undefined;
        throw err;
      });
    if (viaRef) return this.#peelToCommit(viaRef, ref);
    if (SHORT_OID.test(name)) {
      const full = await git
        .expandOid({ fs, gitdir: this.gitdir, oid: name, cache: this.#cache })
        .catch((err) => {
          if ((err as { code?: string }).code === 'AmbiguousError') {
            throw new SourceError(
              'unknown-ref',
              `${this.description}: abbreviated commit id ${name} is ambiguous`,
              'give more hex digits of the commit id',
            );
          }
          return undefined;
        });
      if (full) return this.#peelToCommit(full, ref);
    }
    throw new SourceError(
      'unknown-ref',
      `${this.description}: unknown ref ${JSON.stringify(ref)}`,
      await this.#nearNames(name),
    );
  }

  /** A tag (annotated tags may nest) is followed to the commit it names; trees and blobs are refused. */
  async #peelToCommit(oid: string, asked: string): Promise<string> {
    let current = oid;
    for (let depth = 0; depth < 10; depth++) {
      let obj: Awaited<ReturnType<typeof git.readObject>>;
      try {
        obj = await git.readObject({ fs, gitdir: this.gitdir, oid: current, cache: this.#cache });
      } catch {
        throw new SourceError(
          'unknown-ref',
          `${this.description}: commit ${current} is not in the repository`,
          this.remote ? 'fetch first, or check the commit id' : 'check the commit id',
        );
      }
      if (obj.type === 'commit') return current;
      if (obj.type !== 'tag') break;
      current = (obj.object as { object: string }).object;
    }
    throw new SourceError(
      'unknown-ref',
      `${this.description}: ${JSON.stringify(asked)} does not name a commit`,
      'give a branch, a tag of a commit, or a commit id',
    );
  }

  async #nearNames(name: string): Promise<string> {
    const [branches, tags] = await Promise.all([
      git.listBranches({ fs, gitdir: this.gitdir }),
      git.listTags({ fs, gitdir: this.gitdir }),
    ]);
    const all = [...branches.map((b) => ({ kind: 'branch', b })), ...tags.map((b) => ({ kind: 'tag', b }))];
    if (all.length === 0) {
      return this.remote
        ? 'the repository has no branches yet; fetch first, or push a branch to it'
        : 'the repository has no branches or tags yet';
    }
    const lower = name.toLowerCase();
    const near = all
      .map((n) => ({ ...n, d: editDistance(lower, n.b.toLowerCase()) }))
      .filter((n) => n.d <= Math.max(2, Math.floor(name.length / 3)) || n.b.toLowerCase().includes(lower))
      .sort((x, y) => x.d - y.d || x.b.localeCompare(y.b))
      .slice(0, 5);
    if (near.length) return `did you mean ${near.map((n) => `${n.kind} ${n.b}`).join(', ')}?`;
    const some = (list: string[]) => list.slice(0, 8).join(', ') + (list.length > 8 ? ', …' : '');
    return `branches: ${some(branches) || '(none)'}; tags: ${some(tags) || '(none)'}`;
  }

  async defaultBranch(): Promise<string> {
    const head = (await git.currentBranch({ fs, gitdir: this.gitdir })) ?? undefined;
    const branches = await git.listBranches({ fs, gitdir: this.gitdir });
    const bare = (await git.getConfig({ fs, gitdir: this.gitdir, path: 'core.bare' })) === true;
    // A remote's cache and a bare repository: HEAD is the default branch (it may name a branch never pushed).
    // A working copy's HEAD is whatever is checked out, often the very branch being planned: prefer the
    // branch origin/HEAD names, then main or master.
    let candidates: Array<string | undefined> = [head, 'main', 'master'];
    if (!this.remote && !bare) {
      const originHead = await git
        .resolveRef({ fs, gitdir: this.gitdir, ref: 'refs/remotes/origin/HEAD', depth: 2 })
        .then((ref): string | undefined => ref.replace(/^refs\/remotes\/origin\//, ''))
        .catch((): undefined => undefined);
      // A fresh clone may have no local branch of that name: the remote-tracking one is what it means.
      if (originHead && !branches.includes(originHead)) return `origin/${originHead}`;
      candidates = [originHead, 'main', 'master', head];
    }
    const found = candidates.find((b) => b && branches.includes(b)) ?? branches[0];
    if (!found) {
      throw new SourceError(
        'unknown-ref',
        `${this.description}: the repository has no branches`,
        this.remote ? 'fetch first, or push a branch to the repository' : 'commit to a branch first',
      );
    }
    return found;
  }

  async mergeBase(a: string, b: string): Promise<string | null> {
    const oids = [await this.resolveRef(a), await this.resolveRef(b)];
    const bases = await git.findMergeBase({ fs, gitdir: this.gitdir, oids, cache: this.#cache });
    return (bases[0] as string | undefined) ?? null;
  }

  async isAncestor(ancestor: string, descendant: string): Promise<boolean> {
    const head = await this.resolveRef(descendant);
    const base = HEX_OID.test(ancestor) ? ancestor : await this.resolveRef(ancestor);
    if (base === head) return true;
    try {
      return await git.isDescendent({
        fs,
        gitdir: this.gitdir,
        oid: head,
        ancestor: base,
        depth: -1,
        cache: this.#cache,
      });
    } catch (err) {
      // The history of `head` is complete (no shallow fetches), so an ancestor we do not hold is not one.
      if ((err as { code?: string }).code === 'NotFoundError') return false;
      throw err;
    }
  }

  async checkFastForward(previousCommit: string, newCommit: string): Promise<void> {
    if (await this.isAncestor(previousCommit, newCommit)) return;
    throw new SourceError(
      'force-push',
      `${this.description}: history was rewritten: ${newCommit.slice(0, 12)} does not contain the previously applied commit ${previousCommit.slice(0, 12)}`,
      'the branch was force-pushed or reset; review the new history, then apply that commit explicitly to make it the new baseline',
    );
  }

  async #rootTree(commit: string): Promise<string> {
    // Callers pass the same resolved commit ids again and again: skip re-resolving them.
    const known = HEX_OID.test(commit) ? this.#commitTrees.get(commit) : undefined;
    if (known) return known;
    const oid = await this.resolveRef(commit);
    return this.#commitTrees.getOrLoad(oid, async () => {
      const { commit: c } = await git.readCommit({ fs, gitdir: this.gitdir, oid, cache: this.#cache });
      return c.tree;
    });
  }

  async listFiles(commit: string, subdir?: string): Promise<TreeEntry[]> {
    const sub = this.#subdir(subdir);
    const root = await this.#rootTree(commit);
    const tree = await this.#trees.subtree(root, sub);
    if (tree === null) throw await this.#badPath(root, sub, commit);
    return this.#trees.list(tree, sub);
  }

  async changedFiles(base: string, head: string, subdir?: string): Promise<ChangedFiles> {
    const sub = this.#subdir(subdir);
    const [baseRoot, headRoot] = [await this.#rootTree(base), await this.#rootTree(head)];
    const [baseTree, headTree] = [
      await this.#trees.subtree(baseRoot, sub),
      await this.#trees.subtree(headRoot, sub),
    ];
    // A subdir that exists on one side only is all-added or all-deleted; on neither side it is a typo.
    if (baseTree === null && headTree === null) throw await this.#badPath(headRoot, sub, head);
    return diffTrees(this.#trees, baseTree, headTree, sub);
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

  async readBlob(oid: string): Promise<Uint8Array> {
    this.#blobsRead++;
    const { blob } = await git.readBlob({ fs, gitdir: this.gitdir, oid, cache: this.#cache });
    return blob;
  }

  stats(): { blobsRead: number; treesRead: number } {
    return { blobsRead: this.#blobsRead, treesRead: this.#trees.treesRead };
  }
}

async function packBytes(gitdir: string): Promise<number> {
  const dir = join(gitdir, 'objects', 'pack');
  const names = await readdir(dir).catch(() => [] as string[]);
  const sizes = await Promise.all(names.filter((n) => n.endsWith('.pack')).map((n) => stat(join(dir, n))));
  return sizes.reduce((sum, s) => sum + s.size, 0);
}

/** One line per phase and per 10 % step: enough to show life without flooding a CI log. */
function progressThrottle(
  emit: (msg: string) => void,
): (phase: string, loaded: number, total: number) => void {
  let last = '';
  return (phase, loaded, total) => {
    const step = total > 0 ? Math.floor((loaded / total) * 10) : -1;
    const key = `${phase}:${step}`;
    if (key === last) return;
    last = key;
    emit(total > 0 ? `${phase} ${loaded}/${total} (${step * 10}%)` : `${phase} ${loaded}`);
  };
}

function formatBytes(n: number): string {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
