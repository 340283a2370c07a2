/**
 * Resource changes between two revisions: per `Kind/namespace/name`, created / changed / deleted, with
 * field-level changes. Values of secret-bearing fields are replaced by fingerprints before they leave here.
 */

import { fingerprint } from '../credentials/fingerprint.ts';
import type { ResourceSet } from '../policy/resource-set.ts';
import type { Located } from '../policy/resources.ts';

/** A secret value as plans show it. */
const masked = (value: unknown) =>
  `sha256:${fingerprint(typeof value === 'string' ? value : JSON.stringify(value ?? null))}`;

export type Change = 'created' | 'changed' | 'deleted';

export interface FieldChange {
  path: string;
  before?: unknown;
  after?: unknown;
  /** For lists of plain values: what entered and what left. */
  added?: unknown[];
  removed?: unknown[];
  /** True when before/after are fingerprints of secret values. */
  secret?: boolean;
}

export interface ResourceChange {
  kind: string;
  namespace: string;
  name: string;
  change: Change;
  file: string;
  fields: FieldChange[];
}

type AnyLocated = Located<{ kind: string; metadata: { name: string; namespace?: string | undefined } }>;

function allResources(set: ResourceSet | null): Map<string, AnyLocated> {
  const out = new Map<string, AnyLocated>();
  if (!set) return out;
  for (const list of Object.values(set) as AnyLocated[][]) for (const r of list) out.set(r.key, r);
  return out;
}

/** Secret-bearing fields: the values of a v1 Secret. */
function isSecretPath(kind: string, path: string[]): boolean {
  return kind === 'Secret' && (path[0] === 'data' || path[0] === 'stringData') && path.length >= 2;
}

const isPlain = (v: unknown) => v === null || typeof v !== 'object';

/** `spec.selectors[0].process:name` from ['spec', 'selectors', '[0]', 'process:name']. */
function showPath(path: string[]): string {
  return path.reduce((s, p) => (p.startsWith('[') ? s + p : s ? `${s}.${p}` : p), '') || '(root)';
}

function diffValues(kind: string, path: string[], before: unknown, after: unknown, out: FieldChange[]): void {
  if (before === after) return;
  const shown = showPath(path);
  if (isSecretPath(kind, path)) {
    const change: FieldChange = { path: shown, secret: true };
    if (before !== undefined) change.before = masked(before);
    if (after !== undefined) change.after = masked(after);
    out.push(change);
    return;
  }
  if (Array.isArray(before) && Array.isArray(after) && before.every(isPlain) && after.every(isPlain)) {
    const added = after.filter((v) => !before.includes(v));
    const removed = before.filter((v) => !after.includes(v));
    if (added.length || removed.length) out.push({ path: shown, added, removed });
    else if (before.join('\u0000') !== after.join('\u0000')) out.push({ path: shown, before, after });
    return;
  }
  if (Array.isArray(before) && Array.isArray(after)) {
    const n = Math.max(before.length, after.length);
    for (let i = 0; i < n; i++) diffValues(kind, [...path, `[${i}]`], before[i], after[i], out);
    return;
  }
  if (
    before &&
    after &&
    typeof before === 'object' &&
    typeof after === 'object' &&
    !Array.isArray(before) &&
    !Array.isArray(after)
  ) {
    const b = before as Record<string, unknown>;
    const a = after as Record<string, unknown>;
    for (const key of [...new Set([...Object.keys(b), ...Object.keys(a)])].sort())
      diffValues(kind, [...path, key], b[key], a[key], out);
    return;
  }
  const change: FieldChange = { path: shown };
  if (before !== undefined) change.before = before;
  if (after !== undefined) change.after = after;
  out.push(change);
}

function split(key: string): { kind: string; namespace: string; name: string } {
  const [kind, namespace, ...rest] = key.split('/');
  return { kind: kind!, namespace: namespace!, name: rest.join('/') };
}

export function diffResources(base: ResourceSet | null, head: ResourceSet): ResourceChange[] {
  const before = allResources(base);
  const after = allResources(head);
  const out: ResourceChange[] = [];
  for (const key of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const b = before.get(key);
    const a = after.get(key);
    const id = split(key);
    if (!b) out.push({ ...id, change: 'created', file: a!.file, fields: [] });
    else if (!a) out.push({ ...id, change: 'deleted', file: b.file, fields: [] });
    else if (b.value !== a.value) {
      // Files unchanged between the revisions share one cached parse, so identical resources are the same
      // object and cost nothing here.
      const fields: FieldChange[] = [];
      const strip = (v: unknown) => {
        const { status: _status, ...rest } = v as Record<string, unknown>;
        return rest;
      };
      diffValues(id.kind, [], strip(b.value), strip(a.value), fields);
      if (fields.length) out.push({ ...id, change: 'changed', file: a.file, fields });
    }
  }
  return out;
}
