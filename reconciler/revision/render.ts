/**
 * One revision of the policy repository, rendered: list the blobs under the policy path, read only those whose
 * parsed result is not cached yet (by blob id), and validate + compile the whole set. A cached file carries no
 * text; when a check across resources reports into one (RT045, RT048, …), its blob is read then, so that the
 * diagnostic has the same line and column as in a cold run.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import type { CompileMemo } from '../policy/compile.ts';
import { CONFIG_FILE, readRepoConfig } from '../policy/config.ts';
import { type PendingDiagnostic, pending } from '../policy/diagnostics.ts';
import { isPolicyFileName } from '../policy/load-dir.ts';
import { DEFAULT_MAX_FILE_BYTES, decodePolicyText } from '../policy/parse-file.ts';
import {
  finishRender,
  needsText,
  type RenderInput,
  type RenderOptions,
  type RenderResult,
  renderPending,
  resolvePositions,
} from '../policy/render.ts';
import type { FileResult } from '../policy/resources.ts';
import { BlobTooLargeError, type PolicySource, SourceError, type TreeEntry } from '../source/index.ts';

const EMPTY = new Uint8Array(0);
const SYMLINK = '120000';
/** Longest symlink target read (Linux's PATH_MAX): a link's blob is its target path. */
const MAX_LINK_TARGET = 4096;

export interface RevisionOptions {
  path: string;
  /** The trust domain whatever the revision's riptides.config.yaml says (--trust-domain). */
  trustDomain?: string;
  /**
   * The trust domain when neither `trustDomain` nor the revision's own riptides.config.yaml gives one (a plan's
   * base without the file takes the head's; a reconciler's CA). Never overrides the revision's file: a change of trust domain is
   * a change, and each side must compile in its own.
   */
  fallbackTrustDomain?: string;
  allowSecrets?: boolean;
  maxFileBytes?: number;
  cache: Map<string, FileResult>;
  /** Shared by the revisions of one plan, so the base recompiles only what differs from the head. */
  memo?: CompileMemo;
  /** Revisions known to validate clean, by validationKey(); clean renders are recorded here. */
  validated?: { has(key: string): boolean; add(key: string): void };
  /**
   * Skip the cross-resource checks when this revision is recorded as clean. Only for a plan's base: its
   * diagnostics are never shown, only whether it is valid; the head's warnings must always be computed.
   */
  trustRecordedValidation?: boolean;
  /** Identifies the code that validates (build-id.ts), so records made by other code are never trusted. */
  build: string;
  /** Diagnostics found while reading the files (a working tree's refused symlinks, files over the cap). */
  extra?: readonly PendingDiagnostic[];
  /**
   * A policy path missing at this revision is an empty policy rather than an error. For a plan's base only: the
   * pull request that adds the policy path creates everything in it.
   */
  missingPathIsEmpty?: boolean;
}

export interface RenderedRevision {
  commit: string;
  /** False when the policy path does not exist at this revision (only with `missingPathIsEmpty`). */
  pathExists: boolean;
  trustDomain: string | undefined;
  result: RenderResult;
  /** Blobs read from git for this revision (cached ones are not). */
  blobsRead: number;
}

export class RevisionConfigError extends Error {}

