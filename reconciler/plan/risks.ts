/** Changes that deserve a reviewer's eye, each flagged by a named rule. */
import type { CompiledIdentity, NodeProgram } from '../policy/compile.ts';
import type { Service } from '../policy/kinds/index.ts';
import type { ResourceSet } from '../policy/resource-set.ts';
import type { Located } from '../policy/resources.ts';
import { isAtLeastAsBroad, labelsMatch, normalizeSelector } from '../policy/selectors.ts';
import type { AccessDiff, AccessEdge } from './access.ts';

export type RiskSeverity = 'high' | 'medium';

export interface Risk {
  rule:
    | 'tls-downgrade'
    | 'credential-new-destination'
    | 'credential-to-external'
    | 'allowed-peers-widened'
    | 'selector-broadened'
    | 'identity-removed-while-referenced'
    | 'access-removed';
  severity: RiskSeverity;
  message: string;
  resource: string;
  /** access-removed: the workload (SPIFFE ID) that loses access, and what it loses access to. */
  lost?: { workload: string; to: string };
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

  // An edge whose destination moved (the Service at another address, or renamed or in another namespace at
  // the same address) is compared as a changed edge: a downgrade must not hide behind a move.
  for (const { key, before: b, after: a } of [...access.changed, ...movedEdges(access)]) {
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

  // An address that already received this credential from this workload is not a new destination.
  const hadCredential = new Set(
    access.removed.flatMap((e) =>
      e.kind === 'credential' && addressOf(e.to) ? [`${e.from} ${addressOf(e.to)}`] : [],
    ),
  );
  for (const e of access.added) {
    if (e.kind !== 'credential' || e.to.startsWith('sysfs ')) continue;
    if (hadCredential.has(`${e.from} ${addressOf(e.to)}`)) continue;
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
  risks.push(...accessRemoved(base, head, access, before, after));
  return risks.sort((x, y) =>
    x.severity === y.severity ? (x.resource < y.resource ? -1 : 1) : x.severity === 'high' ? -1 : 1,
  );
}

type SelectorMap = Record<string, string | number | Array<string | number>>;

/** Process selectors: the relation RT047 uses (a list of values is ORed, `process:cmdline` is a prefix). */
const processCovers = (old: SelectorMap, sel: SelectorMap) =>
  isAtLeastAsBroad(normalizeSelector(old), normalizeSelector(sel));

/**
 * Service label selectors: `sel` still requires every label `old` did. Another value selects other Services,
 * whose reach and credential flows the access diff already shows edge by edge (credential-new-destination,
 * credential-to-external); what only a selector can say is that it asks for less.
 */
const labelsCover = (old: Record<string, string>, sel: Record<string, string>) =>
  Object.keys(old).every((k) => Object.hasOwn(sel, k));

/**
 * selector-broadened: a selector of head matches what no selector of base matched (selectors are ORed, so
 * each head selector must be covered by some base selector). Process selectors: a key dropped, a value added
 * to a list, a shorter `process:cmdline` prefix, another value (another process gets the identity), one more
 * selector. Service label selectors: a label dropped, one more selector. Reordering is not broadening.
 */
function broadenedSelectors(base: ResourceSet, head: ResourceSet): Risk[] {
  const risks: Risk[] = [];
  const compare = <S extends Record<string, unknown>>(
    resource: string,
    what: string,
    before: S[],
    after: S[],
    covers: (old: S, sel: S) => boolean,
  ) => {
    if (!before.length) return;
    after.forEach((sel, i) => {
      if (before.some((old) => covers(old, sel))) return;
      const old = before[i];
      // Own keys only: a label named like `constructor` that `sel` dropped is lost, not found on Object.
      const lost = old ? Object.keys(old).filter((k) => !Object.hasOwn(sel, k)) : [];
      const message = !old
        ? `${what}: selector ${i} added (selectors are ORed, so more matches)`
        : lost.length
          ? `${what}: selector ${i} no longer requires ${lost.join(', ')}`
          : `${what}: selector ${i} now matches what no selector matched before (${Object.keys(sel)
              .filter((k) => JSON.stringify(sel[k]) !== JSON.stringify(old[k]))
              .map((k) => `${k}: ${JSON.stringify(old[k])} → ${JSON.stringify(sel[k])}`)
              .join(', ')})`;
      risks.push({ rule: 'selector-broadened', severity: 'medium', message, resource });
    });
  };
  const baseIds = new Map(base.identities.map((r) => [r.key, r.value.spec]));
  for (const r of head.identities) {
    const b = baseIds.get(r.key);
    if (!b) continue;
    compare(r.key, 'process selectors', b.selectors, r.value.spec.selectors, processCovers);
    r.value.spec.egress?.forEach((rule, i) => {
      const old = b.egress?.[i];
      if (old)
        compare(r.key, `egress rule ${i} service selectors`, old.selectors, rule.selectors, labelsCover);
    });
  }
  const baseBindings = new Map(base.bindings.map((r) => [r.key, r.value.spec]));
  for (const r of head.bindings) {
    const b = baseBindings.get(r.key)?.propagation.injection;
    const a = r.value.spec.propagation.injection;
    if (b && a) compare(r.key, 'injection selectors', b.selectors, a.selectors, labelsCover);
  }
  return risks;
}

/** `Service/ns/name (address:port)` → `Service/ns/name`; undefined for an identity or a sysfs target. */
function serviceOf(to: string): string | undefined {
  return /^(Service\/\S+) \(/.exec(to)?.[1];
}

/** `Service/ns/name (address:port)` → `address:port`; undefined for an identity or a sysfs target. */
function addressOf(to: string): string | undefined {
  return /^Service\/\S+ \((.*)\)$/.exec(to)?.[1];
}

/**
 * Removed and added edges of one source toward the same destination under another key: the same Service at
 * another address, or the same address under another Service name or namespace. Each removed edge is paired
 * with at most one added edge, preferring the same Service.
 */
function movedEdges(access: AccessDiff): AccessDiff['changed'] {
  const pairs: AccessDiff['changed'] = [];
  const taken = new Set<AccessEdge>();
  for (const b of access.removed) {
    const service = serviceOf(b.to);
    if (!service) continue;
    const candidates = access.added.filter((a) => a.kind === b.kind && a.from === b.from && !taken.has(a));
    const a =
      candidates.find((c) => serviceOf(c.to) === service) ??
      candidates.find((c) => addressOf(c.to) === addressOf(b.to));
    if (!a) continue;
    taken.add(a);
    pairs.push({ key: `${b.kind} ${b.from} -> ${b.to}`, before: b, after: a, fields: [] });
  }
  return pairs;
}

/**
 * access-removed: a workload that stays loses an access edge (reach to a Service address or a peer, or a
 * credential flow) and gains nothing equivalent back (the same Service at another address, or the same address
 * under a renamed Service or in another namespace, is a move, not a loss). High when the loss comes from elsewhere while the workload's own policy still asks for it: a Service
 * deleted or relabelled that its egress rule or binding still selects, a peer identity deleted. Medium when
 * the workload's own policy dropped it (an egress rule, an allow list or a binding changed or removed).
 */
function accessRemoved(
  base: { set: ResourceSet | null; programs: readonly NodeProgram[] },
  head: { set: ResourceSet; programs: readonly NodeProgram[] },
  access: AccessDiff,
  before: Map<string, CompiledIdentity>,
  after: Map<string, CompiledIdentity>,
): Risk[] {
  const risks: Risk[] = [];
  const baseServices = new Map((base.set?.services ?? []).map((s) => [s.key, s] as const));
  const headServices = new Map(head.set.services.map((s) => [s.key, s] as const));
  const headBindings = new Map(
    [...head.set.bindings, ...head.set.workloadCredentials].map((b) => [b.key, b] as const),
  );
  const workloadOf = (e: AccessEdge) => (e.kind === 'credential' ? e.from.split(' → ').at(-1)! : e.from);
  // A destination still reached under another key (moved, renamed, another namespace) is not lost.
  const regained = new Set(
    access.added.flatMap((e) => [
      `${e.kind} ${e.from} -> ${serviceOf(e.to) ?? e.to}`,
      ...(addressOf(e.to) ? [`${e.kind} ${e.from} -> ${addressOf(e.to)}`] : []),
    ]),
  );
  const serviceCause = (service: string, stillSelected: boolean, selectedBy: string) => {
    const name = service.split('/').pop();
    const what = headServices.has(service)
      ? `Service ${name} no longer offers this address or matches`
      : `Service ${name} is deleted`;
    return stillSelected ? `${what} while ${selectedBy} still selects it` : undefined;
  };
  for (const e of access.removed) {
    const workload = workloadOf(e);
    if (before.has(workload) && !after.has(workload)) continue; // the workload itself goes
    const service = serviceOf(e.to);
    if (regained.has(`${e.kind} ${e.from} -> ${service ?? e.to}`)) continue;
    if (service && regained.has(`${e.kind} ${e.from} -> ${addressOf(e.to)}`)) continue;
    const was = service ? baseServices.get(service) : undefined;
    const matches = (selectors: Record<string, string>[], svc: Located<Service> | undefined) =>
      svc !== undefined && selectors.some((sel) => labelsMatch(sel, svc.value.spec.labels ?? {}));
    let severity: RiskSeverity = 'medium';
    let why: string;
    let resource = after.get(workload)?.resource ?? workload;
    if (e.kind === 'credential') {
      const bindingKey = String(e.attributes.binding);
      const binding = headBindings.get(bindingKey);
      resource = bindingKey;
      const injection =
        binding && 'propagation' in binding.value.spec ? binding.value.spec.propagation.injection : undefined;
      const selectors = injection?.selectors ?? [];
      const cause = service
        ? serviceCause(service, matches(selectors, was), bindingKey.split('/').pop()!)
        : undefined;
      if (cause) {
        severity = 'high';
        why = cause;
      } else why = binding ? `${bindingKey} no longer sends it there` : `${bindingKey} is deleted`;
      risks.push({
        rule: 'access-removed',
        severity,
        message: `${workload} loses credential ${String(e.attributes.source)} toward ${e.to}: ${why}`,
        resource,
        lost: { workload, to: `${e.to} (credential ${String(e.attributes.source)})` },
      });
      continue;
    }
    if (service) {
      const rules = after.get(workload)?.egress ?? [];
      const rule = rules.find((r) => matches(r.selectors, was));
      const cause = serviceCause(service, rule !== undefined, `egress rule ${rule?.index}`);
      if (cause) {
        severity = 'high';
        why = cause;
      } else why = 'its egress rules no longer select it';
    } else if (before.has(e.to) && !after.has(e.to)) {
      severity = 'high';
      why = `identity ${e.to} is deleted`;
    } else if (e.attributes.inboundAllowed) {
      why = `${e.to} no longer allows it inbound`;
      resource = after.get(e.to)?.resource ?? resource;
    } else {
      why = 'its outbound allow list no longer names it';
    }
    risks.push({
      rule: 'access-removed',
      severity,
      message: `${workload} loses access to ${e.to}: ${why}`,
      resource,
      lost: { workload, to: e.to },
    });
  }
  return risks;
}
