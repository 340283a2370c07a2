/**
 * Fetching a remote into its bare cache: one transfer at a time per source, every branch and tag, refs put
 * back as they were when a transfer fails (isomorphic-git writes the new refs before the pack has arrived),
 * and a few progress lines rather than one per percent.
 */
import * as fs from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import git from 'isomorphic-git';
import { writeFileAtomic } from '../common/atomic-file.ts';
import { networkError } from './errors.ts';
import { isBranchRef, type Remote, withCacheLock } from './remote.ts';

/** A pack and its index, as isomorphic-git's fetch writes them into objects/pack. */
const PACK_FILE = /[\\/]objects[\\/]pack[\\/]pack-[0-9a-f]+\.(?:pack|idx)$/;

/**
 * node:fs for isomorphic-git's fetch, except that a pack or its index appears whole, by rename: the fetch writes
 * them in place (create, then write), and other processes sharing the cache read objects without its lock: an
 * index seen empty or cut short makes every object listed after it "not in the repository" (and isomorphic-git
 * keeps that index in its memo).
 */
const packFs = {
  ...fs,
  promises: {
    ...fs.promises,
    writeFile: (
      path: Parameters<typeof fs.promises.writeFile>[0],
      data: string | Uint8Array,
      options?: unknown,
    ) =>
      typeof path === 'string' && PACK_FILE.test(path)
        ? writeFileAtomic(path, data, { mode: 0o644 })
        : fs.promises.writeFile(path, data, options as Parameters<typeof fs.promises.writeFile>[2]),
  },
};

/** A transfer tick's figures, for a progress bar (see SourceOptions.onProgress). */
export interface TransferProgress {
  phase: string;
  loaded: number;
  /** 0 when unknown. */
  total: number;
}

/**
 * Brings the cache up to date with the remote; throws SourceError. `cache` is isomorphic-git's memo.
 * `progress` gets step lines, and transfer ticks (at most one per phase and 10 % step) with their figures.
 */
export async function fetchRemote(
  remote: Remote,
  cache: object,
  progress: (msg: string, transfer?: TransferProgress) => void,
): Promise<void> {
  // The whole transfer: refs are read, written and put back as one change of the cache. A wait for another
  // process's fetch counts toward this one's deadline, so a whole fetch still ends within it.
  // The first fetch counts from the open, which may have waited for the same lock (plan: open, then fetch).
  const askedAt = remote.openedAt ?? Date.now();
  remote.openedAt = undefined;
  return withCacheLock(remote, 'exclusive', () => transfer(remote, cache, progress, askedAt));
}

async function transfer(
  remote: Remote,
  cache: object,
  progress: (msg: string, transfer?: TransferProgress) => void,
  askedAt: number,
): Promise<void> {
  const { gitdir, description } = remote;
  await remote.http.begin(remote.maxRepoBytes, await packBytes(gitdir), askedAt);
  const started = Date.now();
  progress(`fetching ${description}`);
  const throttle = progressThrottle((msg, transfer) => progress(`${description}: ${msg}`, transfer));
  const before = await refs(gitdir);
  let result: Awaited<ReturnType<typeof git.fetch>>;
  try {
    result = await git.fetch({
      fs: packFs,
      http: remote.http,
      gitdir,
      cache,
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
    await restoreRefs(gitdir, before);
    throw networkError(err, description, {
      guard: remote.http.failure,
      redactor: remote.redactor,
      hasCredentials: remote.authorization !== undefined,
    });
  }
  // Replaced whole (isomorphic-git's writeRef truncates, then writes: a kill in between would leave it empty),
  // and only with a branch name: the server chooses it, and it becomes a path under the cache.
  if (result.defaultBranch && isBranchRef(result.defaultBranch))
    await writeFileAtomic(join(gitdir, 'HEAD'), `ref: ${result.defaultBranch}\n`, { mode: 0o600 });
  progress(
    `fetched ${description}: ${formatBytes(remote.http.received)} received in ${Date.now() - started} ms`,
  );
}

async function refs(gitdir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const prefix of ['refs/heads', 'refs/tags']) {
    for (const name of await git.listRefs({ fs, gitdir, filepath: prefix })) {
      const ref = `${prefix}/${name}`;
      out.set(ref, await git.resolveRef({ fs, gitdir, ref, depth: 1 }));
    }
  }
  return out;
}

async function restoreRefs(gitdir: string, before: Map<string, string>): Promise<void> {
  const now = await refs(gitdir);
  for (const [ref, oid] of now) {
    if (before.get(ref) !== oid && !before.has(ref)) await git.deleteRef({ fs, gitdir, ref });
  }
  for (const [ref, oid] of before) {
    if (now.get(ref) !== oid) await git.writeRef({ fs, gitdir, ref, value: oid, force: true });
  }
}

/** Bytes of the packs already in the cache: they count against the repository cap. */
async function packBytes(gitdir: string): Promise<number> {
  const dir = join(gitdir, 'objects', 'pack');
  const names = await readdir(dir).catch(() => [] as string[]);
  const sizes = await Promise.all(names.filter((n) => n.endsWith('.pack')).map((n) => stat(join(dir, n))));
  return sizes.reduce((sum, s) => sum + s.size, 0);
}

/** One line per phase and per 10 % step: enough to show life without flooding a CI log. */
function progressThrottle(
  emit: (msg: string, transfer: TransferProgress) => void,
): (phase: string, loaded: number, total: number) => void {
  let last = '';
  return (phase, loaded, total) => {
    const step = total > 0 ? Math.floor((loaded / total) * 10) : -1;
    const key = `${phase}:${step}`;
    if (key === last) return;
    last = key;
    emit(total > 0 ? `${phase} ${loaded}/${total} (${step * 10}%)` : `${phase} ${loaded}`, {
      phase,
      loaded,
      total,
    });
  };
}

function formatBytes(n: number): string {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
