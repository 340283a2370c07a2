/**
 * Two identities that claim the same process in the same scope: one selector at least as broad as another's.
 *
 * Bounded on hostile input: identical selectors are grouped first (10,000 identities claiming
 * `process:name: node` cost one pass, not 50 million pairs), each remaining selector is compared only with
 * the selectors in its rarest (key, value) bucket, every claimed selector is reported at most once (so the
 * diagnostics stay linear), and a scope that still needs more than COMPARISON_BUDGET comparisons is cut
 * short with a warning that says so.
 */
import type { WorkloadIdentity } from './kinds/index.ts';
import type { Reporter } from './reporter.ts';
import type { Located } from './resources.ts';
import { isAtLeastAsBroad, type NormalizedSelector } from './selectors.ts';

export const COMPARISON_BUDGET = 2_000_000;

interface Claim {
  r: Located<WorkloadIdentity>;
  index: number;
  sel: NormalizedSelector;
}

const CMDLINE = 'process:cmdline';

export function checkClaims(rep: Reporter, entries: Claim[]) {
  const reported = new Set<Claim>();
  const report = (broad: Claim, narrow: Claim) => {
    if (reported.has(narrow) || narrow.r === broad.r) return;
    reported.add(narrow);
    rep.at(
      'RT047',
      `selector ${narrow.index} also matches every process that ${broad.r.key} claims with its selector ${broad.index} in the same scope; one process cannot hold both identities`,
      narrow.r,
      ['spec', 'selectors', narrow.index],
      {
        hint: 'make the selectors disjoint (add a distinguishing key such as k8s:label:app or process:cmdline)',
      },
    );
  };

  // Identical selectors: every later one of another identity is claimed by the first.
  const groups = new Map<string, Claim[]>();
  for (const e of entries) {
    const key = JSON.stringify(e.sel);
    const group = groups.get(key);
    if (group) group.push(e);
    else groups.set(key, [e]);
  }
  for (const group of groups.values()) {
    const owner = group.find((e) => e.r !== group[0]!.r) ? group[0]! : undefined;
    if (owner) for (const e of group.slice(1)) report(owner, e);
  }

  // One representative per group from here on; a broad representative covers its narrow one's whole group.
  const reps = [...groups.values()];
  const buckets = new Map<string, number[]>();
  reps.forEach((group, i) => {
    for (const [k, values] of Object.entries(group[0]!.sel)) {
      for (const b of k === CMDLINE ? [k] : values.map((v) => `${k}\u0000${v}`)) {
        const list = buckets.get(b);
        if (list) list.push(i);
        else buckets.set(b, [i]);
      }
    }
  });
  let budget = COMPARISON_BUDGET;
  for (const broadGroup of reps) {
    const broad = broadGroup[0]!;
    // A narrower selector holds every key of the broad one with a covered value: look only in the rarest bucket.
    let candidates: number[][] | undefined;
    let size = Number.POSITIVE_INFINITY;
    for (const [k, values] of Object.entries(broad.sel)) {
      const lists = (k === CMDLINE ? [k] : values.map((v) => `${k}\u0000${v}`)).map(
        (b) => buckets.get(b) ?? [],
      );
      const n = lists.reduce((sum, l) => sum + l.length, 0);
      if (n < size) [candidates, size] = [lists, n];
    }
    if (!candidates) continue;
    for (const list of candidates) {
      for (const i of list) {
        const narrowGroup = reps[i]!;
        if (narrowGroup === broadGroup) continue;
        if (--budget < 0) {
          rep.at(
            'RT047',
            `the selectors of this scope overlap in too many ways to compare every pair (more than ${COMPARISON_BUDGET} comparisons); the check stopped here, so processes may still be claimed twice`,
            broad.r,
            ['spec', 'scope'],
            {
              severity: 'warning',
              hint: 'give each identity a distinguishing selector key such as k8s:label:app',
            },
          );
          return;
        }
        if (!isAtLeastAsBroad(broad.sel, narrowGroup[0]!.sel)) continue;
        for (const narrow of narrowGroup) report(broad, narrow);
      }
    }
  }
}
