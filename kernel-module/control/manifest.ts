/**
 * Drift detection: the writer records the SHA-256 and mode of every file it writes in `manifest`; comparing the
 * tree with it finds what was changed, added or removed by hand (or by anything else than the writer). Files
 * the kernel side and the data plane write (`health`, `rules.enforced`, `connections`) and the writer's own
 * in-flight temp files are not the writer's and are left out.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ControlPaths, type Manifest } from './abi.ts';
import { TEMP_FILE } from './atomic.ts';
import { readCapped } from './read.ts';
import { Limits } from './validate.ts';

/** Paths (relative to the root) that are not the writer's. */
export const NOT_WRITTEN_BY_WRITER: ReadonlySet<string> = new Set([
  ControlPaths.health,
  ControlPaths.enforced,
  ControlPaths.connections,
  ControlPaths.manifest,
]);

/** Walking stops after this many entries: a tree flooded by hand is reported as truncated, not walked forever. */
export const MAX_TREE_ENTRIES = 100_000;

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface DriftReport {
  /** Files whose content differs from what the writer wrote. */
  changed: string[];
  /** Files (or symlinks, or other non-directories) the writer did not write. */
  added: string[];
  /** Files the writer wrote that are gone. */
  removed: string[];
  /** Files whose permission bits differ from what the writer set (e.g. a key made world-readable). */
  modes: Array<{ path: string; expected: string; actual: string }>;
  /** True when the walk stopped at {@link MAX_TREE_ENTRIES}: the report is incomplete. */
  truncated: boolean;
}

export function hasDrift(r: DriftReport): boolean {
  return r.changed.length + r.added.length + r.removed.length + r.modes.length > 0 || r.truncated;
}

interface Entry {
  path: string;
  kind: 'file' | 'other';
  mode: number;
}

async function walk(root: string): Promise<{ entries: Entry[]; truncated: boolean }> {
  const entries: Entry[] = [];
  let seen = 0;
  const stack = [''];
  while (stack.length) {
    const rel = stack.pop()!;
    let names: string[];
    try {
      names = await readdir(join(root, rel));
    } catch {
      continue;
    }
    for (const name of names.sort()) {
      if (++seen > MAX_TREE_ENTRIES) return { entries, truncated: true };
      if (TEMP_FILE.test(name)) continue;
      const path = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(root, path)).catch(() => null);
      if (!st) continue;
      if (st.isDirectory()) stack.push(path);
      else entries.push({ path, kind: st.isFile() ? 'file' : 'other', mode: st.mode & 0o7777 });
    }
  }
  return { entries, truncated: false };
}

const octal = (mode: number) => `0${mode.toString(8)}`;

/** Compares the tree under `root` with the manifest. Files are read with the same caps as everything else. */
export async function computeDrift(root: string, manifest: Manifest): Promise<DriftReport> {
  const { entries, truncated } = await walk(root);
  const report: DriftReport = { changed: [], added: [], removed: [], modes: [], truncated };
  const present = new Set<string>();
  for (const e of entries) {
    if (NOT_WRITTEN_BY_WRITER.has(e.path)) continue;
    present.add(e.path);
    // Own entries only: a foreign file named `constructor` at the root is added, not Object's constructor.
    const expected = Object.hasOwn(manifest.files, e.path) ? manifest.files[e.path] : undefined;
    if (!expected || e.kind !== 'file') {
      report.added.push(e.path);
      continue;
    }
    let data: Buffer | null = null;
    try {
      data = await readCapped(join(root, e.path), Limits.rulesBytes);
    } catch {
      data = null; // unreadable or oversized: certainly not what the writer wrote
    }
    if (data === null || sha256Hex(data) !== expected.sha256) report.changed.push(e.path);
    if (e.mode !== expected.mode)
      report.modes.push({ path: e.path, expected: octal(expected.mode), actual: octal(e.mode) });
  }
  if (!truncated)
    for (const path of Object.keys(manifest.files)) if (!present.has(path)) report.removed.push(path);
  report.changed.sort();
  report.added.sort();
  report.removed.sort();
  return report;
}
