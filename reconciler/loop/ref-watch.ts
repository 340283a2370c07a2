/**
 * Watches the tracked branch of a LOCAL repository (working copy, linked worktree or bare repository) and
 * reports each new commit it points to, for authors iterating on a laptop: a commit, an amend, a reset, a
 * `git pull` or `git fetch` into a bare mirror all move the ref.
 *
 * It watches the ref, not the working files: the loose ref file (`refs/heads/<branch>`), `packed-refs` (where
 * `git pack-refs` and `git gc` move refs), `HEAD`, and the reflogs (`logs/HEAD`, `logs/refs/heads/<branch>`),
 * through chokidar (inotify on Linux). On any event it re-reads the branch's commit (isomorphic-git, which
 * reads loose and packed refs as git does) and reports it only when it changed. Objects, the index and the
 * work tree are never traversed: the watch costs a few inotify watches whatever the repository's size.
 */
import * as fs from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { type FSWatcher, watch } from 'chokidar';
import git from 'isomorphic-git';

export interface RefWatchOptions {
  /** A working copy, a linked worktree or a bare repository. */
  repo: string;
  /** The tracked branch, e.g. `main` (not `refs/heads/main`). */
  branch: string;
  /** A new commit on the branch, or null when the branch was deleted. */
  onCommit: (commit: string | null, previous: string | null) => void;
  onError?: (err: Error) => void;
  /** Quiet time after the last file event before the ref is read again, in ms; default 50. */
  settleMs?: number;
}

export interface RefWatch {
  /** The branch's commit as last read (null: no such branch). */
  current(): string | null;
  close(): Promise<void>;
}

/** The private git dir (HEAD) and the common dir (refs, packed-refs, objects) of a local repository. */
export async function gitDirsOf(repo: string): Promise<{ gitDir: string; commonDir: string }> {
  const dir = resolve(repo);
  const dotGit = join(dir, '.git');
  const st = await stat(dotGit).catch(() => undefined);
  let gitDir: string;
  if (st?.isDirectory()) gitDir = dotGit;
  else if (st?.isFile()) {
    const pointer = /^gitdir:\s*(.+)$/m.exec(await readFile(dotGit, 'utf8'))?.[1]?.trim();
    if (!pointer) throw new Error(`${dotGit}: not a "gitdir:" pointer`);
    gitDir = resolve(dir, pointer);
  } else if (await stat(join(dir, 'HEAD')).catch(() => undefined)) gitDir = dir;
  else throw new Error(`${dir}: not a git repository (no .git, and no HEAD of a bare repository)`);
  const common = await readFile(join(gitDir, 'commondir'), 'utf8').catch(() => undefined);
  return { gitDir, commonDir: common ? resolve(gitDir, common.trim()) : gitDir };
}

/** The commit `refs/heads/<branch>` points to, or null. */
export async function readBranch(commonDir: string, branch: string): Promise<string | null> {
  try {
    return await git.resolveRef({ fs, gitdir: commonDir, ref: `refs/heads/${branch}` });
  } catch (err) {
    if ((err as { code?: string }).code === 'NotFoundError') return null;
    throw err;
  }
}

function under(root: string, path: string): string | null {
  const rel = relative(root, path);
  if (rel === '') return '';
  if (rel.startsWith('..') || rel.startsWith(sep)) return null;
  return rel.split(sep).join('/');
}

/**
 * Whether chokidar should skip `path`: everything but the ref files, the reflogs, HEAD, packed-refs and the
 * directories on the way to them.
 */
function ignoredFor(gitDir: string, commonDir: string): (path: string) => boolean {
  const keepInCommon = (rel: string) =>
    rel === '' ||
    rel === 'packed-refs' ||
    rel === 'HEAD' ||
    rel === 'refs' ||
    rel === 'logs' ||
    rel === 'logs/HEAD' ||
    rel === 'logs/refs' ||
    rel === 'refs/heads' ||
    rel.startsWith('refs/heads/') ||
    rel === 'logs/refs/heads' ||
    rel.startsWith('logs/refs/heads/');
  const keepInGitDir = (rel: string) => rel === '' || rel === 'HEAD' || rel === 'logs' || rel === 'logs/HEAD';
  // A linked worktree's git dir lives under the common dir (`worktrees/<name>`): keep the way down to it.
  const toGitDir = under(commonDir, gitDir);
  return (path: string) => {
    const inGit = under(gitDir, path);
    if (inGit !== null && keepInGitDir(inGit)) return false;
    const inCommon = under(commonDir, path);
    if (inCommon === null) return true;
    if (keepInCommon(inCommon)) return false;
    if (toGitDir && (toGitDir === inCommon || toGitDir.startsWith(`${inCommon}/`))) return false;
    return true;
  };
}

/** Starts watching; resolves once the watch is in place and the branch has been read once. */
export async function watchLocalRef(opts: RefWatchOptions): Promise<RefWatch> {
  const { gitDir, commonDir } = await gitDirsOf(opts.repo);
  const settleMs = opts.settleMs ?? 50;
  let current = await readBranch(commonDir, opts.branch);
  let timer: NodeJS.Timeout | undefined;
  let reading: Promise<void> = Promise.resolve();
  let closed = false;

  const reread = () => {
    // Reads are chained so that two never race and reports stay in order.
    reading = reading.then(async () => {
      if (closed) return;
      try {
        const next = await readBranch(commonDir, opts.branch);
        if (next !== current && !closed) {
          const previous = current;
          current = next;
          opts.onCommit(next, previous);
        }
      } catch (err) {
        opts.onError?.(err as Error);
      }
    });
  };
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(reread, settleMs);
  };

  const roots = under(commonDir, gitDir) !== null ? [commonDir] : [commonDir, gitDir];
  const watcher: FSWatcher = watch(roots, {
    ignored: ignoredFor(gitDir, commonDir),
    ignoreInitial: true,
    persistent: true,
  });
  watcher.on('all', schedule);
  watcher.on('error', (err) => opts.onError?.(err as Error));
  await new Promise<void>((ready) => watcher.once('ready', ready));
  // A commit made between the first read and the watch being ready would otherwise go unseen.
  reread();
  await reading;

  return {
    current: () => current,
    async close() {
      closed = true;
      clearTimeout(timer);
      await watcher.close();
      await reading;
    },
  };
}
