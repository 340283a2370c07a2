/**
 * Process selectors: the key families the node agent attests, normalisation to sorted string lists, matching,
 * and the "at least as broad as" relation used to find two identities that claim the same process.
 */

/** Keys matched exactly. */
export const SELECTOR_KEYS = [
  'process:name',
  'process:cmdline',
  'process:binary:path',
  'process:uid',
  'process:gid',
  'destination:port',
  'k8s:pod:namespace',
  'k8s:pod:name',
  'k8s:container:name',
  'systemd:unit',
  'systemd:description',
] as const;

/** Families whose keys carry a name of their own (`k8s:label:app`, `docker:label:tier`, …). */
export const SELECTOR_PREFIXES = ['k8s:label:', 'docker:'] as const;

const NUMERIC_KEYS = new Set(['process:uid', 'process:gid', 'destination:port']);

export function isKnownSelectorKey(key: string): boolean {
  if ((SELECTOR_KEYS as readonly string[]).includes(key)) return true;
  return SELECTOR_PREFIXES.some((p) => key.startsWith(p) && key.length > p.length);
}

/** Checks one value of a selector key; returns a reason when it is not acceptable. */
export function checkSelectorValue(key: string, value: string | number): string | null {
  if (!NUMERIC_KEYS.has(key)) return null;
  const n = typeof value === 'number' ? value : /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(n) || n < 0)
    return `"${key}" takes a non-negative integer, not ${JSON.stringify(value)}`;
  if (key === 'destination:port' && (n < 1 || n > 65535))
    return `"${key}" must be a port, 1..65535 (got ${n})`;
  return null;
}

export type NormalizedSelector = Record<string, string[]>;

/** Sorted keys, each value as a sorted, de-duplicated list of strings: the form compile output and hashes use. */
export function normalizeSelector(
  map: Record<string, string | number | Array<string | number>>,
): NormalizedSelector {
  const out: NormalizedSelector = {};
  for (const key of Object.keys(map).sort()) {
    const raw = map[key]!;
    const values = (Array.isArray(raw) ? raw : [raw]).map(String);
    out[key] = [...new Set(values)].sort();
  }
  return out;
}

function valueCovered(key: string, broad: string[], narrow: string): boolean {
  // process:cmdline is a prefix match: a longer prefix selects a subset of the processes.
  if (key === 'process:cmdline') return broad.some((b) => narrow.startsWith(b));
  return broad.includes(narrow);
}

/** True when every process that `narrow` matches is also matched by `broad`. */
export function isAtLeastAsBroad(broad: NormalizedSelector, narrow: NormalizedSelector): boolean {
  for (const key in broad) {
    // Own keys only: a key named like `toString` (RT036) that `narrow` lacks is absent, not Object's method.
    const narrowValues = Object.hasOwn(narrow, key) ? narrow[key] : undefined;
    if (!narrowValues) return false;
    for (const v of narrowValues) if (!valueCovered(key, broad[key]!, v)) return false;
  }
  return true;
}

/** Does a label selector (all labels must match) select a Service with these labels? */
export function labelsMatch(selector: Record<string, string>, labels: Record<string, string>): boolean {
  for (const key in selector) if (labels[key] !== selector[key]) return false;
  return true;
}
