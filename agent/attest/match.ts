/**
 * Matching labels against identities' selectors, with the policy language's semantics (riptides.md §2.2):
 * a selector map matches when every key matches (AND); an identity matches when any of its maps does (OR); a
 * key's list of values matches when any value does; `process:cmdline` is a prefix of the joined command line;
 * `process:uid` / `process:gid` compare as integers ("0100" is 100). `destination:port` is not a property of a
 * process: it limits the identity to connections to those ports (the data plane decides per connection), so a
 * map must name the process with at least one other key, or it matches nothing.
 *
 * Bytes of /proc that are not UTF-8 were decoded to U+FFFD (proc.ts); a selector value containing U+FFFD
 * matches nothing, so those bytes can never compare equal to a selector (a prefix still matches when the
 * invalid bytes come after it). A missing label (e.g. `k8s:*` for a process outside a pod, `systemd:description`
 * which is not collected) fails its key: unknown means no.
 */
import type { Labels } from './labels.ts';

/** A selector map as the compiler emits it (NormalizedSelector): key → sorted string values. */
export type Selector = Record<string, string[]>;

export interface IdentitySelectors {
  spiffeId: string;
  selectors: Selector[];
}

export const CMDLINE = 'process:cmdline';
export const DESTINATION_PORT = 'destination:port';
const NUMERIC = new Set(['process:uid', 'process:gid']);
const DIGITS = /^\d{1,15}$/;

function canonical(key: string, value: string): string {
  return NUMERIC.has(key) && DIGITS.test(value) ? String(Number(value)) : value;
}

function valueMatches(key: string, wanted: string, actual: string): boolean {
  // Selectors are text; U+FFFD is what bytes that are not text became (proc.ts), so it never matches.
  if (wanted.includes('\uFFFD')) return false;
  if (key === CMDLINE) return actual.startsWith(wanted);
  if (NUMERIC.has(key))
    return DIGITS.test(wanted) && DIGITS.test(actual) && Number(wanted) === Number(actual);
  return wanted === actual;
}

/** Ports of a `destination:port` list; null when one is not a port (the map then matches nothing). */
function portsOf(values: readonly string[]): number[] | null {
  const ports: number[] = [];
  for (const v of values) {
    const n = DIGITS.test(v) ? Number(v) : Number.NaN;
    if (!Number.isInteger(n) || n < 1 || n > 65535) return null;
    ports.push(n);
  }
  return ports.length ? [...new Set(ports)].sort((a, b) => a - b) : null;
}

/**
 * One selector map against labels: false when it does not match; otherwise the ports it is limited to
 * (`destination:port`), or null for every port.
 */
export function selectorMatch(labels: Labels, selector: Selector): number[] | null | false {
  let ports: number[] | null = null;
  let processKeys = 0;
  for (const key in selector) {
    const wanted = selector[key]!;
    if (key === DESTINATION_PORT) {
      const p = portsOf(wanted);
      if (!p) return false;
      ports = p;
      continue;
    }
    processKeys++;
    const actual = labels[key];
    if (!actual) return false;
    if (!wanted.some((w) => actual.some((a) => valueMatches(key, w, a)))) return false;
  }
  return processKeys === 0 ? false : ports;
}

/** Does any of the selector maps match (OR across the list)? `destination:port` is not decided here. */
export function matches(labels: Labels, selectors: readonly Selector[]): boolean {
  return selectors.some((s) => selectorMatch(labels, s) !== false);
}

export interface IdentityMatch {
  spiffeId: string;
  /** null: every destination port; else the ports `destination:port` limits the identity to. */
  destinationPorts: number[] | null;
}

/** An identity's match: the union of the ports of its matching maps (null as soon as one is unlimited). */
export function matchIdentity(labels: Labels, identity: IdentitySelectors): IdentityMatch | null {
  let matched = false;
  let ports: Set<number> | null = new Set();
  for (const s of identity.selectors) {
    const r = selectorMatch(labels, s);
    if (r === false) continue;
    matched = true;
    if (r === null) ports = null;
    else if (ports) for (const p of r) ports.add(p);
  }
  if (!matched) return null;
  return { spiffeId: identity.spiffeId, destinationPorts: ports ? [...ports].sort((a, b) => a - b) : null };
}

/** How a process's matches resolve (see ProcessRecord in kernel-module/control/abi.ts). */
export interface Resolution {
  spiffeId: string | null;
  destinationPorts: number[] | null;
  conflict: string[] | null;
  routes?: Array<{ spiffeId: string; destinationPorts: number[] }>;
}

export const UNMATCHED: Resolution = Object.freeze({
  spiffeId: null,
  destinationPorts: null,
  conflict: null,
});

/**
 * One identity: it. Several, each limited to ports no other one claims: per-port routes. Several that overlap
 * (on any port, or unlimited): a conflict naming them all, and no identity — never a silent pick.
 */
