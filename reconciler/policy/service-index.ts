/** Finds the Services a label selector selects without scanning every Service for every selector. */
import type { Service } from './kinds/index.ts';
import type { Located } from './resources.ts';
import { labelsMatch } from './selectors.ts';

type Selection = { epoch: number; hits: readonly Located<Service>[] };

/**
 * An index of Services by label that can follow the next revision's Services (update) and remembers what each
 * selector selected, by the selector's object: a parsed file read through the parse cache hands the same
 * objects to every render. A remembered selection stays right while no Service carrying one of its labels
 * came or went (a Service a selector matches carries all of its labels), so a one-file pass over 10,000
 * resources selects again only for the selectors that name a label of a Service in that file.
 *
 * Selections list Services in the order of the list given (as a fresh index would). The arrays returned are
 * shared: callers read them and never change them.
 */
export class ServiceIndex {
  readonly #byLabel = new Map<string, Set<Located<Service>>>();
  #position = new Map<Located<Service>, number>();
  /** Per `label\0value`, the epoch in which a Service carrying it last came or went. */
  readonly #labelEpoch = new Map<string, number>();
  #epoch = 0;
  #selected = new WeakMap<object, Selection>();
  #selectedAny = new WeakMap<object, Selection>();

  constructor(services: readonly Located<Service>[]) {
    this.update(services);
  }

  /** The Services of the next revision: only those that came or went (by object) are indexed again. */
  update(services: readonly Located<Service>[]): void {
    const previous = this.#position;
    const position = new Map<Located<Service>, number>();
    // Services that stay but in another order (not from git, whose trees are sorted): kept selections
    // would list them in the old order, so none is kept.
    let last = -1;
    let reordered = false;
    for (let i = 0; i < services.length; i++) {
      const s = services[i]!;
      position.set(s, i);
      const before = previous.get(s);
      if (before !== undefined) {
        if (before < last) reordered = true;
        last = before;
      }
    }
    this.#position = position;
    this.#epoch++;
    for (const s of previous.keys()) if (!position.has(s)) this.#touch(s, false);
    for (const s of services) if (!previous.has(s)) this.#touch(s, true);
    // Label values that churn (a commit id in a label) would grow the epochs without bound: past twice the
    // labels in use, start over, dropping every kept selection with them.
    if (reordered || this.#labelEpoch.size > 2 * this.#byLabel.size + 1024) {
      this.#selected = new WeakMap();
      this.#selectedAny = new WeakMap();
      this.#labelEpoch.clear();
    }
  }

  #touch(s: Located<Service>, add: boolean): void {
    for (const [k, v] of Object.entries(s.value.spec.labels)) {
      const key = `${k}\u0000${v}`;
      this.#labelEpoch.set(key, this.#epoch);
      let set = this.#byLabel.get(key);
      if (!set) {
        if (!add) continue;
        set = new Set();
        this.#byLabel.set(key, set);
      }
      if (add) set.add(s);
      else if (set.delete(s) && set.size === 0) this.#byLabel.delete(key);
    }
  }

  /** No Service with one of the selector's labels came or went since `epoch`. */
  #current(selector: Record<string, string>, epoch: number): boolean {
    for (const k in selector)
      if ((this.#labelEpoch.get(`${k}\u0000${selector[k]}`) ?? 0) > epoch) return false;
    return true;
  }

  /** Services whose labels include every label of the selector. */
  select(selector: Record<string, string>): readonly Located<Service>[] {
    const kept = this.#selected.get(selector);
    if (kept && this.#current(selector, kept.epoch)) return kept.hits;
    let smallest: Set<Located<Service>> | undefined;
    let none = false;
    for (const k in selector) {
      const set = this.#byLabel.get(`${k}\u0000${selector[k]}`);
      if (!set) none = true;
      else if (!smallest || set.size < smallest.size) smallest = set;
    }
    const hits: Located<Service>[] = [];
    if (smallest && !none)
      for (const s of smallest) if (labelsMatch(selector, s.value.spec.labels)) hits.push(s);
    hits.sort((a, b) => this.#position.get(a)! - this.#position.get(b)!);
    this.#selected.set(selector, { epoch: this.#epoch, hits });
    return hits;
  }

  /** Services selected by any selector of the list (OR), each once, in a stable order. */
  selectAny(selectors: readonly Record<string, string>[]): readonly Located<Service>[] {
    const kept = this.#selectedAny.get(selectors);
    if (kept && selectors.every((sel) => this.#current(sel, kept.epoch))) return kept.hits;
    const out = new Map<string, Located<Service>>();
    for (const sel of selectors) for (const s of this.select(sel)) out.set(s.key, s);
    const hits = [...out.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    this.#selectedAny.set(selectors, { epoch: this.#epoch, hits });
    return hits;
  }
}

/**
 * One ServiceIndex followed from render to render (see ServiceIndex.update): kept in the compile memo, shared by
 * validation and compile.
 */
export class ServiceIndexMemo {
  #index: ServiceIndex | undefined;
  #services: readonly Located<Service>[] | undefined;

  /** The index, brought to `services` (nothing to do when it is the list it was last brought to). */
  indexFor(services: readonly Located<Service>[]): ServiceIndex {
    if (!this.#index) this.#index = new ServiceIndex(services);
    else if (this.#services !== services) this.#index.update(services);
    this.#services = services;
    return this.#index;
  }
}
