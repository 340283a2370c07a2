import { BlobCache } from './blob-cache.ts';

export interface TreeEntry {
  /** posix, relative to the repository root */
  path: string;
  /** blob id */
  oid: string;
  /** '100644' | '100755' | '120000' (symlink) */
  mode: string;
}

export interface ChangedFiles {
  added: TreeEntry[];
  modified: TreeEntry[];
  deleted: TreeEntry[];
}

/** One entry of a git tree object as isomorphic-git reads it; `path` is the entry's name. */
interface RawEntry {
  path: string;
  oid: string;
  mode: string;
  type: 'blob' | 'tree' | 'commit';
}

/**
 * Reads trees by oid with two caches, both valid forever because git objects are immutable: the raw entries
 * of a tree, and the flattened blob list under it. A subtree whose oid did not change between two commits is
 * therefore never read again, neither to list it nor to diff it.
 */
export class TreeReader {
  readonly #raw = new BlobCache<RawEntry[]>(16_384);
  readonly #flat = new BlobCache<TreeEntry[]>(4_096);
  treesRead = 0;

  constructor(readonly read: (oid: string) => Promise<{ tree: RawEntry[] }>) {}

  entries(oid: string): Promise<RawEntry[]> {
    return this.#raw.getOrLoad(oid, async () => {
      this.treesRead++;
      return (await this.read(oid)).tree;
    });
  }

  /** The oid of the directory `sub` ('' is the root itself) under the tree `root`, or null if there is none. */
  async subtree(root: string, sub: string): Promise<string | null> {
    let current = root;
    for (const name of sub ? sub.split('/') : []) {
      const entry = (await this.entries(current)).find((e) => e.path === name && e.type === 'tree');
      if (!entry) return null;
      current = entry.oid;
    }
    return current;
  }

  async directories(root: string): Promise<string[]> {
    return (await this.entries(root)).filter((e) => e.type === 'tree').map((e) => e.path);
  }

  /** Every blob under the tree `oid`, with `prefix` (the tree's own path) prepended; sorted by path. */
  async list(oid: string, prefix: string): Promise<TreeEntry[]> {
    const flat = await this.#flatten(oid);
    return flat.map((e) => ({ path: joinPath(prefix, e.path), oid: e.oid, mode: e.mode }));
  }

  #flatten(oid: string): Promise<TreeEntry[]> {
    return this.#flat.getOrLoad(oid, async () => {
      const out: TreeEntry[] = [];
      for (const e of await this.entries(oid)) {
        if (e.type === 'blob') out.push({ path: e.path, oid: e.oid, mode: e.mode });
        else if (e.type === 'tree') {
          for (const child of await this.#flatten(e.oid)) {
            out.push({ path: `${e.path}/${child.path}`, oid: child.oid, mode: child.mode });
          }
        }
        // type 'commit' is a submodule: its files live in another repository.
      }
      return out.sort(byPath);
    });
  }
}

/** Blobs added, modified (content or mode) and deleted between two trees; equal subtree oids are skipped. */
export async function diffTrees(
  reader: TreeReader,
  base: string | null,
  head: string | null,
  prefix: string,
): Promise<ChangedFiles> {
  const out: ChangedFiles = { added: [], modified: [], deleted: [] };
  const walk = async (a: string | null, b: string | null, at: string): Promise<void> => {
    if (a === b) return;
    if (a === null) {
      for (const e of await reader.list(b!, at)) out.added.push(e);
      return;
    }
    if (b === null) {
      for (const e of await reader.list(a, at)) out.deleted.push(e);
      return;
    }
    const [left, right] = [await reader.entries(a), await reader.entries(b)];
    const byName = new Map<string, { x?: RawEntry; y?: RawEntry }>();
    for (const x of left) byName.set(x.path, { x });
    for (const y of right) byName.set(y.path, { ...byName.get(y.path), y });
    for (const [name, { x, y }] of byName) {
      if (x && y && x.oid === y.oid && x.mode === y.mode) continue;
      const path = joinPath(at, name);
      const blobX = x?.type === 'blob' ? x : undefined;
      const blobY = y?.type === 'blob' ? y : undefined;
      if (blobX && blobY) out.modified.push({ path, oid: blobY.oid, mode: blobY.mode });
      else {
        if (blobX) out.deleted.push({ path, oid: blobX.oid, mode: blobX.mode });
        if (blobY) out.added.push({ path, oid: blobY.oid, mode: blobY.mode });
      }
      const treeX = x?.type === 'tree' ? x.oid : null;
      const treeY = y?.type === 'tree' ? y.oid : null;
      if (treeX !== null || treeY !== null) await walk(treeX, treeY, path);
    }
  };
  await walk(base, head, prefix);
  out.added.sort(byPath);
  out.modified.sort(byPath);
  out.deleted.sort(byPath);
  return out;
}

/** `subdir` as a clean relative posix path ('' for the root), or null when it is absolute or climbs out. */
export function normalizeSubdir(subdir: string | undefined): string | null {
  if (subdir === undefined) return '';
  if (subdir.startsWith('/') || subdir.includes('\\') || subdir.includes('\0')) return null;
  const parts = subdir.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return null;
  return parts.join('/');
}

function joinPath(prefix: string, name: string): string {
  return prefix ? `${prefix}/${name}` : name;
}

function byPath(a: TreeEntry, b: TreeEntry): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}
