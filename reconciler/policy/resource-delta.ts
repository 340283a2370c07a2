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
 * no lookup for a resource that stayed where it was. `known(r)`: r was in `previous`. When resources that
 * stayed come in another order (not from git, whose trees are sorted), "first" and "last" claimants change
 * without any resource coming or going: `restart()` is called (the caller forgets what it kept) and every
 * resource of `now` comes back as added.
 */
export function diffResourceSets(
  previous: ResourceSet | null,
  now: ResourceSet,
  fields: readonly Field[],
  known: (r: object) => boolean,
  restart: () => void,
): ResourceDelta {
  const delta = walk(previous, now, fields, known);
  if (delta) return delta;
  restart();
  return walk(null, now, fields, () => false)!;
}

function walk(
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
/**
 * `run()`, or when it throws, `reset()` and the same throw: a render that stopped halfway left half its changes in
 * the indexes, so the next one starts from scratch.
 */
export function resetOnThrow<T>(run: () => T, reset: () => void): T {
  try {
    return run();
  } catch (err) {
    reset();
    throw err;
  }
}

/**
 * Positions of resources in `set`, kind by kind, each kind's map built on first use (only when a list of
 * claimants must merge new members with those that stayed).
 */
export function positionsIn(set: ResourceSet): (field: Field) => (r: object) => number {
  const positions = new Map<Field, Map<object, number>>();
  return (field) => (r) => {
    let map = positions.get(field);
    if (!map) {
      map = new Map();
      const list: readonly object[] = set[field];
      for (let i = 0; i < list.length; i++) map.set(list[i]!, i);
      positions.set(field, map);
    }
    return map.get(r)!;
  };
}

export class Claimants<T> {
  readonly lists = new Map<string, T[]>();
  /**
   * Per key changed in this render: the list as it was before (settle replaces a list, never changes one in
   * place, so the array kept here stays as it was).
   */
  readonly touched = new Map<string, readonly T[]>();
  readonly #removed = new Map<string, Set<T>>();
  #added = new Map<string, T[]>();

  remove(key: string, r: T): void {
    this.#touch(key);
    const gone = this.#removed.get(key);
    if (gone) gone.add(r);
    else this.#removed.set(key, new Set([r]));
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

  /** Forgets every list and any change not settled (a render that threw halfway). */
  reset(): void {
    this.lists.clear();
    this.touched.clear();
    this.#removed.clear();
    this.#added.clear();
  }
}

/**
 * Which dependents (checks, compiled parts) read the selection of which label selector, so that a Service that
 * came or went reaches only the dependents of the selectors that match it: each selector is found through one
 * of its `key\0value` pairs (a Service it matches has them all).
 */
export class SelectionWatch<D extends object> {
  readonly #dependents = new MultiMap<object, D>();
  readonly #byPair = new MultiMap<string, Record<string, string>>();
  readonly #watched = new Set<Record<string, string>>();

  watch(selector: Record<string, string>, dependent: D): void {
    if (this.#dependents.add(selector, dependent)) {
      this.#watched.add(selector);
      this.#index(selector, true);
    }
  }

  unwatch(selector: Record<string, string>, dependent: D): void {
    if (this.#dependents.delete(selector, dependent)) {
      this.#watched.delete(selector);
      this.#index(selector, false);
    }
  }

  /**
   * Adds to `into` the dependents of every watched selector that one of the Services with `changed` labels
   * matches. Through each Service's pairs while that visits fewer selectors than are watched; otherwise each
   * watched selector is looked up once among the changed Services by its rarest pair, so that M changed
   * Services never cost M times the selectors that share a label.
   */
  affected(changed: readonly Record<string, string>[], into: Set<D>): void {
    const found = (selector: Record<string, string>) =>
      this.#dependents.forEach(selector, (d) => into.add(d));
    let visits = 0;
    for (const labels of changed)
      for (const k of Object.keys(labels)) visits += this.#byPair.size(`${k}\u0000${labels[k]}`);
    if (visits <= this.#watched.size) {
      for (const labels of changed) {
        const visit = (selector: Record<string, string>) => {
          if (labelsMatch(selector, labels)) found(selector);
        };
        for (const k of Object.keys(labels)) this.#byPair.forEach(`${k}\u0000${labels[k]}`, visit);
      }
      return;
    }
    const byPair = new Map<string, Record<string, string>[]>();
    for (const labels of changed)
      for (const k of Object.keys(labels)) {
        const pair = `${k}\u0000${labels[k]}`;
        const list = byPair.get(pair);
        if (list) list.push(labels);
        else byPair.set(pair, [labels]);
      }
    for (const selector of this.#watched) {
      let smallest: readonly Record<string, string>[] = changed;
      for (const k of Object.keys(selector)) {
        const list = byPair.get(`${k}\u0000${selector[k]}`) ?? [];
        if (list.length < smallest.length) smallest = list;
      }
      if (smallest.some((labels) => labelsMatch(selector, labels))) found(selector);
    }
  }

  clear(): void {
    this.#dependents.clear();
    this.#watched.clear();
    this.#byPair.clear();
  }

  /** Indexed by its first pair: a Service it matches has them all (the schema refuses a selector without one). */
  #index(selector: Record<string, string>, add: boolean): void {
    const k = Object.keys(selector)[0]!;
    const pair = `${k}\u0000${selector[k]}`;
    if (add) this.#byPair.add(pair, selector);
    else this.#byPair.delete(pair, selector);
  }
}

/**
 * Values kept per key, each once (who read what): a key with one value holds it without a Set. Most keys have
 * one, and a Set per key was most of what the renders of 10,000 resources kept between them.
 */
export class MultiMap<K, V extends object> {
  readonly #map = new Map<K, V | Set<V>>();

  /** Adds `value` under `key`; true when the key had no value before. */
  add(key: K, value: V): boolean {
    const held = this.#map.get(key);
    if (held === undefined) {
      this.#map.set(key, value);
      return true;
    }
    if (held instanceof Set) held.add(value);
    else if (held !== value) this.#map.set(key, new Set([held, value]));
    return false;
  }

  /** Removes `value` from under `key`; true when the key has no value left. */
  delete(key: K, value: V): boolean {
    const held = this.#map.get(key);
    if (held === undefined) return false;
    if (held instanceof Set) {
      held.delete(value);
      if (held.size > 1) return false;
      const [last] = held;
      if (last === undefined) this.#map.delete(key);
      else this.#map.set(key, last);
      return last === undefined;
    }
    if (held !== value) return false;
    this.#map.delete(key);
    return true;
  }

  /** How many values are kept under `key`. */
  size(key: K): number {
    const held = this.#map.get(key);
    return held === undefined ? 0 : held instanceof Set ? held.size : 1;
  }

  forEach(key: K, visit: (value: V) => void): void {
    const held = this.#map.get(key);
    if (held === undefined) return;
    if (held instanceof Set) for (const v of [...held]) visit(v);
    else visit(held);
  }

  clear(): void {
    this.#map.clear();
  }
}
