/** Finds the Services a label selector selects without scanning every Service for every selector. */
import type { Service } from './kinds/index.ts';
import type { Located } from './resources.ts';
import { labelsMatch } from './selectors.ts';

type Selection = { epoch: number; hits: readonly Located<Service>[] };

/** Past this many Services come or gone since a selection was made, it is made again rather than checked. */
const MAX_CHANGES_CHECKED = 64;
/** Updates whose changes are remembered (a selection older than that is made again). */
const EPOCHS_KEPT = 16;

/**
 * An index of Services by label that can follow the next revision's Services (update) and remembers what each
 * selector selected, by the selector's object: a parsed file read through the parse cache hands the same
 * objects to every render. A remembered selection stays right while no Service that the selector matches
 * came or went; it is checked against the Services that did since it was made (or last found right), so a
 * one-file pass over 10,000 resources selects again only for the selectors that match a Service in that file,
 * even when every Service carries a common label (`tier: backend`). A remembered selection stays the same
 * array while it is right: compile compares selections by identity (compile.ts).
 *
 * Selections list Services in the order of the list given (as a fresh index would). The arrays returned are
 * shared: callers read them and never change them.
 */
export class ServiceIndex {
  readonly #byLabel = new Map<string, Set<Located<Service>>>();
  #position = new Map<Located<Service>, number>();
  /** The labels of the Services that came or went, by the update that saw it, oldest first. */
  #changes: Array<{ epoch: number; labels: Record<string, string> }> = [];
  /** Changes up to this epoch are forgotten: a selection made before it is made again. */
  #forgotten = 0;
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
    const floor = this.#epoch - EPOCHS_KEPT;
    if (this.#changes.length && this.#changes[0]!.epoch <= floor) {
      this.#changes = this.#changes.filter((c) => c.epoch > floor);
      this.#forgotten = floor;
    }
    if (reordered) {
      this.#selected = new WeakMap();
      this.#selectedAny = new WeakMap();
    }
  }

  #touch(s: Located<Service>, add: boolean): void {
    const labels = s.value.spec.labels;
    this.#changes.push({ epoch: this.#epoch, labels });
    for (const [k, v] of Object.entries(labels)) {
      const key = `${k}\u0000${v}`;
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

  /**
   * No Service the selector matches came or went since the selection was made (then it is moved to now, so
   * the next check starts here).
   */
  #current(selectors: readonly Record<string, string>[], kept: Selection): boolean {
    if (kept.epoch === this.#epoch) return true;
    if (kept.epoch < this.#forgotten) return false;
    let checked = 0;
    for (let i = this.#changes.length - 1; i >= 0; i--) {
      const change = this.#changes[i]!;
      if (change.epoch <= kept.epoch) break;
      if (++checked > MAX_CHANGES_CHECKED) return false;
      for (const sel of selectors) if (labelsMatch(sel, change.labels)) return false;
    }
    kept.epoch = this.#epoch;
    return true;
  }

  /** Services whose labels include every label of the selector. */
  select(selector: Record<string, string>): readonly Located<Service>[] {
    const kept = this.#selected.get(selector);
    if (kept && this.#current([selector], kept)) return kept.hits;
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
    if (kept && this.#current(selectors, kept)) return kept.hits;
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
