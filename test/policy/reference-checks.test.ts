/**
 * The checks across resources kept from one render to the next (reconciler/policy/reference-checks.ts) find
 * exactly what a from-scratch render finds, over long random sequences of edits made to collide: names defined
 * twice (in one namespace and across namespaces), workload IDs claimed twice or malformed, references that
 * come and go, Services whose labels move under the selectors that pick them, process claims in shared scopes,
 * status blocks, Secrets, files reordered and options changed.
 */
import { describe, expect, it } from 'vitest';
import { CompileMemo, serializePrograms } from '../../reconciler/policy/compile.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { random } from '../support/random.ts';

const TD = 'example.org';
/** Found by looking at other resources: names and IDs twice, references, selections, claims, allow lists. */
const CROSS_CODES = [
  'RT040',
  'RT041',
  'RT042',
  'RT043',
  'RT044',
  'RT045',
  'RT046',
  'RT047',
  'RT048',
  'RT049',
  'RT053',
  'RT055',
];

function documentMaker(rand: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const maybe = (p: number) => rand() < p;
  const ns = () => pick(['team', 'team', 'other']);
  const workload = () => pick(['apps/a', 'apps/b', 'apps/c', 'apps/d', '/apps/a', 'apps//bad']);
  const head = (kind: string, name: string) =>
    `apiVersion: core.riptides.io/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\n  namespace: ${ns()}\n`;
  const status = () => (maybe(0.05) ? 'status:\n  state: OK\n' : '');
  const selectors = () => (maybe(0.1) ? '        - {}\n' : `        - app: ${pick(['api', 'web', 'db'])}\n`);
  const identity = () => {
    const name = pick(['a', 'b', 'c', 'd']);
    let text = `${head('WorkloadIdentity', name)}spec:\n  workloadID: ${workload()}\n  scope:\n    daemonGroup:\n      id: ${pick(['g1', 'g2'])}\n  selectors:\n    - process:name: ${pick(['p1', 'p2', 'p3'])}\n`;
    if (maybe(0.3)) text += '  connection:\n    tls:\n      intercept: true\n';
    if (maybe(0.4))
      text += `  allowedSPIFFEIDs:\n    inbound:\n      - ${pick([`spiffe://${TD}/apps/a`, `spiffe://${TD}/apps/c`, 'spiffe://elsewhere.org/apps/a'])}\n`;
    if (maybe(0.6)) {
      text += `  egress:\n    - selectors:\n${selectors()}`;
      if (maybe(0.5)) text += `      credentialName: ${pick(['cred-a', 'cred-b'])}\n`;
      if (maybe(0.2)) text += '      connection:\n        tls:\n          mode: MUTUAL\n';
    }
    return text + status();
  };
  const service = () =>
    `${head('Service', pick(['api', 'web', 'db']))}spec:\n  external: ${maybe(0.3)}\n  addresses:\n    - address: ${pick(['x', 'y'])}.example.net\n      port: ${pick([443, 8080])}\n  labels:\n    app: ${pick(['api', 'web', 'db'])}\n${maybe(0.3) ? '    tier: backend\n' : ''}${status()}`;
  const source = () =>
    `${head('CredentialSource', pick(['src', 'src2']))}spec:\n  kubernetes:\n    secretRef:\n      name: api-key\n      key: token\n    type: BearerToken\n${status()}`;
  const binding = () =>
    `${head('CredentialBinding', pick(['bind-a', 'bind-b']))}spec:\n  workloadID: ${workload()}\n  credentialSource: ${pick(['src', 'src2', 'srcx'])}\n  propagation:\n    injection:\n      selectors:\n${selectors()}${status()}`;
  const credential = () =>
    `${head('WorkloadCredential', pick(['cred-a', 'cred-b']))}spec:\n  workloadID: ${workload()}\n  credentialSource: ${pick(['src', 'src2'])}\n${status()}`;
  const secret = () =>
    `apiVersion: v1\nkind: Secret\nmetadata:\n  name: ${pick(['s1', 's2'])}\n  namespace: ${ns()}\nstringData:\n  token: not-a-real-one\n`;
  const makers = [identity, identity, identity, service, service, source, binding, credential, secret];
  return () => {
    const docs = maybe(0.25) ? 2 : 1;
    return Array.from({ length: docs }, () => pick(makers)()).join('---\n');
  };
}

describe('checks kept from render to render', () => {
  it('find what a fresh render finds through six sequences of 150 random edits', () => {
    const codes = new Set<string>();
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const rand = random(seed);
      const make = documentMaker(rand);
      let version = 0;
      const newFile = (path: string) => ({ path, id: `${path}#${version++}`, text: make() });
      let files = Array.from({ length: 24 }, (_, i) => newFile(`f${String(i).padStart(2, '0')}.yaml`));
      const cache = new Map();
      const memo = new CompileMemo();
      let opts: { trustDomain: string; allowSecrets?: boolean; federatesWith?: string[] } = {
        trustDomain: TD,
      };
      for (let step = 0; step < 150; step++) {
        const roll = rand();
        if (roll < 0.04) files = [...files].reverse();
        else if (roll < 0.08) opts = { ...opts, allowSecrets: !opts.allowSecrets };
        else if (roll < 0.1)
          opts = opts.federatesWith ? { trustDomain: TD } : { ...opts, federatesWith: ['elsewhere.org'] };
        else
          for (let k = 1 + Math.floor(rand() * 2); k > 0; k--) {
            const i = Math.floor(rand() * files.length);
            const what = rand();
            if (what < 0.15 && files.length > 4) files = files.filter((_, j) => j !== i);
            else if (what < 0.3)
              files = [...files, newFile(`g${version}.yaml`)].sort((a, b) => (a.path < b.path ? -1 : 1));
            else files = files.map((f, j) => (j === i ? newFile(f.path) : f));
          }
        const inputs = files.map((f) => ({
          path: f.path,
          id: f.id,
          bytes: new TextEncoder().encode(f.text),
        }));
        const kept = renderPolicy(inputs, { ...opts, cache, memo });
        const fresh = renderPolicy(inputs, opts);
        expect(kept.diagnostics, `seed ${seed}, step ${step}`).toEqual(fresh.diagnostics);
        expect(serializePrograms(kept.programs ?? []), `seed ${seed}, step ${step}`).toBe(
          serializePrograms(fresh.programs ?? []),
        );
        for (const d of fresh.diagnostics) codes.add(d.code);
      }
    }
    // The sequences reach every rule that looks across resources, or they would prove little.
    expect([...codes].sort()).toEqual(expect.arrayContaining(CROSS_CODES));
  });
});
