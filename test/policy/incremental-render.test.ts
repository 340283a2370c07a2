/**
 * Renders through one CompileMemo (reference-checks.ts, compile.ts, resource-delta.ts) in the shapes the random
 * sequences do not reach: a render that throws halfway, one parsed file given twice, and many Services coming
 * and going under selectors that share a common first label (a path that was quadratic).
 */
import { describe, expect, it, vi } from 'vitest';
import { CompileMemo, serializePrograms } from '../../reconciler/policy/compile.ts';
import { type RenderInput, type RenderOptions, renderPolicy } from '../../reconciler/policy/render.ts';
import { labelsMatch } from '../../reconciler/policy/selectors.ts';

// A pass-through spy: counts the selector comparisons of a render (service-index.ts, resource-delta.ts).
vi.mock('../../reconciler/policy/selectors.ts', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../../reconciler/policy/selectors.ts')>();
  return { ...mod, labelsMatch: vi.fn(mod.labelsMatch) };
});

const TD = 'example.org';
const enc = (s: string) => new TextEncoder().encode(s);
const head = (kind: string, name: string) =>
  `apiVersion: core.riptides.io/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\n  namespace: team\n`;
const identity = `${head('WorkloadIdentity', 'i')}spec:\n  workloadID: apps/a\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: p\n`;
const source = (name: string) =>
  `${head('CredentialSource', name)}spec:\n  kubernetes:\n    secretRef:\n      name: k\n      key: token\n    type: BearerToken\n`;
const binding = (sourceName: string) =>
  `${head('CredentialBinding', 'b')}spec:\n  workloadID: apps/a\n  credentialSource: ${sourceName}\n  propagation:\n    sysfs: {}\n`;
/** Content-addressed ids, as git blob ids are. */
const file = (path: string, text: string): RenderInput => ({ path, id: `${path}:${text}`, bytes: enc(text) });

/** What a render gives, or the message of what it threw. */
function outcome(inputs: readonly RenderInput[], opts: RenderOptions): string {
  try {
    const r = renderPolicy(inputs, opts);
    return `${JSON.stringify(r.diagnostics)}\n${serializePrograms(r.programs ?? [])}`;
  } catch (err) {
    return `threw: ${(err as Error).message}`;
  }
}

describe('renders kept from one to the next', () => {
  it('a render that throws does not leave the memo half-updated for the renders after it', () => {
    const memo = new CompileMemo();
    const cache = new Map();
    const base = [file('a.yaml', identity), file('b.yaml', source('s'))];
    const valid = [...base, file('c.yaml', binding('s'))];
    // The binding names a source that does not exist, and the caller says the files validated: compile throws
    // (fresh or not). That is the caller's error; it must not change what the next renders give.
    const broken = [...base, file('c.yaml', binding('nope'))];
    const fixed = [...broken, file('d.yaml', source('nope'))];

    expect(outcome(valid, { trustDomain: TD, cache, memo })).toBe(outcome(valid, { trustDomain: TD }));
    expect(outcome(broken, { trustDomain: TD, cache, memo, knownValid: true })).toMatch(/^threw/);
    // What the throw left half-done is not kept: the next render neither throws nor reads it…
    expect(outcome(fixed, { trustDomain: TD, cache, memo })).toBe(outcome(fixed, { trustDomain: TD }));
    // …and the one after it gives the binding its new source, not the one it had before the throw.
    expect(outcome(fixed, { trustDomain: TD, cache, memo })).toBe(outcome(fixed, { trustDomain: TD }));
  });

  it('the same file given twice, then once, renders as it does without the memo (no failed `!`)', () => {
    // Not from git or a directory (paths are unique there), but renderPolicy takes it: the second time, both
    // entries are the one cached FileResult, so its resources are in the set twice. Compared with renders
    // through a parse cache of their own without the memo (the cache alone changes what the duplicate finds).
    const memo = new CompileMemo();
    const cache = new Map();
    const plainCache = new Map();
    const f = file('a.yaml', identity);
    for (const inputs of [[f, f], [f, f], [f], [f]])
      expect(outcome(inputs, { trustDomain: TD, cache, memo })).toBe(
        outcome(inputs, { trustDomain: TD, cache: plainCache }),
      );
  });

  it('Services that came and went cost linear selector comparisons, whatever key a selector names first', () => {
    // N identities select {tier: backend, app: a<i>} (the common label first, as people write it); a file of
    // M other Services, all tier: backend, is edited. A fresh render compares about one Service per selector
    // (service-index.ts picks the smallest bucket). SelectionWatch indexes each selector by its first label, so
    // comparing each of the 2M Services that came or went with the selectors of its labels would cost 4·M·N
    // (640,000 here, against 400 fresh); looking each selector up among the changed Services by its rarest
    // label keeps it linear.
    const N = 400;
    const M = 400;
    const identities = Array.from(
      { length: N },
      (_, i) =>
        `${head('WorkloadIdentity', `i${i}`)}spec:\n  workloadID: apps/i${i}\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: p${i}\n  egress:\n    - selectors:\n        - {tier: backend, app: a${i}}\n`,
    ).join('---\n');
    const selected = Array.from(
      { length: N },
      (_, i) =>
        `${head('Service', `a${i}`)}spec:\n  addresses:\n    - address: a${i}.example.net\n  labels:\n    tier: backend\n    app: a${i}\n`,
    ).join('---\n');
    const others = (version: number) =>
      Array.from(
        { length: M },
        (_, j) =>
          `${head('Service', `b${j}`)}spec:\n  addresses:\n    - address: b${j}-v${version}.example.net\n  labels:\n    tier: backend\n    app: b${j}\n`,
      ).join('---\n');
    const files = (version: number) => [
      file('a.yaml', selected),
      file('b.yaml', others(version)),
      file('i.yaml', identities),
    ];
    const cache = new Map();
    const memo = new CompileMemo();
    expect(renderPolicy(files(1), { trustDomain: TD, cache, memo }).programs).not.toBeNull();
    const calls = vi.mocked(labelsMatch);

    calls.mockClear();
    const fresh = renderPolicy(files(2), { trustDomain: TD, cache });
    const freshCalls = calls.mock.calls.length;
    calls.mockClear();
    const kept = renderPolicy(files(2), { trustDomain: TD, cache, memo });
    const keptCalls = calls.mock.calls.length;

    expect(serializePrograms(kept.programs!)).toBe(serializePrograms(fresh.programs!));
    expect(keptCalls).toBeLessThanOrEqual(freshCalls + 10 * (N + M));
  });
});