export async function renderRevision(
  source: Pick<PolicySource, 'listFiles' | 'readBlob'>,
  commit: string,
  opts: RevisionOptions,
): Promise<RenderedRevision> {
  const subdir = opts.path.replace(/^\.?\/*/, '').replace(/\/+$/, '');
  let pathExists = true;
  const entries = await source.listFiles(commit, subdir || undefined).catch((err: unknown) => {
    if (!(opts.missingPathIsEmpty && subdir && err instanceof SourceError && err.code === 'bad-path'))
      throw err;
    pathExists = false;
    return [] as TreeEntry[];
  });
  const configPath = subdir ? `${subdir}/${CONFIG_FILE}` : CONFIG_FILE;
  const extra: PendingDiagnostic[] = [...(opts.extra ?? [])];
  let trustDomain = opts.trustDomain;
  let federatesWith: string[] = [];
  let blobsRead = 0;
  const config = entries.find((e) => e.path === configPath);
  const cap = opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  if (config) {
    // The same rules as on disk: a regular file (a symlink's "content" is its target), within the cap,
    // its size known from the object header before anything is inflated.
    if (config.mode === SYMLINK)
      throw new RevisionConfigError(
        `${configPath} is a symlink at ${commit.slice(0, 8)}; it was not followed`,
      );
    let bytes: Uint8Array;
    try {
      bytes = await source.readBlob(config.oid, { maxBytes: cap });
    } catch (err) {
      if (err instanceof BlobTooLargeError)
        throw new RevisionConfigError(
          `${configPath}: file is ${err.size} bytes, over the ${cap}-byte cap; nothing in it was read`,
        );
      throw err;
    }
    blobsRead++;
    const text = new TextDecoder().decode(bytes);
    const read = readRepoConfig(configPath, text);
    if (read.diagnostics.length) {
      const [d] = resolvePositions(read.diagnostics, new Map([[configPath, text]]));
      throw new RevisionConfigError(`${d!.file}:${d!.line}: ${d!.message}`);
    }
    trustDomain ??= read.config.trustDomain;
    federatesWith = read.config.federatesWith ?? [];
  }
  trustDomain ??= opts.fallbackTrustDomain;
  if (!trustDomain) {
    throw new RevisionConfigError(
      `no trust domain at ${commit.slice(0, 8)}: pass --trust-domain or commit "trustDomain: <name>" in ${configPath}`,
    );
  }
  const inputs: RenderInput[] = [];
  for (const e of entries) {
    // The name after the last slash (a tree path has no trailing one): posix.basename per file was 1 ms of a
    // one-file pass over 2,000 files.
    if (!isPolicyFileName(e.path.slice(e.path.lastIndexOf('/') + 1))) continue;
    if (e.mode === SYMLINK) {
      // A symlink blob holds its target; policy must live in the repository itself, and a link out never does.
      let target: string;
      try {
        target = new TextDecoder().decode(await source.readBlob(e.oid, { maxBytes: MAX_LINK_TARGET }));
      } catch (err) {
        if (!(err instanceof BlobTooLargeError)) throw err;
        // No file system resolves a target this long (PATH_MAX): report the link, as any other refused one.
        extra.push(
          pending('RT005', `symlink target is ${err.size} bytes, longer than any path; it was not followed`, {
            file: e.path,
            line: 1,
            column: 1,
            hint: 'commit the file itself instead of a link to it',
          }),
        );
        continue;
      }
      blobsRead++;
      const resolved = posix.normalize(posix.join(posix.dirname(e.path), target));
      if (target.startsWith('/') || resolved.startsWith('..')) {
        extra.push(
          pending('RT005', `symlink leads outside the repository (to ${target}); it was not followed`, {
            file: e.path,
            line: 1,
            column: 1,
            hint: 'commit the file itself instead of a link to it',
          }),
        );
      } else {
        extra.push(
          pending(
            'RT007',
            `symlink to ${target} is not followed in git revisions`,
            { file: e.path, line: 1, column: 1, hint: 'commit the file itself instead of a link to it' },
            'warning',
          ),
        );
      }
      continue;
    }
    const cached = opts.cache.get(e.oid);
    if (cached && cached.path === e.path) {
      inputs.push({ path: e.path, id: e.oid, bytes: EMPTY });
    } else {
      try {
        inputs.push({ path: e.path, id: e.oid, bytes: await source.readBlob(e.oid, { maxBytes: cap }) });
        blobsRead++;
      } catch (err) {
        if (!(err instanceof BlobTooLargeError)) throw err;
        extra.push(
          pending('RT001', `file is ${err.size} bytes, over the ${cap}-byte cap; nothing in it was read`, {
            file: e.path,
            line: 1,
            column: 1,
            hint: 'split it into smaller files, or raise the cap with --max-file-size if it is really policy',
          }),
        );
      }
    }
  }
  const key = validationKey(entries, trustDomain, federatesWith, opts);
  const knownValid =
    opts.trustRecordedValidation === true && extra.length === 0 && (opts.validated?.has(key) ?? false);
  const renderOptions: RenderOptions = {
    trustDomain,
    cache: opts.cache,
    ...(federatesWith.length ? { federatesWith } : {}),
    ...(knownValid ? { knownValid } : {}),
    ...(opts.memo ? { memo: opts.memo } : {}),
    ...(opts.allowSecrets ? { allowSecrets: true } : {}),
    ...(opts.maxFileBytes ? { maxFileBytes: opts.maxFileBytes } : {}),
  };
  const pendingRender = renderPending(inputs, renderOptions, extra);
  const textsNeeded = needsText(pendingRender);
  // Built only when a file's text is needed (a diagnostic to place): most passes need none.
  const oidOf = textsNeeded.length ? new Map(entries.map((e) => [e.path, e.oid] as const)) : null;
  for (const file of textsNeeded) {
    const oid = oidOf!.get(file);
    if (oid === undefined) continue;
    // Only clean, decodable files are ever cached, so this decodes as it did when the file was parsed.
    pendingRender.texts.set(file, decodePolicyText(await source.readBlob(oid, { maxBytes: cap })));
    blobsRead++;
  }
  const result = finishRender(pendingRender, renderOptions);
  if (!knownValid && !result.diagnostics.some((d) => d.severity === 'error')) opts.validated?.add(key);
  return { commit, pathExists, trustDomain, result, blobsRead };
}

/**
 * What a validation outcome depends on: every file's path and blob id under the policy path, the trust domain
 * and the domains it federates with, the options that change results, and the code that validated (new or
 * changed rules must re-check old revisions).
 */
function validationKey(
  entries: readonly TreeEntry[],
  trustDomain: string,
  federatesWith: readonly string[],
  opts: RevisionOptions,
): string {
  const h = createHash('sha256').update(
    `${opts.build}\u0000${trustDomain}\u0000${[...federatesWith].sort().join(',')}\u0000${opts.allowSecrets ? 1 : 0}\u0000${opts.maxFileBytes ?? 0}`,
  );
  for (const e of entries) h.update(`\u0000${e.path}\u0000${e.oid}\u0000${e.mode}`);
  return h.digest('hex');
}
