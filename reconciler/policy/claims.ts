/** Two identities that claim the same process in the same scope: one selector at least as broad as another's. */
import type { WorkloadIdentity } from './kinds/index.ts';
import type { Reporter } from './reporter.ts';
import type { Located } from './resources.ts';
import { isAtLeastAsBroad, type NormalizedSelector } from './selectors.ts';

export function checkClaims(
  rep: Reporter,
  entries: Array<{ r: Located<WorkloadIdentity>; index: number; sel: NormalizedSelector }>,
) {
  // Index by (key, value) so each selector is compared only with those that could be narrower than it.
  const index = new Map<string, number[]>();
  entries.forEach((e, i) => {
    for (const [k, values] of Object.entries(e.sel)) {
      const bucket = k === 'process:cmdline' ? [k] : values.map((v) => `${k}\u0000${v}`);
      for (const b of bucket) {
        const list = index.get(b) ?? [];
        list.push(i);
        index.set(b, list);
      }
    }
  });
  const reported = new Set<string>();
  entries.forEach((broad) => {
    const keys = Object.keys(broad.sel);
    const anchorKey = keys.find((k) => k !== 'process:cmdline') ?? keys[0];
    if (anchorKey === undefined) return;
    const candidates = new Set<number>();
    const buckets =
      anchorKey === 'process:cmdline'
        ? [anchorKey]
        : broad.sel[anchorKey]!.map((v) => `${anchorKey}\u0000${v}`);
    for (const b of buckets) for (const i of index.get(b) ?? []) candidates.add(i);
    for (const i of candidates) {
      const narrow = entries[i]!;
      if (narrow.r === broad.r) continue;
      const pair = [broad.r.key, narrow.r.key].sort().join('|');
      if (reported.has(pair) || !isAtLeastAsBroad(broad.sel, narrow.sel)) continue;
      reported.add(pair);
      rep.at(
        'RT047',
        `selector ${narrow.index} also matches every process that ${broad.r.key} claims with its selector ${broad.index} in the same scope; one process cannot hold both identities`,
        narrow.r,
        ['spec', 'selectors', narrow.index],
        {
          hint: 'make the selectors disjoint (add a distinguishing key such as k8s:label:app or process:cmdline)',
        },
      );
    }
  });
}
