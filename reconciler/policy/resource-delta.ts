/**
 * What the renders that follow one another (reference-checks.ts, compile.ts) share to cost what changed between
 * two ResourceSets rather than what they hold: the resources that came and went (by object: a parsed file read
 * through the parse cache hands the same objects to every render), lists of claimants per key kept in set
 * order, and the selectors whose selection a Service that came or went may change.
 */
import type { ResourceSet } from './resource-set.ts';
import type { Located } from './resources.ts';
import { labelsMatch } from './selectors.ts';

export type Field = keyof ResourceSet;

export interface ResourceDelta {
  /** In set order, kind by kind. */
  added: Array<{ r: Located<unknown>; field: Field }>;
  removed: Array<{ r: Located<unknown>; field: Field }>;
}

/**
 * The resources of `fields` that came and went from `previous` to `now`, by object: one pointer walk per kind,
 * no lookup for a resource that stayed where it was. `known(r)`: r was in `previous`. null when resources that
 * stayed come in another order (not from git, whose trees are sorted), since "first" and "last" claimants
 * then change without any resource coming or going.
 */
export function diffResourceSets(
  previous: ResourceSet | null,
  now: ResourceSet,
  fields: readonly Field[],
  known: (r: object) => boolean,
): ResourceDelta | null {
  const added: ResourceDelta['added'] = [];
  const removed: ResourceDelta['removed'] = [];
  for (const field of fields) {
    const list = now[field] as readonly Located<unknown>[];
    const old = (previous?.[field] ?? []) as readonly Located<unknown>[];
    if (list === old) continue;
    let j = 0;
    for (const r of list) {
      if (!known(r)) {
        added.push({ r, field });
        continue;
      }
      while (j < old.length && old[j] !== r) removed.push({ r: old[j++]!, field });
      if (j === old.length) return null;
      j++;
    }
    while (j < old.length) removed.push({ r: old[j++]!, field });
  }
  return { added, removed };
}

/** Lists of claimants (set order) kept per key, with the keys whose list changed in this render. */
export class Claimants<T> {
  readonly lists = new Map<string, T[]>();
  /** Per key changed in this render: what the list was before it (a copy made at the first change). */
  readonly touched = new Map<string, readonly T[]>();
  #removed = new Map<string, Set<T>>();
  #added = new Map<string, T[]>();

  remove(key: string, r: T): void {
    this.#touch(key);
    setOf(this.#removed, key).add(r);
  }

  add(key: string, r: T): void {
    this.#touch(key);
    const list = this.#added.get(key);
    if (list) list.push(r);
    else this.#added.set(key, [r]);
  }

  #touch(key: string): void {
    if (!this.touched.has(key)) this.touched.set(key, this.lists.get(key) ?? []);
  }

  /**
   * Applies the removals and additions, all of one key at once (a file of 10,000 copies of one name costs one
   * pass over its list, not one per copy). Additions arrive in set order; merged with the members that stayed
   * by their position in the set (`position`, asked only when both are there).
   */
  settle(position: (r: T) => number): void {
    for (const key of this.touched.keys()) {
      const gone = this.#removed.get(key);
      const before = this.lists.get(key) ?? [];
      let list = gone ? before.filter((r) => !gone.has(r)) : before;
      const added = this.#added.get(key);
      if (added) {
        if (list.length === 0) list = added;
        else {
          list = list === before ? [...list, ...added] : list.concat(added);
          list.sort((a, b) => position(a) - position(b));
        }
      }
      if (list.length) this.lists.set(key, list);
      else this.lists.delete(key);
    }
    this.#removed.clear();
    this.#added.clear();
  }

  /** Ends a render: nothing is touched. */
  clear(): void {
    this.touched.clear();
  }
}

/**
 * Which dependents (checks, compiled parts) read the selection of which label selector, so that a Service that
 * came or went reaches only the dependents of the selectors that match it: each selector is found through one
 * of its `key\0value` pairs (a Service it matches has them all), a selector with no label is matched by every
 * Service.
 */
export class SelectionWatch<D> {
  readonly #dependents = new Map<object, Set<D>>();
  readonly #byPair = new Map<string, Set<Record<string, string>>>();
  readonly #ofAll = new Set<Record<string, string>>();

  watch(selector: Record<string, string>, dependent: D): void {
    if (!this.#dependents.has(selector)) this.#index(selector, true);
    setOf(this.#dependents, selector).add(dependent);
  }

  unwatch(selector: Record<string, string>, dependent: D): void {
    const dependents = this.#dependents.get(selector);
    if (dependents?.delete(dependent) && dependents.size === 0) {
      this.#dependents.delete(selector);
      this.#index(selector, false);
    }
  }

  /** Adds to `into` the dependents of every watched selector that a Service with `labels` matches. */
  affected(labels: Record<string, string>, into: Set<D>): void {
    const visit = (selector: Record<string, string>) => {
      if (!labelsMatch(selector, labels)) return;
      for (const d of this.#dependents.get(selector)!) into.add(d);
    };
    for (const selector of this.#ofAll) visit(selector);
    for (const k of Object.keys(labels)) {
      const selectors = this.#byPair.get(`${k}\u0000${labels[k]}`);
      if (selectors) for (const selector of selectors) visit(selector);
    }
  }

  clear(): void {
    this.#dependents.clear();
    this.#byPair.clear();
    this.#ofAll.clear();
  }

  #index(selector: Record<string, string>, add: boolean): void {
    const k = Object.keys(selector)[0];
    if (k === undefined) {
      if (add) this.#ofAll.add(selector);
      else this.#ofAll.delete(selector);
      return;
    }
    const pair = `${k}\u0000${selector[k]}`;
    if (add) setOf(this.#byPair, pair).add(selector);
    else {
      const selectors = this.#byPair.get(pair);
      if (selectors?.delete(selector) && selectors.size === 0) this.#byPair.delete(pair);
    }
  }
}

/** The set kept at `key` in `map`, made empty on first use. */
export function setOf<K, V>(map: Map<K, Set<V>>, key: K): Set<V> {
  let set = map.get(key);
  if (!set) {
    set = new Set();
    map.set(key, set);
  }
  return set;
}
