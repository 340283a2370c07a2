/** Finds the Services a label selector selects without scanning every Service for every selector. */
import type { Service } from './kinds/index.ts';
import type { Located } from './resources.ts';
import { labelsMatch } from './selectors.ts';

/**
 * An index of Services by label. What a selector (or list of selectors) selected is remembered by the
 * selector's object: a parsed file read through the parse cache hands the same objects to every render, so
 * an index kept across renders (ServiceIndexMemo) answers an unchanged selector without selecting again.
 * The arrays returned are shared: callers read them and never change them.
 */
export class ServiceIndex {
  private readonly byLabel = new Map<string, Located<Service>[]>();
  readonly #selected = new WeakMap<object, readonly Located<Service>[]>();
  readonly #selectedAny = new WeakMap<object, readonly Located<Service>[]>();

  constructor(readonly services: readonly Located<Service>[]) {
    for (const s of services) {
      for (const [k, v] of Object.entries(s.value.spec.labels)) {
        const key = `${k}\u0000${v}`;
        const list = this.byLabel.get(key);
        if (list) list.push(s);
        else this.byLabel.set(key, [s]);
      }
    }
  }

  /** Services whose labels include every label of the selector. */
  select(selector: Record<string, string>): readonly Located<Service>[] {
    let hits = this.#selected.get(selector);
    if (!hits) {
      hits = this.#select(selector);
      this.#selected.set(selector, hits);
    }
    return hits;
  }

  #select(selector: Record<string, string>): Located<Service>[] {
    let smallest: Located<Service>[] | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const list = this.byLabel.get(`${k}\u0000${v}`);
      if (!list) return [];
      if (!smallest || list.length < smallest.length) smallest = list;
    }
    if (!smallest) return [];
    return smallest.filter((s) => labelsMatch(selector, s.value.spec.labels));
  }

  /** Services selected by any selector of the list (OR), each once, in a stable order. */
  selectAny(selectors: readonly Record<string, string>[]): readonly Located<Service>[] {
    let hits = this.#selectedAny.get(selectors);
    if (!hits) {
      const out = new Map<string, Located<Service>>();
      for (const sel of selectors) for (const s of this.select(sel)) out.set(s.key, s);
      hits = [...out.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      this.#selectedAny.set(selectors, hits);
    }
    return hits;
  }
}

/**
 * The ServiceIndex of the last render, kept while the Services are the very same parsed objects in the same
 * order (a commit that touches no Service): its remembered selections stay right, and a one-file pass over
 * 10,000 resources neither rebuilds the index nor selects again for the 9,999 resources it did not change.
 */
export class ServiceIndexMemo {
  #index: ServiceIndex | undefined;

  /** The kept index when `services` holds the same objects as its own, else a new one (kept from now). */
  indexFor(services: readonly Located<Service>[]): ServiceIndex {
    const kept = this.#index?.services;
    if (kept && kept.length === services.length && services.every((s, i) => s === kept[i]))
      return this.#index!;
    this.#index = new ServiceIndex(services);
    return this.#index;
  }
}
