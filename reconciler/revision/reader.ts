/**
 * The one way to render revisions of the policy repository: `plan` (a head and a base, with caches on disk
 * between runs), the reconcile loop and drift (one revision after another, with caches in memory between
 * passes) all render through a RevisionReader.
 *
 * What it keeps between renders, so that a render costs in proportion to what changed:
 * - parsed files by blob id (only blobs not seen before are read and parsed; parse-cache.ts);
 * - the compiler's memo (identities, credential references and sources whose inputs are the same objects
 *   are not compiled again; policy/compile.ts CompileMemo);
 * - for plan, the record of revisions already validated clean (a base's cross-resource checks are skipped).
 */
import { join } from 'node:path';
import { buildId } from '../build-id.ts';
import { CompileMemo } from '../policy/compile.ts';
import type { PendingDiagnostic } from '../policy/diagnostics.ts';
import { DEFAULT_MAX_FILE_BYTES } from '../policy/parse-file.ts';
import type { FileResult } from '../policy/resources.ts';
import type { PolicySource } from '../source/index.ts';
import { MemoryParseCache, ParseCache, ValidatedRevisions } from './parse-cache.ts';
import { type RenderedRevision, renderRevision } from './render.ts';

export interface RevisionReaderOptions {
  /** The policy path inside the repository (`--path`); '' for the root. */
  path: string;
  /** Overrides `riptides.config.yaml`'s trustDomain. */
  trustDomain?: string;
  allowSecrets?: boolean;
  maxFileBytes?: number;
  /** The running code's id (build-id.ts); default buildId(). */
  build?: string;
}

export interface RenderCall {
  /** Overrides the reader's trust domain for this render (plan renders the base with the head's). */
  trustDomain?: string;
  /** The trust domain when neither the reader's nor `riptides.config.yaml` names one. */
  fallbackTrustDomain?: string;
  /** Diagnostics found while reading the files (a working tree's refused files). */
  extra?: readonly PendingDiagnostic[];
  /** Skip cross-resource checks when this exact revision is recorded as clean (a plan's base only). */
  trustRecordedValidation?: boolean;
  /** A policy path missing at this revision renders as empty instead of an error (a plan's base before it existed). */
  missingPathIsEmpty?: boolean;
}

export class RevisionReader {
  /** Compiled parts reused between renders (keyed by the parsed resources the cache hands out again). */
  readonly memo = new CompileMemo();
  readonly build: string;

  private constructor(
    readonly opts: RevisionReaderOptions,
    private readonly cache: Map<string, FileResult>,
    private readonly onDisk: { parse: ParseCache; validated: ValidatedRevisions } | null,
  ) {
    this.build = opts.build ?? buildId();
  }

  /**
   * Caches in `dir` between runs (plan's `--cache-dir`/parsed): parsed files keyed by blob id and build, and
   * the revisions validated clean. Call save() at the end.
   */
  static onDisk(dir: string, opts: RevisionReaderOptions): RevisionReader {
    const build = opts.build ?? buildId();
    const parse = ParseCache.open(dir, String(opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES), build);
    const validated = ValidatedRevisions.open(dir, build);
    return new RevisionReader({ ...opts, build }, parse.asMap(), { parse, validated });
  }

  /** Caches in memory only, bounded to what the last two renders used (the loop, drift). */
  static inMemory(opts: RevisionReaderOptions): RevisionReader {
    return new RevisionReader(opts, new MemoryParseCache(), null);
  }

  /** `commit` of `source` rendered: validated, and compiled when there is no error. */
  render(
    source: Pick<PolicySource, 'listFiles' | 'readBlob'>,
    commit: string,
    call: RenderCall = {},
  ): Promise<RenderedRevision> {
    if (this.cache instanceof MemoryParseCache) this.cache.nextGeneration();
    const trustDomain = call.trustDomain ?? this.opts.trustDomain;
    return renderRevision(source, commit, {
      path: this.opts.path,
      cache: this.cache,
      memo: this.memo,
      build: this.build,
      ...(this.onDisk ? { validated: this.onDisk.validated } : {}),
      ...(trustDomain ? { trustDomain } : {}),
      ...(call.fallbackTrustDomain ? { fallbackTrustDomain: call.fallbackTrustDomain } : {}),
      ...(this.opts.allowSecrets ? { allowSecrets: true } : {}),
      ...(this.opts.maxFileBytes ? { maxFileBytes: this.opts.maxFileBytes } : {}),
      ...(call.extra?.length ? { extra: call.extra } : {}),
      ...(call.trustRecordedValidation ? { trustRecordedValidation: true } : {}),
      ...(call.missingPathIsEmpty ? { missingPathIsEmpty: true } : {}),
    });
  }

  /** Persists what this run parsed and validated (on-disk caches only). */
  async save(): Promise<void> {
    if (!this.onDisk) return;
    await this.onDisk.parse.save();
    await this.onDisk.validated.save();
  }
}

/** The on-disk layout plan uses under its cache directory: `git/` (the bare clone) and `parsed/`. */
export function planCacheDirs(cacheDir: string): { git: string; parsed: string } {
  return { git: join(cacheDir, 'git'), parsed: join(cacheDir, 'parsed') };
}
