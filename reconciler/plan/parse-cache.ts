/**
 * Parsed policy files kept on disk between runs, keyed by git blob id (content-addressed, so an entry never
 * goes stale). A pull-request job that keeps its cache directory re-parses only the blobs that changed.
 * Only clean files are kept: an entry is typed resources, no file text. Files with diagnostics (whose text
 * would be needed for positions) and files holding a Secret are re-parsed each time, so no file text and no
 * Secret value is ever written here.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FileResult } from '../policy/resources.ts';

/** Bumped whenever FileResult's shape or the parse rules change, so old entries are ignored, never misread. */
const FORMAT = 'riptides-parse-cache/1';

interface CacheFile {
  format: string;
  entries: Record<string, FileResult>;
}

function storable(result: FileResult): boolean {
  return result.diagnostics.length === 0 && !result.resources.some((r) => r.kind === 'Secret');
}

export class ParseCache {
  private readonly file: string;
  readonly entries: Map<string, FileResult>;
  private readonly used = new Set<string>();

  private constructor(file: string, entries: Map<string, FileResult>) {
    this.file = file;
    this.entries = entries;
  }

  /** `variant` separates caches whose parse options differ (the file size cap changes results). */
  static open(dir: string, variant: string): ParseCache {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    let entries = new Map<string, FileResult>();
    try {
      const data = JSON.parse(readFileSync(join(dir, `parse-cache-${variant}.json`), 'utf8')) as CacheFile;
      if (data.format === FORMAT) entries = new Map(Object.entries(data.entries));
    } catch {
      // No cache yet, or an unreadable one: start empty; it is only a cache.
    }
    return new ParseCache(join(dir, `parse-cache-${variant}.json`), entries);
  }

  /** The map renderPolicy reads and fills; entries touched in this run are the ones saved. */
  asMap(): Map<string, FileResult> {
    const cache = this;
    return new (class extends Map<string, FileResult> {
      override get(key: string) {
        const hit = cache.entries.get(key);
        if (hit) cache.used.add(key);
        return hit;
      }
      override set(key: string, value: FileResult) {
        cache.entries.set(key, value);
        cache.used.add(key);
        return this;
      }
    })();
  }

  /** Writes the entries this run used (so the file tracks the revisions people plan, not all history). */
  save(): void {
    const entries: Record<string, FileResult> = {};
    for (const key of this.used) {
      const hit = this.entries.get(key);
      if (hit && storable(hit)) entries[key] = { ...hit, text: null };
    }
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ format: FORMAT, entries } satisfies CacheFile), { mode: 0o600 });
    renameSync(tmp, this.file);
  }
}
