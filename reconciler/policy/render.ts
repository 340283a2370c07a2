/**
 * The policy pipeline: files → resources → validation → node programs. A result with any error carries no
 * programs, so nothing downstream can apply half a repository.
 */
import { type CompileMemo, compile, type NodeProgram } from './compile.ts';
import { compareDiagnostics, type Diagnostic, type PendingDiagnostic } from './diagnostics.ts';
import { DEFAULT_MAX_FILE_BYTES, type PolicyFile } from './parse-file.ts';
import { checkReferences } from './reference-checks.ts';
import { groupResources, type ResourceSet } from './resource-set.ts';
import { type FileResult, readPolicyFile } from './resources.ts';
import { createLocator, lineStarts, offsetToPosition } from './yaml-events.ts';

export interface RenderOptions {
  trustDomain: string;
  /** Trust domains whose SPIFFE IDs allow lists may name (riptides.config.yaml `federatesWith`). */
  federatesWith?: readonly string[];
  allowSecrets?: boolean;
  maxFileBytes?: number;
  /** Per-file results keyed by content id (e.g. git blob id); reused instead of re-parsing. */
  cache?: Map<string, FileResult>;
  /** Compiled parts reused from earlier renders that shared resource objects through the cache. */
  memo?: CompileMemo;
  /**
   * The caller knows these exact files already validated clean under these options (a record keyed by their
   * content ids): the cross-resource checks are skipped. Per-file diagnostics still come from the files.
   */
  knownValid?: boolean;
}

export interface RenderInput extends PolicyFile {
  /** Content id for the cache; files without one are always parsed. When the id is cached, bytes are not read. */
  id?: string;
}

export interface RenderResult {
  diagnostics: Diagnostic[];
  resources: ResourceSet;
  /** null when there is any error. */
  programs: NodeProgram[] | null;
  stats: { files: number; parsed: number; resources: number };
}

/**
 * At most this many diagnostics are shown per file; the rest are counted in one RT008 diagnostic. A file of
 * 80,000 broken documents says so in a screenful, and resolving positions stays bounded by the cap.
 */
export const MAX_DIAGNOSTICS_PER_FILE = 100;

/**
 * Resolves document paths to line:column, parsing and indexing each file once and only when one of its
 * diagnostics needs a position. Per file, at most `maxPerFile` diagnostics are kept (errors first, then by
 * document, code and message); the others become one RT008 diagnostic at 1:1 saying how many were left out
 * (an error when any of them was one, so the verdict never changes). Sorted by file, line, column, code and
 * message.
 */
export function resolvePositions(
  pendingList: readonly PendingDiagnostic[],
  texts: ReadonlyMap<string, string | null>,
  maxPerFile = MAX_DIAGNOSTICS_PER_FILE,
): Diagnostic[] {
  const byFile = new Map<string, PendingDiagnostic[]>();
  for (const p of pendingList) {
    const list = byFile.get(p.file);
    if (list) list.push(p);
    else byFile.set(p.file, [p]);
  }
  const out: Diagnostic[] = [];
  for (const [file, all] of byFile) {
    let kept = all;
    if (all.length > maxPerFile) {
      // Which ones are shown does not depend on the order the checks ran in (they may have run on an earlier
      // revision, see reference-checks.ts): by document, then code and message.
      all.sort(byDocument);
      const errors = all.filter((p) => p.severity === 'error');
      kept = [...errors, ...all.filter((p) => p.severity !== 'error')].slice(0, maxPerFile);
      const leftErrors = errors.length - kept.filter((p) => p.severity === 'error').length;
      const left = all.length - kept.length;
      out.push({
        code: 'RT008',
        severity: leftErrors > 0 ? 'error' : 'warning',
        message: `${left} more diagnostic(s) in this file were left out (${leftErrors} error(s), ${left - leftErrors} warning(s)); only the first ${maxPerFile} are shown`,
        hint: 'fix the ones shown and run again',
        file,
        line: 1,
        column: 1,
      });
    }
    const text = texts.get(file);
    let locate: ReturnType<typeof createLocator> | undefined;
    let starts: number[] | undefined;
    for (const p of kept) {
      let line = p.line ?? 1;
      let column = p.column ?? 1;
      if (p.line === undefined && p.doc !== undefined && text) {
        locate ??= createLocator(text);
        starts ??= lineStarts(text);
        ({ line, column } = offsetToPosition(starts, locate(p.doc, p.path ?? [], p.at)));
      }
      const d: Diagnostic = { code: p.code, severity: p.severity, message: p.message, file, line, column };
      if (p.hint) d.hint = p.hint;
      if (p.resource) d.resource = p.resource;
      out.push(d);
    }
  }
  return out.sort(compareDiagnostics);
}

