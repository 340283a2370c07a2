/**
 * The reports directory: each drift report as Markdown and JSON (`drift-<UTC time>.md` / `.json`), the newest
 * `keep` kept (default 50), older ones removed after every write; plus the one-line history in the store.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeDirs, writeFileAtomic } from '../common/atomic-file.ts';
import type { StateStore } from '../store/state-store.ts';
import { renderJson, renderMarkdown } from './render.ts';
import type { DriftReport } from './report.ts';

export const DEFAULT_KEEP_REPORTS = 50;

const NAME = /^drift-(\d{8}T\d{6}\d{3}Z)(?:-(\d+))?\.(md|json)$/;

export class ReportsDir {
  constructor(
    readonly dir: string,
    private readonly keep = DEFAULT_KEEP_REPORTS,
  ) {
    if (!(keep >= 1)) throw new RangeError(`keep must be at least 1 (got ${keep})`);
  }

  /** Report ids, newest first. */
  async list(): Promise<string[]> {
    const files = await readdir(this.dir).catch(() => [] as string[]);
    const ids = new Set(files.filter((f) => NAME.test(f)).map((f) => f.replace(/\.(md|json)$/, '')));
    return [...ids].sort(compareIds).reverse();
  }

  /** Writes the report in both formats, then prunes to the newest `keep`. Returns the files written. */
  async write(report: DriftReport): Promise<{ id: string; files: string[] }> {
    await makeDirs(this.dir, 0o700);
    const stamp = report.generatedAt.replace(/[-:.]/g, '');
    const existing = new Set(await this.list());
    let id = `drift-${stamp}`;
    for (let n = 1; existing.has(id); n++) id = `drift-${stamp}-${n}`;
    const files = [`${id}.json`, `${id}.md`];
    await writeFileAtomic(join(this.dir, files[0]!), renderJson(report), { mode: 0o600 });
    await writeFileAtomic(join(this.dir, files[1]!), renderMarkdown(report), { mode: 0o600 });
    for (const old of (await this.list()).slice(this.keep))
      for (const ext of ['json', 'md']) await rm(join(this.dir, `${old}.${ext}`), { force: true });
    return { id, files };
  }

  async read(id: string): Promise<DriftReport | null> {
    if (!NAME.test(`${id}.json`)) return null;
    const text = await readFile(join(this.dir, `${id}.json`), 'utf8').catch(() => null);
    return text === null ? null : (JSON.parse(text) as DriftReport);
  }

  async latest(): Promise<DriftReport | null> {
    const [newest] = await this.list();
    return newest ? this.read(newest) : null;
  }
}

function compareIds(a: string, b: string): number {
  const pa = NAME.exec(`${a}.md`)!;
  const pb = NAME.exec(`${b}.md`)!;
  if (pa[1] !== pb[1]) return pa[1]! < pb[1]! ? -1 : 1;
  return Number(pa[2] ?? 0) - Number(pb[2] ?? 0);
}

/** Appends the report's summary to the store's drift history, keeping the newest `keep` records. */
export async function recordDrift(
  store: StateStore,
  report: DriftReport,
  id: string,
  files: string[],
  keep = DEFAULT_KEEP_REPORTS,
): Promise<void> {
  await store.drift.put(id, {
    at: report.generatedAt,
    revision: report.revision,
    drifted: report.drifted,
    counts: { ...report.summary.counts },
    files,
  });
  const ids = [...store.drift.entries()].map(([k]) => k).sort(compareIds);
  await Promise.all(ids.slice(0, Math.max(0, ids.length - keep)).map((k) => store.drift.delete(k)));
}
