/**
 * A remote repository: its URL checked (no credentials in it, http(s) only, no credentials over plain http
 * to another host), the credentials and the redactor that hides them, the guarded HTTP client, and the
 * bare cache it is fetched into (created 0700: it holds the repository's objects).
 */
import * as fs from 'node:fs';
import { chmod, readdir, readFile, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import git from 'isomorphic-git';
import { isLoopbackHost } from '../../kernel-module/loopback.ts';
import { makeDirs, TEMP_FILE, writeFileAtomic } from '../common/atomic-file.ts';
import { LockBusyError, withFileLock } from '../common/file-lock.ts';
import { displayUrl, Redactor } from '../common/redact.ts';
import { userCacheDir } from './cache-dir.ts';
import { authorizationHeader, type SourceAuth } from './credentials.ts';
import { CREDENTIAL_ENV_HINT, messageOf, SourceError, sshUnsupported } from './errors.ts';
import { GuardedHttp } from './http.ts';

export interface RemoteOptions {
  /** https://… / http://… URL, or a local directory (working copy or bare repo, read through its git dir). */
  repo: string;
  /** Where a remote is fetched to (bare, no checkout, mode 0700); default a per-user cache dir (see userCacheDir). */
  cacheDir?: string;
  /** From credentialsFromEnv(); never from argv, never logged, redacted from every error and progress line. */
  auth?: SourceAuth;
  /** PEM CA bundle for a self-hosted HTTPS server; replaces the default roots, as git's http.sslCAInfo does. */
  caFile?: string;
  /** Longest network wait (connect and headers, each body chunk), and the window of the minimum rate; default 30 s. */
  timeoutMs?: number;
  /** A transfer slower than this over any timeoutMs window is cut off; default 1024 bytes/s. */
  minBytesPerSecond?: number;
  /** Longest a whole fetch may take; default 10 min. */
  deadlineMs?: number;
  /** Cap on the fetched repository (packs already cached + what the server sends); default 512 MiB. */
  maxRepoBytes?: number;
  /** Told once when another process holds the cache and this one waits for it. */
  onWait?: (msg: string) => void;
}

export interface Remote {
  /** The URL as shown: no credentials, no trailing slash. */
  description: string;
  gitdir: string;
  http: GuardedHttp;
  authorization: string | undefined;
  maxRepoBytes: number;
  redactor: Redactor;
  /**
   * When the first fetch was asked for (epoch ms): the open, whose wait for the cache's lock counts toward that
   * fetch's deadline. Cleared by the first fetch.
   */
  openedAt: number | undefined;
  /** Longest a lock on the cache is waited for, milliseconds: another process's whole fetch (deadlineMs). */
  lockWaitMs: number;
  onWait: ((msg: string) => void) | undefined;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
/** git's http.lowSpeedLimit as commonly set: 1 KiB/s over each timeout window. */
export const DEFAULT_MIN_BYTES_PER_SECOND = 1024;
export const DEFAULT_DEADLINE_MS = 10 * 60_000;
export const DEFAULT_MAX_REPO_BYTES = 512 * 1024 * 1024;

/** Checks the URL and credentials, prepares the cache; no network yet. */
export async function openRemote(opts: RemoteOptions): Promise<Remote> {
  const redactor = new Redactor();
  redactor.add(opts.auth?.token);
  redactor.add(opts.auth?.password);
  const authorization = authorizationHeader(opts.auth);
  redactor.add(authorization?.slice('Basic '.length));

  let url: URL;
  try {
    url = new URL(opts.repo);
  } catch {
    throw new SourceError('not-a-repo', `not a valid URL: ${displayUrl(opts.repo)}`, 'pass an http(s) URL');
  }
  // Before the credentials check: the `git@` of an SSH URL is a user name, and SSH is the problem.
  if (['ssh:', 'git+ssh:', 'ssh+git:'].includes(url.protocol))
    throw sshUnsupported(`${url.host}${url.pathname}`);
  if (url.username || url.password) {
    // A token is often given as the user name (https://<TOKEN>:x-oauth-basic@host/…): show neither part.
    throw new SourceError(
      'auth',
      `${displayUrl(url)}: credentials in the repository URL are refused (they would end up in shell history, process lists and CI logs); nothing from them was used or shown`,
      `remove them from the URL and ${CREDENTIAL_ENV_HINT}`,
    );
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new SourceError(
      'not-a-repo',
      `${displayUrl(url)}: unsupported protocol ${url.protocol}`,
      'use an http(s) URL or a local directory',
    );
  }
  const description = displayUrl(url).replace(/\/+$/, '');
  if (authorization && url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
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
  await privateDir(gitdir);
  const deadlineMs = opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
  const openedAt = Date.now();
  const lock = { gitdir, description, lockWaitMs: deadlineMs, onWait: opts.onWait };
  await withCacheLock(lock, 'exclusive', () => prepareCache(gitdir, description));
  return {
    description,
    gitdir,
    http: new GuardedHttp({
      timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      minBytesPerSecond: opts.minBytesPerSecond ?? DEFAULT_MIN_BYTES_PER_SECOND,
      deadlineMs,
      ...(ca ? { ca } : {}),
      description,
      spoolDir: gitdir,
    }),
    authorization,
    maxRepoBytes: opts.maxRepoBytes ?? DEFAULT_MAX_REPO_BYTES,
    redactor,
    openedAt,
    lockWaitMs: deadlineMs,
    onWait: opts.onWait,
  };
}

/** The lock file in a remote's cache (git ignores files it does not know in a git directory). */
const CACHE_LOCK = 'riptides.lock';

/**
 * Runs `fn` holding the cache's lock: `exclusive` to change it (prepare, fetch), `shared` to read its refs.
 * Processes sharing a cache (`plan` runs in parallel with one --cache-dir) would otherwise interleave
 * isomorphic-git's ref writes, which truncate and then write: a reader sees a ref empty (an unknown branch),
 * a fetch restores refs another one just wrote. Objects need no lock: they are only ever added, by rename.
 * Throws SourceError `busy` when the lock is still held after `lockWaitMs`.
 */
export async function withCacheLock<T>(
  cache: Pick<Remote, 'gitdir' | 'description' | 'lockWaitMs' | 'onWait'>,
  mode: 'exclusive' | 'shared',
  fn: () => Promise<T>,
): Promise<T> {
  const who = (holder: number | null) => `another process${holder ? ` (pid ${holder})` : ''}`;
  try {
    return await withFileLock(
      join(cache.gitdir, CACHE_LOCK),
      {
        shared: mode === 'shared',
        waitMs: cache.lockWaitMs,
        onWait: (holder) =>
          cache.onWait?.(
            `${cache.description}: waiting for ${who(holder)} using the git cache ${cache.gitdir}`,
          ),
        busyMessage: (holder) =>
          `${cache.description}: the git cache ${cache.gitdir} is still in use by ${who(holder)} after ${Math.round(cache.lockWaitMs / 1000)} s`,
      },
      fn,
    );
  } catch (err) {
    if (err instanceof LockBusyError)
      throw new SourceError(
        'busy',
        err.message,
        'wait for the other riptides-cli process, or give this run its own --cache-dir',
      );
    throw err;
  }
}

/** Creates the bare cache, or checks that an existing one is this repository's and repairs its refs. */
async function prepareCache(gitdir: string, description: string): Promise<void> {
  await git.init({ fs, dir: gitdir, bare: true, defaultBranch: 'main' });
  const existingUrl = await git.getConfig({ fs, gitdir, path: 'remote.origin.url' });
  if (existingUrl && existingUrl !== description) {
    throw new SourceError(
      'not-a-repo',
      `cache directory ${gitdir} holds a clone of ${displayUrl(String(existingUrl))}, not ${description}`,
      'use a separate cacheDir per repository, or remove that directory',
    );
  }
  // Only in a cache that is ours: another repository's directory is refused above, untouched.
  await repairRefs(gitdir);
  await removeTempPacks(gitdir);
  await git.setConfig({ fs, gitdir, path: 'remote.origin.url', value: description });
  // Mirror the remote's branches onto local branch names, so that a fetched cache resolves refs exactly as a
  // local bare repository does; `+` lets a force-pushed branch move (checkFastForward reports it).
  await git.setConfig({ fs, gitdir, path: 'remote.origin.fetch', value: '+refs/heads/*:refs/heads/*' });
}

/**
 * Packs are published by rename (fetch.ts): a fetch killed between write and rename leaves a temporary file in
 * objects/pack that nothing reads and nothing else removes. Called with the cache's exclusive lock held, so no
 * fetch of another process is writing one.
 */
async function removeTempPacks(gitdir: string): Promise<void> {
  const dir = join(gitdir, 'objects', 'pack');
  for (const name of await readdir(dir).catch(() => []))
    if (TEMP_FILE.test(name)) await unlink(join(dir, name)).catch(() => {});
}

/**
 * The cache holds the repository's objects (every file of every fetched revision) and packs being received:
 * it is created 0700, and an existing one is tightened to 0700, like the parse cache.
 */
async function privateDir(dir: string): Promise<void> {
  try {
    await makeDirs(dir, 0o700);
    await chmod(dir, 0o700);
  } catch (err) {
    throw new SourceError(
      'not-a-repo',
      `cannot use ${dir} as the git cache: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`,
      'pass a --cache-dir of your own (it is made private to you: mode 0700)',
    );
  }
}

const REF_TEXT = /^(?:ref: refs\/\S+|[0-9a-f]{40}|[0-9a-f]{64})\n?$/;

/**
 * isomorphic-git rewrites a ref by truncating its file, then writing it: a process killed in between (SIGKILL
 * during a fetch) leaves it empty, and every later fetch then fails (HEAD unreadable reads as "the remote's HEAD
 * names no branch"). HEAD gets its initial value back (the next fetch sets the remote's default branch); a
 * damaged loose branch or tag is removed (the next fetch brings it back from the remote).
 */
export async function repairRefs(gitdir: string): Promise<void> {
  const head = join(gitdir, 'HEAD');
  if (!REF_TEXT.test(await readFile(head, 'utf8').catch(() => '')))
    await writeFileAtomic(head, 'ref: refs/heads/main\n', { mode: 0o600 });
  for (const dir of ['refs/heads', 'refs/tags']) {
    const entries = await readdir(join(gitdir, dir), { recursive: true, withFileTypes: true }).catch(
      () => [],
    );
    for (const e of entries) {
      if (!e.isFile()) continue;
      const path = join(e.parentPath, e.name);
      if (!REF_TEXT.test(await readFile(path, 'utf8').catch(() => ''))) await unlink(path).catch(() => {});
    }
  }
}

/**
 * A branch name a remote's HEAD may point the cache at (git check-ref-format's rules, under refs/heads/): no
 * `..`, `//`, `@{`, control characters, spaces or `~^:?*[\`, no component starting with `.`, no trailing `/`,
 * `.` or `.lock`. The value comes from the server and becomes a path under the cache.
 */
export function isBranchRef(ref: string): boolean {
  if (!ref.startsWith('refs/heads/') || ref.length === 'refs/heads/'.length) return false;
  if (/[\x00-\x20\x7f~^:?*[\\]|\.\.|\/\/|@\{|\/\.|\/$|\.$|\.lock$/.test(ref)) return false;
  return true;
}
