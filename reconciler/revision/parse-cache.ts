/**
 * Parsed policy files kept on disk between runs, keyed by git blob id (content-addressed) and stamped with the
 * build that parsed them (build-id.ts): entries written by other code, with other rules, are never read back.
 * A pull-request job that keeps its cache directory re-parses only the blobs that changed.
 * Only clean files are kept: an entry is typed resources, no file text. Files with diagnostics (whose text
 * would be needed for positions) and files holding a Secret are re-parsed each time, so no file text and no
 * Secret value is ever written here.
 *
 * Layout: a main file with the entries of the revisions planned when it was last compacted, and a small delta
 * file with entries added since, so a run that parsed a few files writes a few entries, not the whole cache.
 */
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeDirsSync, writeFileAtomic } from '../common/atomic-file.ts';
import type { FileResult } from '../policy/resources.ts';

/** The delta is folded into the main file once it holds this share of the main file's entries. */
const COMPACT_RATIO = 0.2;

interface CacheFile {
  /** The build that wrote the entries; a file written by any other build reads as empty. */
  build: string;
  entries: Record<string, FileResult>;
}

function storable(result: FileResult): boolean {
  return result.diagnostics.length === 0 && !result.resources.some((r) => r.kind === 'Secret');
}

function readEntries(file: string, build: string): Record<string, FileResult> {
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as CacheFile;
    return data.build === build && data.entries && typeof data.entries === 'object' ? data.entries : {};
  } catch {
    // No cache yet, or an unreadable one: start empty; it is only a cache.
    return {};
  }
}

export class ParseCache {
  private readonly used = new Set<string>();
  private readonly added = new Map<string, FileResult>();

  private constructor(
    private readonly build: string,
    private readonly mainFile: string,
    private readonly deltaFile: string,
    private readonly main: Record<string, FileResult>,
    private readonly delta: Record<string, FileResult>,
  ) {}

  /**
   * `variant` separates caches whose parse options differ (the file size cap changes results); `build` is the
   * running code's id (buildId()), which every entry read back must carry.
   */
  static open(dir: string, variant: string, build: string): ParseCache {
    makeDirsSync(dir, 0o700);
    const mainFile = join(dir, `parse-cache-${variant}.json`);
    const deltaFile = join(dir, `parse-cache-${variant}.delta.json`);
    return new ParseCache(
      build,
      mainFile,
      deltaFile,
      readEntries(mainFile, build),
      readEntries(deltaFile, build),
    );
  }

  private write(file: string, entries: Record<string, FileResult>): Promise<void> {
    return writeFileAtomic(file, JSON.stringify({ build: this.build, entries } satisfies CacheFile), {
      mode: 0o600,
    });
  }

  private lookup(key: string): FileResult | undefined {
    return this.added.get(key) ?? this.delta[key] ?? this.main[key];
  }

  /** The map renderPolicy reads and fills. */
  asMap(): Map<string, FileResult> {
    const cache = this;
    return new (class extends Map<string, FileResult> {
      override get(key: string) {
        const hit = cache.lookup(key);
        if (hit) cache.used.add(key);
        return hit;
      }
      override set(key: string, value: FileResult) {
        cache.used.add(key);
        if (storable(value)) cache.added.set(key, { ...value, text: null });
        return this;
      }
    })();
  }

  /**
   * Persists what this run parsed: appended to the delta, or, once the delta has grown, compacted with the
   * main file into the entries this run used (so the cache tracks the revisions people plan, not all history).
   */
  async save(): Promise<void> {
    if (this.added.size === 0) return;
    const delta = { ...this.delta, ...Object.fromEntries(this.added) };
    const mainSize = Object.keys(this.main).length;
    if (Object.keys(delta).length < Math.max(64, mainSize * COMPACT_RATIO)) {
      await this.write(this.deltaFile, delta);
      return;
    }
    const entries: Record<string, FileResult> = {};
    for (const key of this.used) {
      const hit = this.lookup(key);
      if (hit && storable(hit)) entries[key] = hit;
    }
    await this.write(this.mainFile, entries);
    await rm(this.deltaFile, { force: true });
  }
}

/** Revision keys known to validate clean (see plan/revision.ts), kept beside the parse cache, newest last. */
export class ValidatedRevisions {
  private static readonly LIMIT = 256;
  private readonly keys: string[];
  private dirty = false;

  private constructor(
    private readonly file: string,
    private readonly build: string,
    keys: string[],
  ) {
    this.keys = keys;
  }

  /** The records made by `build` (buildId()); records of any other build are dropped. */
  static open(dir: string, build: string): ValidatedRevisions {
    const file = join(dir, 'validated.json');
    try {
      const data = JSON.parse(readFileSync(file, 'utf8')) as { build: string; keys: string[] };
      return new ValidatedRevisions(
        file,
        build,
        data.build === build && Array.isArray(data.keys) ? data.keys : [],
      );
    } catch {
      return new ValidatedRevisions(file, build, []);
    }
  }

  has(key: string): boolean {
    return this.keys.includes(key);
  }

  add(key: string): void {
    if (this.has(key)) return;
    this.keys.push(key);
    if (this.keys.length > ValidatedRevisions.LIMIT) this.keys.shift();
    this.dirty = true;
  }

  async save(): Promise<void> {
    if (!this.dirty) return;
    await writeFileAtomic(this.file, JSON.stringify({ build: this.build, keys: this.keys }), { mode: 0o600 });
  }
}

/**
 * Parsed files in memory for a long-running process (the reconcile loop), keyed by blob id. Two generations:
 * a render starts a new one, and an entry the render reads moves into it, so entries that neither of the last
 * two renders used are dropped: memory follows the repository as it is, not its whole history. Between passes
 * every unchanged file is a hit, so a one-file commit parses one file.
 */
export class MemoryParseCache extends Map<string, FileResult> {
  #previous = new Map<string, FileResult>();

  /** Called at the start of each render. */
  nextGeneration(): void {
    this.#previous = new Map(this);
    super.clear();
  }

  override get(key: string): FileResult | undefined {
    const hit = super.get(key);
    if (hit) return hit;
    const old = this.#previous.get(key);
    if (old) super.set(key, old);
    return old;
  }

  override has(key: string): boolean {
    return super.has(key) || this.#previous.has(key);
  }
}
