/**
 * The one edit distance: Levenshtein (insert, delete, substitute; each costs 1) on UTF-16 code units.
 *
 * With a finite `limit` only the diagonal band |i − j| ≤ limit is computed (Ukkonen's cut-off), and the
 * answer is `limit + 1` as soon as it must exceed the limit: a comparison costs O(|a| · (2·limit + 1)), so
 * "did you mean" over long, similar names (SPIFFE IDs) stays cheap.
 */
export function editDistance(a: string, b: string, limit = Number.POSITIVE_INFINITY): number {
  if (a === b) return 0;
  const n = a.length;
  const m = b.length;
  if (Math.abs(n - m) > limit) return limit + 1;
  const k = Math.min(limit, Math.max(n, m));
  const out = k + 1; // any value > k behaves the same
  let prev = new Array<number>(m + 1).fill(out);
  let cur = new Array<number>(m + 1).fill(out);
  for (let j = 0; j <= Math.min(m, k); j++) prev[j] = j;
  for (let i = 1; i <= n; i++) {
    const lo = Math.max(1, i - k);
    const hi = Math.min(m, i + k);
    cur[lo - 1] = lo === 1 ? i : out;
    let rowMin = cur[lo - 1]!;
    const ca = a.charCodeAt(i - 1);
    for (let j = lo; j <= hi; j++) {
      const cost = ca === b.charCodeAt(j - 1) ? 0 : 1;
      let v = prev[j - 1]! + cost;
      const up = prev[j]! + 1;
      const left = cur[j - 1]! + 1;
      if (up < v) v = up;
      if (left < v) v = left;
      cur[j] = v;
      if (v < rowMin) rowMin = v;
    }
    // The next row reads one cell past this band: it must not see a stale value from two rows back.
    if (hi + 1 <= m) cur[hi + 1] = out;
    if (rowMin > k) return limit + 1;
    [prev, cur] = [cur, prev];
  }
  const d = prev[m]!;
  return d > limit ? limit + 1 : d;
}