export function resolveMatches(found: readonly IdentityMatch[]): Resolution {
  if (found.length === 0) return UNMATCHED;
  if (found.length === 1)
    return { spiffeId: found[0]!.spiffeId, destinationPorts: found[0]!.destinationPorts, conflict: null };
  const sorted = [...found].sort((a, b) => (a.spiffeId < b.spiffeId ? -1 : a.spiffeId > b.spiffeId ? 1 : 0));
  const claimed = new Set<number>();
  let disjoint = true;
  for (const m of sorted) {
    if (m.destinationPorts === null) {
      disjoint = false;
      break;
    }
    for (const p of m.destinationPorts) {
      if (claimed.has(p)) disjoint = false;
      claimed.add(p);
    }
  }
  if (!disjoint) return { spiffeId: null, destinationPorts: null, conflict: sorted.map((m) => m.spiffeId) };
  return {
    spiffeId: null,
    destinationPorts: null,
    conflict: null,
    routes: sorted.map((m) => ({ spiffeId: m.spiffeId, destinationPorts: m.destinationPorts! })),
  };
}

/** Keys a map can be filed under: exact-match keys (not the prefix, not the port). */
function exactKeys(selector: Selector): string[] {
  return Object.keys(selector).filter((k) => k !== CMDLINE && k !== DESTINATION_PORT);
}

interface Entry {
  identity: number;
  selector: Selector;
}

/**
 * Many identities against many processes without comparing every pair: each selector map is filed under one
 * of its exact-match keys (the one whose values the fewest maps share), or under its command-line prefix when
 * it has no other key, and a
 * process only tries the maps filed under its own labels. Cost per process: its label count plus the distinct
 * prefix lengths, plus the candidates it meets — not the number of identities.
 */
export class SelectorIndex {
  readonly #identities: IdentitySelectors[];
  readonly #buckets = new Map<string, Entry[]>();
  readonly #prefixes = new Map<string, Entry[]>();
  readonly #prefixLengths: number[];

  constructor(identities: readonly IdentitySelectors[]) {
    this.#identities = [...identities];
    // File each map under its most selective exact key: the one whose values the fewest maps share.
    const counts = new Map<string, number>();
    const pair = (key: string, value: string) => `${key}\u0000${canonical(key, value)}`;
    for (const identity of this.#identities)
      for (const selector of identity.selectors)
        for (const key of exactKeys(selector))
          for (const v of selector[key]!) counts.set(pair(key, v), (counts.get(pair(key, v)) ?? 0) + 1);
    const lengths = new Set<number>();
    this.#identities.forEach((identity, i) => {
      for (const selector of identity.selectors) {
        const entry = { identity: i, selector };
        let anchor: string | null = null;
        let cost = Number.POSITIVE_INFINITY;
        for (const key of exactKeys(selector)) {
          const c = selector[key]!.reduce((sum, v) => sum + counts.get(pair(key, v))!, 0);
          if (c < cost) {
            cost = c;
            anchor = key;
          }
        }
        if (anchor) {
          for (const v of selector[anchor]!) {
            const list = this.#buckets.get(pair(anchor, v)) ?? [];
            list.push(entry);
            this.#buckets.set(pair(anchor, v), list);
          }
        } else if (selector[CMDLINE]) {
          for (const prefix of selector[CMDLINE]) {
            const list = this.#prefixes.get(prefix) ?? [];
            list.push(entry);
            this.#prefixes.set(prefix, list);
            lengths.add(prefix.length);
          }
        }
        // A map with neither (only destination:port, or empty) matches nothing: not filed.
      }
    });
    this.#prefixLengths = [...lengths].sort((a, b) => a - b);
  }

  get size(): number {
    return this.#identities.length;
  }

  /** The identities whose selectors match these labels, in SPIFFE ID order. */
  match(labels: Labels): IdentityMatch[] {
    const candidates = new Set<Entry>();
    for (const key in labels) {
      for (const value of labels[key]!) {
        const bucket = this.#buckets.get(`${key}\u0000${canonical(key, value)}`);
        if (bucket) for (const e of bucket) candidates.add(e);
      }
    }
    for (const cmdline of labels[CMDLINE] ?? []) {
      for (const length of this.#prefixLengths) {
        if (length > cmdline.length) break;
        const bucket = this.#prefixes.get(cmdline.slice(0, length));
        if (bucket) for (const e of bucket) candidates.add(e);
      }
    }
    if (candidates.size === 0) return [];
    const byIdentity = new Map<number, { ports: Set<number> | null }>();
    for (const e of candidates) {
      const r = selectorMatch(labels, e.selector);
      if (r === false) continue;
      const acc = byIdentity.get(e.identity);
      if (!acc) byIdentity.set(e.identity, { ports: r === null ? null : new Set(r) });
      else if (r === null) acc.ports = null;
      else if (acc.ports) for (const p of r) acc.ports.add(p);
    }
    const out: IdentityMatch[] = [];
    for (const [i, acc] of byIdentity)
      out.push({
        spiffeId: this.#identities[i]!.spiffeId,
        destinationPorts: acc.ports ? [...acc.ports].sort((a, b) => a - b) : null,
      });
    return out.sort((a, b) => (a.spiffeId < b.spiffeId ? -1 : a.spiffeId > b.spiffeId ? 1 : 0));
  }
}
