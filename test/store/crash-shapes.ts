/** What crash-writer.ts writes at step n, so the test can check every record it reads back exactly. */
import type { StatusSnapshot } from '../../reconciler/status/model.ts';
import type { AppliedState, IssuedSerial } from '../../reconciler/store/state-store.ts';

export const serialKey = (n: number) => n.toString(16).padStart(16, '0');

export function expectedSerial(n: number): IssuedSerial {
  return {
    spiffeId: `spiffe://example.org/team-${n % 17}/svc-${n}`,
    daemonId: `node-${n % 5}`,
    notBefore: new Date(1_700_000_000_000 + n * 1000).toISOString(),
    notAfter: new Date(1_700_003_600_000 + n * 1000).toISOString(),
    publicKeyHash: `${n}`.padStart(64, 'k'),
  };
}

export function expectedApplied(n: number): AppliedState {
  return {
    revision: n.toString(16).padStart(40, '0'),
    appliedAt: new Date(1_700_000_000_000 + n).toISOString(),
    programVersions: { 'daemonGroup:a': `v${n}`, 'daemonGroup:b': `w${n}` },
  };
}

/** A status snapshot of realistic size (300 resources), tagged with n in generatedAt. */
export function expectedStatus(n: number): StatusSnapshot {
  return {
    format: 1,
    generatedAt: new Date(1_700_000_000_000 + n).toISOString(),
    source: null,
    daemons: [],
    events: {},
    // Names sort as numbers do: the store reads resources back in namespace/name order, as the book shows them.
    resources: Array.from({ length: 300 }, (_, k) => {
      const i = String(k).padStart(3, '0');
      return {
        kind: 'Service' as const,
        namespace: 'riptides-system',
        name: `svc-${i}`,
        file: `policies/svc-${i}.yaml`,
        observedRevision: n.toString(16),
        conditions: [],
        addresses: [`svc-${i}.example.internal:443`],
        external: false,
        labels: { app: `svc-${i}` },
        tags: [],
      };
    }),
  };
}

export const stepOfApplied = (a: AppliedState) => Number.parseInt(a.revision, 16);
export const stepOfStatus = (s: StatusSnapshot) => Date.parse(s.generatedAt) - 1_700_000_000_000;