function byDocument(a: PendingDiagnostic, b: PendingDiagnostic): number {
  return (
    (a.doc ?? -1) - (b.doc ?? -1) ||
    (a.line ?? 0) - (b.line ?? 0) ||
    (a.code < b.code ? -1 : a.code > b.code ? 1 : 0) ||
    (a.message < b.message ? -1 : a.message > b.message ? 1 : 0)
  );
}

/**
 * A render whose diagnostics still point into documents (not yet line:column), so a caller that holds some
 * files only as cached, text-less results can fetch their text before positions are resolved (see
 * `needsText`). Otherwise use renderPolicy.
 */
export interface PendingRender {
  pending: PendingDiagnostic[];
  /** Each file's text; null for files whose parse came from the cache (and for unreadable files). */
  texts: Map<string, string | null>;
  resources: ResourceSet;
  stats: RenderResult['stats'];
}

export function renderPending(
  files: readonly RenderInput[],
  opts: RenderOptions,
  extra: readonly PendingDiagnostic[] = [],
): PendingRender {
  const maxFileBytes = opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  const results: FileResult[] = new Array(files.length);
  const missing: number[] = [];
  files.forEach((f, i) => {
    const cached = f.id !== undefined ? opts.cache?.get(f.id) : undefined;
    // A cached result is only valid at the same path: diagnostics and resource locations name the file.
    if (cached && cached.path === f.path) results[i] = cached;
    else missing.push(i);
  });
  const fresh = missing.map((i) => readPolicyFile(files[i]!, maxFileBytes));
  missing.forEach((index, k) => {
    const result = fresh[k]!;
    results[index] = result;
    const id = files[index]!.id;
    if (id !== undefined) opts.cache?.set(id, result);
  });
  const resources = groupResources(results);
  const pendingList: PendingDiagnostic[] = [...extra, ...results.flatMap((r) => r.diagnostics)];
  // A loop, not push(...list): a spread of a few hundred thousand arguments overflows the stack.
  if (!opts.knownValid) for (const d of checkReferences(resources, opts, opts.memo)) pendingList.push(d);
  const count = Object.values(resources).reduce((n, list) => n + list.length, 0);
  return {
    pending: pendingList,
    texts: new Map(results.map((r) => [r.path, r.text] as const)),
    resources,
    stats: { files: files.length, parsed: missing.length, resources: count },
  };
}

/** Files that have a diagnostic to place inside a document but no text to place it with (cached parses). */
export function needsText(render: PendingRender): string[] {
  const files = new Set<string>();
  for (const p of render.pending)
    if (p.line === undefined && p.doc !== undefined && render.texts.get(p.file) == null) files.add(p.file);
  return [...files].sort();
}

/** Positions resolved from `render.texts`, then the node programs when there is no error. */
export function finishRender(render: PendingRender, opts: RenderOptions): RenderResult {
  const diagnostics = resolvePositions(render.pending, render.texts);
  const hasError = diagnostics.some((d) => d.severity === 'error');
  return {
    diagnostics,
    resources: render.resources,
    programs: hasError ? null : compile(render.resources, opts.trustDomain, opts.memo),
    stats: render.stats,
  };
}

export function renderPolicy(
  files: readonly RenderInput[],
  opts: RenderOptions,
  extra: readonly PendingDiagnostic[] = [],
): RenderResult {
  return finishRender(renderPending(files, opts, extra), opts);
}
