/**
 * Resource changes between two revisions: per `Kind/namespace/name`, created (with its body) / changed (field by
 * field) / deleted. Both sides are masked by schema path (policy/secret-fields.ts) before anything is compared,
 * so secret values become digests before any shape of change can carry them.
 */

import { committedDigest } from '../credentials/fingerprint.ts';
import type { ResourceSet } from '../policy/resource-set.ts';
import type { Located } from '../policy/resources.ts';
import { holdsMasked, Masked, maskSecretFields, shownValue } from '../policy/secret-fields.ts';

export type Change = 'created' | 'changed' | 'deleted';

export interface FieldChange {
  path: string;
  before?: unknown;
  after?: unknown;
  /** For lists of plain values: what entered and what left. */
  added?: unknown[];
  removed?: unknown[];
  /** True when before/after are digests of secret values (`sha256:…`, `**SOPS** …`). */
  secret?: boolean;
}

export interface ResourceChange {
  kind: string;
  namespace: string;
  name: string;
  change: Change;
  file: string;
  /** Changed: the fields that differ. Created: the body, one field per leaf (`after` only). Deleted: none. */
  fields: FieldChange[];
}

type AnyLocated = Located<{ kind: string; metadata: { name: string; namespace?: string | undefined } }>;

function allResources(set: ResourceSet | null): Map<string, AnyLocated> {
  const out = new Map<string, AnyLocated>();
  if (!set) return out;
  for (const list of Object.values(set) as AnyLocated[][]) for (const r of list) out.set(r.key, r);
  return out;
}

const isPlain = (v: unknown) => v === null || typeof v !== 'object';
const isMap = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Masked);

/** `spec.selectors[0].process:name` from ['spec', 'selectors', '[0]', 'process:name']. */
function showPath(path: string[]): string {
  return path.reduce((s, p) => (p.startsWith('[') ? s + p : s ? `${s}.${p}` : p), '') || '(root)';
}

function leaf(path: string[], before: unknown, after: unknown): FieldChange {
  const change: FieldChange = { path: showPath(path) };
  if (before !== undefined) change.before = shownValue(before);
  if (after !== undefined) change.after = shownValue(after);
  if (holdsMasked(before) || holdsMasked(after)) change.secret = true;
  return change;
}

/**
 * Appends the differences between two masked values. A side that is absent is expanded leaf by leaf (maps and
 * lists of maps), so a map added or removed whole reads like a created body, one line per field.
 */
function diffValues(path: string[], before: unknown, after: unknown, out: FieldChange[]): void {
  if (before === after) return;
  if (before instanceof Masked || after instanceof Masked) {
    if (before instanceof Masked && after instanceof Masked && before.shown === after.shown) return;
    out.push(leaf(path, before, after));
    return;
  }
  if (Array.isArray(before) && Array.isArray(after) && before.every(isPlain) && after.every(isPlain)) {
    const [inBefore, inAfter] = [new Set(before), new Set(after)]; // linear, whatever the lists' length
    const added = after.filter((v) => !inBefore.has(v));
    const removed = before.filter((v) => !inAfter.has(v));
    if (added.length || removed.length) out.push({ path: showPath(path), added, removed });
    else if (before.join('\u0000') !== after.join('\u0000'))
      out.push({ path: showPath(path), before, after });
    return;
  }
  const expandable = (v: unknown) =>
    v === undefined || isMap(v) || (Array.isArray(v) && !v.every(isPlain) && v.length > 0);
  if (Array.isArray(before) || Array.isArray(after)) {
    if (
      (Array.isArray(before) || before === undefined) &&
      (Array.isArray(after) || after === undefined) &&
      expandable(before) &&
      expandable(after)
    ) {
      const b = (before ?? []) as unknown[];
      const a = (after ?? []) as unknown[];
      for (let i = 0; i < Math.max(b.length, a.length); i++) diffValues([...path, `[${i}]`], b[i], a[i], out);
      return;
    }
  } else if ((isMap(before) || before === undefined) && (isMap(after) || after === undefined)) {
    const b = (before ?? {}) as Record<string, unknown>;
    const a = (after ?? {}) as Record<string, unknown>;
    if (
      (before === undefined) !== (after === undefined) &&
      !Object.keys(b).length &&
      !Object.keys(a).length
    ) {
      out.push(leaf(path, before, after)); // an empty map added or removed, e.g. `sysfs: {}`
      return;
    }
    // Own keys only: a key named like `constructor` on one side is absent on the other, not Object's.
    const own = (m: Record<string, unknown>, key: string) => (Object.hasOwn(m, key) ? m[key] : undefined);
    for (const key of [...new Set([...Object.keys(b), ...Object.keys(a)])].sort())
      diffValues([...path, key], own(b, key), own(a, key), out);
    return;
  }
  out.push(leaf(path, before, after));
}

function split(key: string): { kind: string; namespace: string; name: string } {
  const [kind, namespace, ...rest] = key.split('/');
  return { kind: kind!, namespace: namespace!, name: rest.join('/') };
}

/** The resource as compared and shown: `status` (written by the reconciler) left out, secrets masked. */
function comparable(kind: string, value: unknown): Record<string, unknown> {
  const { status: _status, ...rest } = value as Record<string, unknown>;
  return maskSecretFields(kind, rest, committedDigest) as Record<string, unknown>;
}

/** A created resource's body: everything but what its `Kind/namespace/name` header already says. */
function body(kind: string, value: unknown): Record<string, unknown> {
  const { apiVersion: _a, kind: _k, metadata, ...rest } = comparable(kind, value);
  const { name: _n, namespace: _ns, ...meta } = (metadata ?? {}) as Record<string, unknown>;
  return Object.keys(meta).length ? { metadata: meta, ...rest } : rest;
}

export function diffResources(base: ResourceSet | null, head: ResourceSet): ResourceChange[] {
  const before = allResources(base);
  const after = allResources(head);
  const out: ResourceChange[] = [];
  for (const key of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const b = before.get(key);
    const a = after.get(key);
    const id = split(key);
    if (!b) {
      const fields: FieldChange[] = [];
      diffValues([], undefined, body(id.kind, a!.value), fields);
      out.push({ ...id, change: 'created', file: a!.file, fields });
    } else if (!a) out.push({ ...id, change: 'deleted', file: b.file, fields: [] });
    else if (b.value !== a.value) {
      // Files unchanged between the revisions share one cached parse, so identical resources are the same
      // object and cost nothing here.
      const fields: FieldChange[] = [];
      diffValues([], comparable(id.kind, b.value), comparable(id.kind, a.value), fields);
      if (fields.length) out.push({ ...id, change: 'changed', file: a.file, fields });
    }
  }
  return out;
}
