/**
 * The working tree of a local checkout as a revision: the policy files under the policy path as they are on
 * disk, committed or not (what `argocd app diff --local` and `flux diff --path` plan), read through the same
 * guarded reader as `validate` (size cap, symlinks that leave the repository refused). Each file gets its git
 * blob id, so the parse cache serves unchanged files, and so the tree can be compared with a commit to tell
 * whether it holds uncommitted changes.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { PendingDiagnostic } from '../policy/diagnostics.ts';
import { loadPolicyDir } from '../policy/load-dir.ts';
import type { TreeEntry } from '../source/index.ts';

const SYMLINK = '120000';

export interface Worktree {
  /** The policy files (and riptides.config.yaml) under the path, as tree entries with their blob ids. */
  entries: TreeEntry[];
  /** Paths that are symbolic links on disk (followed inside the repository by the reader). */
  symlinks: Set<string>;
  /** What the guarded reader refused (files over the cap, symlinks out of the repository, unreadable files). */
  diagnostics: PendingDiagnostic[];
  /**
   * Epoch ms of the newest change (mtime or ctime) among the files read and their directories, as stat(2)
   * gave them after the read; times in the future (a skewed clock, an archive's dates) are not counted.
   */
  lastChangeMs: number;
  /** The source renderRevision reads: listFiles gives `entries` whatever the commit, readBlob the bytes. */
  listFiles(commit: string, subdir?: string): Promise<TreeEntry[]>;
  readBlob(oid: string): Promise<Uint8Array>;
}

/** Git's blob id of `bytes` (SHA-1 of "blob <length>\0" + bytes), as `git hash-object` prints it. */
function gitBlobId(bytes: Uint8Array): string {
  return createHash('sha1').update(`blob ${bytes.byteLength}\0`).update(bytes).digest('hex');
}

/** Whether `repo` is a working copy (it has a .git directory or file), rather than a bare repository. */
export function isWorkingCopy(repo: string): boolean {
  return existsSync(join(repo, '.git'));
}

/**
 * What the working copy `repo` has checked out: the branch (`refs/heads/…`) or, detached, the commit id; read
 * from its own HEAD, which for a linked worktree (`git worktree add`) lives in the worktree's private git
 * directory, not in the repository's. Undefined when it cannot be read.
 */
export function checkedOut(repo: string): string | undefined {
  try {
    const dotGit = join(repo, '.git');
    let gitdir = dotGit;
    if (statSync(dotGit).isFile()) {
      const pointer = /^gitdir:\s*(.+)$/m.exec(readFileSync(dotGit, 'utf8'))?.[1]?.trim();
      if (!pointer) return undefined;
      gitdir = resolve(repo, pointer);
    }
    const head = readFileSync(join(gitdir, 'HEAD'), 'utf8').trim();
    const ref = /^ref:\s*(refs\/\S+)$/.exec(head)?.[1];
    if (ref) return ref;
    return /^[0-9a-f]{40}$/.test(head) ? head : undefined;
  } catch {
    return undefined;
  }
}

/** Reads the working tree of `repo` under `path`; throws PolicyPathError when the path does not exist. */
export function readWorktree(repo: string, path: string, maxFileBytes?: number): Worktree {
  const tree = loadPolicyDir({ repo, ...(path ? { path } : {}), ...(maxFileBytes ? { maxFileBytes } : {}) });
  const blobs = new Map<string, Uint8Array>();
  const entries: TreeEntry[] = [];
  const add = (file: string, bytes: Uint8Array) => {
    const oid = gitBlobId(bytes);
    blobs.set(oid, bytes);
    entries.push({ path: file, oid, mode: '100644' });
  };
  for (const f of tree.files) add(f.path, f.bytes);
  if (tree.config) add(tree.config.path, new TextEncoder().encode(tree.config.text));
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const symlinks = new Set<string>();
  const now = Date.now();
  let lastChangeMs = 0;
  const changed = (ms: number) => {
    if (ms > lastChangeMs && ms <= now) lastChangeMs = ms;
  };
  const dirs = new Set<string>(['', path]);
  for (const e of entries) {
    for (let d = dirname(e.path); d !== '.' && d !== '' && !dirs.has(d); d = dirname(d)) dirs.add(d);
    try {
      const link = lstatSync(join(repo, e.path));
      if (link.isSymbolicLink()) symlinks.add(e.path);
      const st = link.isSymbolicLink() ? statSync(join(repo, e.path)) : link;
      changed(Math.max(st.mtimeMs, st.ctimeMs, link.ctimeMs));
    } catch {
      // Gone since it was read: the change is now, and nothing to compare either way.
      changed(now);
    }
  }
  // A file created, deleted or renamed shows in its directory's times.
  for (const d of dirs) {
    try {
      const st = statSync(join(repo, d));
      changed(Math.max(st.mtimeMs, st.ctimeMs));
    } catch {
      changed(now);
    }
  }
  return {
    entries,
    symlinks,
    diagnostics: tree.diagnostics,
    lastChangeMs,
    listFiles: async () => entries,
    readBlob: async (oid) => {
      const bytes = blobs.get(oid);
      if (!bytes) throw new Error(`blob ${oid} is not in the working tree`);
      return bytes;
    },
  };
}

/**
 * Paths whose content differs between the working tree and a commit's entries under the same path: added,
 * modified or deleted. Only what the policy reader reads is compared (dot-files and node_modules are skipped
 * on both sides, as validate skips them).
 */
export function uncommittedChanges(worktree: Worktree, committed: readonly TreeEntry[]): string[] {
  const read = (p: string) => !p.split('/').some((seg) => seg.startsWith('.') || seg === 'node_modules');
  const isPolicy = (e: TreeEntry) => /\.ya?ml$/.test(e.path) && read(e.path) && e.mode !== SYMLINK;
  // A committed symlink is a link in git and its target's content on disk: not comparable, so not compared.
  const onDisk = new Map(
    worktree.entries.filter((e) => !worktree.symlinks.has(e.path)).map((e) => [e.path, e.oid] as const),
  );
  const inGit = new Map(committed.filter(isPolicy).map((e) => [e.path, e.oid] as const));
  const changed = new Set<string>();
  for (const [path, oid] of onDisk) if (inGit.get(path) !== oid) changed.add(path);
  for (const path of inGit.keys()) if (!onDisk.has(path)) changed.add(path);
  return [...changed].sort();
}
