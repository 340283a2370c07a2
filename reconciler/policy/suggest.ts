/**
 * "Did you mean" hints: the closest known name within a small edit distance (common/edit-distance.ts).
 *
 * The search is bounded, because a repository decides both how many names there are and how many
 * diagnostics ask: a set of up to FULL_SCAN names is compared in full; a larger one is indexed once
 * (`Suggestions`) in two sorted orders, by the name and by the name reversed, and a query compares only the
 * WINDOW names on each side of where it would sort in each order. A typo keeps either the part before it or
 * the part after it, so the intended name sorts next to the query in at least one order unless many names
 * share that very part; each query costs O(log n + 4·WINDOW) banded comparisons, whatever n is. The price:
 * a typo whose both sides are shared by more than WINDOW names (`team-47x11` among `team-0` … `team-9999`)
 * may get a farther suggestion, or none.
 */
import { editDistance } from '../common/edit-distance.ts';

const FULL_SCAN = 256;
const WINDOW = 8;

/** How far a name may be from the input to be suggested: a third of its length, 1 to 3 edits. */
function limitFor(input: string): number {
  return Math.max(1, Math.min(3, Math.floor(input.length / 3)));
}

const reverse = (s: string) => [...s].reverse().join('');

function lowerBound(sorted: readonly number[], keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (keys[sorted[mid]!]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A set of known names indexed once for many "did you mean" queries. */
export class Suggestions {
  readonly #names: string[];
  readonly #lower: string[];
  readonly #exact = new Map<string, number>();
  #forward: number[] | undefined;
  #reversed: string[] | undefined;
  #backward: number[] | undefined;

  constructor(known: Iterable<string>) {
    this.#names = [...known];
    this.#lower = this.#names.map((n) => n.toLowerCase());
    this.#lower.forEach((n, i) => {
      if (!this.#exact.has(n)) this.#exact.set(n, i);
    });
  }

  get size(): number {
    return this.#names.length;
  }

  /** The known name closest to `input` (case-insensitive match first; ties go to the earlier name). */
  closest(input: string): string | undefined {
    const lower = input.toLowerCase();
    const exact = this.#exact.get(lower);
    if (exact !== undefined) return this.#names[exact];
    const limit = limitFor(input);
    let best = -1;
    let bestDistance = limit + 1;
    const consider = (i: number) => {
      const d = editDistance(lower, this.#lower[i]!, limit);
      if (d < bestDistance || (d === bestDistance && d <= limit && i < best)) {
        best = i;
        bestDistance = d;
      }
    };
    if (this.#names.length <= FULL_SCAN) {
      for (let i = 0; i < this.#names.length; i++) consider(i);
    } else {
      this.#index();
      const around = (order: number[], keys: string[], key: string) => {
        const at = lowerBound(order, keys, key);
        for (let p = Math.max(0, at - WINDOW); p < Math.min(order.length, at + WINDOW); p++)
          consider(order[p]!);
      };
      around(this.#forward!, this.#lower, lower);
      around(this.#backward!, this.#reversed!, reverse(lower));
    }
    return best === -1 ? undefined : this.#names[best];
  }

  didYouMean(input: string): string | undefined {
    const match = this.closest(input);
    return match === undefined ? undefined : `did you mean "${match}"?`;
  }

  #index(): void {
    if (this.#forward) return;
    const ids = this.#lower.map((_, i) => i);
    const byKey = (keys: string[]) => (x: number, y: number) =>
      keys[x]! < keys[y]! ? -1 : keys[x]! > keys[y]! ? 1 : x - y;
    this.#reversed = this.#lower.map(reverse);
    this.#forward = [...ids].sort(byKey(this.#lower));
    this.#backward = [...ids].sort(byKey(this.#reversed));
  }
}

/**
 * The known name closest to `input`, or undefined when none is close enough. With a plain list this is one
 * linear pass (exact); code that asks about the same names once per diagnostic must pass a `Suggestions`
 * built once instead, or the checks turn quadratic in the size of the repository.
 */
export function closest(input: string, known: Iterable<string> | Suggestions): string | undefined {
  if (known instanceof Suggestions) return known.closest(input);
  const lower = input.toLowerCase();
  const limit = limitFor(input);
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const candidate of known) {
    const c = candidate.toLowerCase();
    if (c === lower) return candidate;
    const d = editDistance(lower, c, limit);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

export function didYouMean(input: string, known: Iterable<string> | Suggestions): string | undefined {
  const match = closest(input, known);
  return match === undefined ? undefined : `did you mean "${match}"?`;
}
