/**
 * Parsed documents → typed resources. Everything here is per file and pure, so a caller can cache a file's
 * whole result by its content id (git blob id) and re-read only what changed.
 */
import { type Code, type PendingDiagnostic, pending } from './diagnostics.ts';
import { describeType, formatPath } from './field-path.ts';
import {
  type CredentialBinding,
  type CredentialSource,
  DEFAULT_NAMESPACE,
  KINDS,
  type KindName,
  type Secret,
  type Service,
  UNMANAGED_KINDS,
  type WorkloadCredential,
  type WorkloadIdentity,
} from './kinds/index.ts';
import { DEFAULT_MAX_FILE_BYTES, type PolicyFile, parsePolicyFile } from './parse-file.ts';
import { issuesToDiagnostics } from './schema-check.ts';
import { didYouMean } from './suggest.ts';

export interface Located<T> {
  value: T;
  file: string;
  doc: number;
  /** `Kind/namespace/name` */
  key: string;
}

export type LocatedResource =
  | { kind: 'WorkloadIdentity'; located: Located<WorkloadIdentity> }
  | { kind: 'Service'; located: Located<Service> }
  | { kind: 'CredentialSource'; located: Located<CredentialSource> }
  | { kind: 'CredentialBinding'; located: Located<CredentialBinding> }
  | { kind: 'WorkloadCredential'; located: Located<WorkloadCredential> }
  | { kind: 'Secret'; located: Located<Secret> };

export interface FileResult {
  path: string;
  text: string | null;
  resources: LocatedResource[];
  diagnostics: PendingDiagnostic[];
}

export function resourceKey(
  kind: string,
  metadata: { name: string; namespace?: string | undefined },
): string {
  return `${kind}/${metadata.namespace ?? DEFAULT_NAMESPACE}/${metadata.name}`;
}

function guessKey(value: Record<string, unknown>, kind: string): string | undefined {
  const meta = value.metadata as { name?: unknown; namespace?: unknown } | undefined;
  if (!meta || typeof meta.name !== 'string') return undefined;
  return resourceKey(kind, {
    name: meta.name,
    namespace: typeof meta.namespace === 'string' ? meta.namespace : undefined,
  });
}

/** YAML's merge key. YAML 1.2 (this reader) does not expand it, so it arrives as a literal key. */
const MERGE_KEY = '<<';

/** Paths of every `<<` key in a document (walked only when the file's text holds "<<" at all). */
function mergeKeyPaths(value: unknown, path: (string | number)[] = [], out: (string | number)[][] = []) {
  if (Array.isArray(value)) for (let i = 0; i < value.length; i++) mergeKeyPaths(value[i], [...path, i], out);
  else if (value && typeof value === 'object')
    for (const [k, v] of Object.entries(value)) {
      if (k === MERGE_KEY) out.push([...path, k]);
      else mergeKeyPaths(v, [...path, k], out);
    }
  return out;
}

/** Reads one policy file into typed resources and the diagnostics of its own content. */
export function readPolicyFile(file: PolicyFile, maxFileBytes = DEFAULT_MAX_FILE_BYTES): FileResult {
  const parsed = parsePolicyFile(file, maxFileBytes);
  const result: FileResult = {
    path: file.path,
    text: parsed.text,
    resources: [],
    diagnostics: parsed.diagnostics,
  };
  const where = (doc: number, path: (string | number)[] = [], at: 'key' | 'value' = 'value') => ({
    file: file.path,
    doc,
    path,
    at,
  });
  const report = (
    code: Code,
    message: string,
    w: ReturnType<typeof where>,
    hint?: string,
    resource?: string,
  ) =>
    result.diagnostics.push(
      pending(code, message, { ...w, ...(hint ? { hint } : {}), ...(resource ? { resource } : {}) }),
    );

  // Once per file: documents are walked for merge keys only when the text holds "<<" at all.
  const mayHoldMergeKeys = parsed.text?.includes(MERGE_KEY) ?? false;
  parsed.documents.forEach((value, doc) => {
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value)) {
      report(
        'RT006',
        `document ${doc + 1} is ${describeType(value)}, not a resource map`,
        where(doc),
        'each YAML document must be one resource with apiVersion, kind, metadata and spec',
      );
      return;
    }
    const obj = value as Record<string, unknown>;
    const kind = obj.kind;
    if (typeof kind !== 'string' || kind === '') {
      report(
        'RT011',
        'resource has no "kind"',
        where(doc),
        `add "kind:", one of ${Object.keys(KINDS).join(', ')}`,
      );
      return;
    }
    if ((UNMANAGED_KINDS as readonly string[]).includes(kind)) {
      report(
        'RT010',
        `${kind} is managed in the control plane, not reconciled from git; it is ignored`,
        where(doc, ['kind']),
        undefined,
        guessKey(obj, kind),
      );
      result.diagnostics.at(-1)!.severity = 'warning';
      return;
    }
    // Own keys only: `kind: constructor` must be an unknown kind, not Object's constructor.
    const definition = Object.hasOwn(KINDS, kind) ? KINDS[kind as KindName] : undefined;
    if (!definition) {
      report(
        'RT010',
        `unknown kind "${kind}"`,
        where(doc, ['kind']),
        didYouMean(kind, Object.keys(KINDS)) ?? `known kinds: ${Object.keys(KINDS).join(', ')}`,
      );
      return;
    }
    const key = guessKey(obj, kind);
    if (obj.apiVersion !== definition.apiVersion) {
      report(
        'RT010',
        `kind ${kind} is served by apiVersion "${definition.apiVersion}", not ${JSON.stringify(obj.apiVersion ?? null)}`,
        where(doc, obj.apiVersion === undefined ? [] : ['apiVersion']),
        `set apiVersion: ${definition.apiVersion}`,
        key,
      );
      return;
    }
    if (mayHoldMergeKeys)
      for (const path of mergeKeyPaths(obj))
        report(
          'RT020',
          `YAML merge key "<<" in "${formatPath(path.slice(0, -1))}" is not supported`,
          where(doc, path, 'key'),
          'YAML merge keys (<<: *anchor) are not supported in policy files; write the merged fields out in full',
          key,
        );
    const checked = definition.schema.safeParse(obj);
    if (!checked.success) {
      result.diagnostics.push(
        ...issuesToDiagnostics(definition.schema, obj, checked.error.issues, {
          file: file.path,
          doc,
          ...(key ? { resource: key } : {}),
        }),
      );
      return;
    }
    const typed = checked.data as { metadata: { name: string; namespace?: string } };
    const located = { value: typed, file: file.path, doc, key: resourceKey(kind, typed.metadata) };
    // The definition's own name, not the YAML's equal string: grouping compares it against literals per pass.
    result.resources.push({ kind: definition.kind, located } as LocatedResource);
  });
  return result;
}
