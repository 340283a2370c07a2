/** Finds the Services a label selector selects without scanning every Service for every selector. */
import type { Service } from './kinds/index.ts';
import type { Located } from './resources.ts';
import { labelsMatch } from './selectors.ts';

export class ServiceIndex {
  private readonly byLabel = new Map<string, Located<Service>[]>();

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
  select(selector: Record<string, string>): Located<Service>[] {
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
  selectAny(selectors: readonly Record<string, string>[]): Located<Service>[] {
    const out = new Map<string, Located<Service>>();
    for (const sel of selectors) for (const s of this.select(sel)) out.set(s.key, s);
    return [...out.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
}
