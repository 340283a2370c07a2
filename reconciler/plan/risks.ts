/** Changes that deserve a reviewer's eye, each flagged by a named rule. */
import type { NodeProgram } from '../policy/compile.ts';
import type { ResourceSet } from '../policy/resource-set.ts';
import type { AccessDiff } from './access.ts';

export type RiskSeverity = 'high' | 'medium';

export interface Risk {
  rule:
    | 'tls-downgrade'
    | 'credential-new-destination'
    | 'credential-to-external'
    | 'allowed-peers-widened'
    | 'selector-broadened'
    | 'identity-removed-while-referenced';
  severity: RiskSeverity;
  message: string;
  resource: string;
}

function identities(programs: readonly NodeProgram[]) {
  return new Map(programs.flatMap((p) => p.identities.map((i) => [i.spiffeId, i] as const)));
}

export function findRisks(
  base: { set: ResourceSet | null; programs: readonly NodeProgram[] },
  head: { set: ResourceSet; programs: readonly NodeProgram[] },
  access: AccessDiff,
): Risk[] {
  const risks: Risk[] = [];
  const before = identities(base.programs);
  const after = identities(head.programs);

  for (const [id, a] of after) {
    const b = before.get(id);
    if (!b) continue;
    if (b.tls.mode === 'MUTUAL' && a.tls.mode !== 'MUTUAL') {
      risks.push({
        rule: 'tls-downgrade',
        severity: 'high',
        message: `${id} accepts ${a.tls.mode} inbound instead of MUTUAL: callers without an SVID get in`,
        resource: a.resource,
      });
    }
    for (const dir of ['inbound', 'outbound'] as const) {
      const gained = a.allowedSpiffeIds[dir].filter((p) => !b.allowedSpiffeIds[dir].includes(p));
      if (gained.length)
        risks.push({
          rule: 'allowed-peers-widened',
          severity: 'medium',
          message: `${id} now allows ${dir} ${gained.join(', ')}`,
          resource: a.resource,
        });
      if (b.allowedSpiffeIds[dir].length && !a.allowedSpiffeIds[dir].length) {
        risks.push({
          rule: 'allowed-peers-widened',
          severity: 'high',
          message: `${id} no longer restricts ${dir} peers (its allow list was removed)`,
          resource: a.resource,
        });
      }
    }
  }

  for (const { key, before: b, after: a } of access.changed) {
    if (b.kind !== 'reach') continue;
    if (b.attributes.tls === 'MUTUAL' && a.attributes.tls !== 'MUTUAL') {
      risks.push({
        rule: 'tls-downgrade',
        severity: 'high',
        message: `${a.from} → ${a.to} is no longer MUTUAL TLS (now ${String(a.attributes.tls)})`,
        resource: after.get(a.from)?.resource ?? key,
      });
    }
    const bp = (b.attributes.allowedPeers as string[] | undefined) ?? [];
    const ap = (a.attributes.allowedPeers as string[] | undefined) ?? [];
    const gained = ap.filter((p) => !bp.includes(p));
    if (gained.length || (bp.length && !ap.length)) {
      risks.push({
        rule: 'allowed-peers-widened',
        severity: ap.length ? 'medium' : 'high',
        message: `${a.from} → ${a.to} ${ap.length ? `now also accepts ${gained.join(', ')}` : 'no longer pins the peer identity'}`,
        resource: after.get(a.from)?.resource ?? key,
      });
    }
  }

  for (const e of access.added) {
    if (e.kind !== 'credential' || e.to.startsWith('sysfs ')) continue;
    const binding = String(e.attributes.binding);
    risks.push(
      e.external
        ? {
            rule: 'credential-to-external',
            severity: 'high',
            message: `${e.from} is newly injected toward external ${e.to}`,
            resource: binding,
          }
        : {
            rule: 'credential-new-destination',
            severity: 'medium',
            message: `${e.from} is newly injected toward ${e.to}`,
            resource: binding,
          },
    );
  }

  if (base.set) risks.push(...broadenedSelectors(base.set, head.set));

  // Identities removed while something in head still names them.
  const referenced = new Set<string>();
  for (const i of after.values()) {
    for (const p of [
      ...i.allowedSpiffeIds.inbound,
      ...i.allowedSpiffeIds.outbound,
      ...i.egress.flatMap((e) => e.allowedSpiffeIds),
    ])
      referenced.add(p);
  }
  const headWorkloads = new Set(
    [...head.set.bindings, ...head.set.workloadCredentials].map((b) => b.value.spec.workloadID),
  );
  for (const [id, b] of before) {
    if (after.has(id)) continue;
    if (referenced.has(id) || headWorkloads.has(b.workloadID)) {
      risks.push({
        rule: 'identity-removed-while-referenced',
        severity: 'high',
        message: `${id} is removed but still referenced (allow lists or credential bindings)`,
        resource: b.resource,
      });
    }
  }
  return risks.sort((x, y) =>
    x.severity === y.severity ? (x.resource < y.resource ? -1 : 1) : x.severity === 'high' ? -1 : 1,
  );
}

function broadenedSelectors(base: ResourceSet, head: ResourceSet): Risk[] {
  const risks: Risk[] = [];
  const compare = (
    resource: string,
    what: string,
    before: Record<string, unknown>[],
    after: Record<string, unknown>[],
  ) => {
    after.forEach((sel, i) => {
      const old = before[i];
      if (!old) {
        if (before.length)
          risks.push({
            rule: 'selector-broadened',
            severity: 'medium',
            message: `${what}: selector ${i} added (selectors are ORed, so more matches)`,
            resource,
          });
        return;
      }
      const lost = Object.keys(old).filter((k) => !(k in sel));
      if (lost.length)
        risks.push({
          rule: 'selector-broadened',
          severity: 'medium',
          message: `${what}: selector ${i} no longer requires ${lost.join(', ')}`,
          resource,
        });
    });
  };
  const baseIds = new Map(base.identities.map((r) => [r.key, r.value.spec]));
  for (const r of head.identities) {
    const b = baseIds.get(r.key);
    if (!b) continue;
    compare(r.key, 'process selectors', b.selectors, r.value.spec.selectors);
    r.value.spec.egress?.forEach((rule, i) => {
      const old = b.egress?.[i];
      if (old) compare(r.key, `egress rule ${i} service selectors`, old.selectors, rule.selectors);
    });
  }
  const baseBindings = new Map(base.bindings.map((r) => [r.key, r.value.spec]));
  for (const r of head.bindings) {
    const b = baseBindings.get(r.key)?.propagation.injection;
    const a = r.value.spec.propagation.injection;
    if (b && a) compare(r.key, 'injection selectors', b.selectors, a.selectors);
  }
  return risks;
}
