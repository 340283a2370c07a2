/**
 * A validated resource set → the desired state: one node program per scope (daemon group, daemon or agent).
 * Output is deterministic (sorted everywhere, canonical JSON) and every identity, rule and credential
 * reference carries a content hash, so that diffs and pushes compare hashes instead of whole programs.
 */
import { canonicalJson, contentHash, orderedHash, withHash } from './canonical.ts';
import { seconds } from './field-rules.ts';
import {
  type CredentialSource,
  type Service,
  type SourceType,
  sourceType,
  type WorkloadCredential,
  type WorkloadIdentity,
} from './kinds/index.ts';
import { ReferenceChecks } from './reference-checks.ts';
import { namespaceOf, type ResourceSet, scopeKey } from './resource-set.ts';
import type { Located } from './resources.ts';
import { type NormalizedSelector, normalizeSelector } from './selectors.ts';
import { ServiceIndexMemo } from './service-index.ts';

export type TlsMode = 'MUTUAL' | 'PERMISSIVE' | 'SIMPLE';

export interface Destination {
  service: string;
  external: boolean;
  address: string;
  port: number | null;
  aliases: string[];
  networkPrefixes: string[];
}

export interface CompiledEgressRule {
  index: number;
  selectors: Record<string, string>[];
  destinations: Destination[];
  /** null: not set; the data plane upgrades to mTLS only when the peer is a managed workload. */
  tls: { mode: TlsMode | null; intercept: boolean };
  allowedSpiffeIds: string[];
  workloadID: string | null;
  credentialName: string | null;
  hash: string;
}

export interface CompiledCredentialRef {
  via: 'CredentialBinding' | 'WorkloadCredential';
  resource: string;
  source: { resource: string; type: SourceType; supported: boolean; specHash: string };
  injection: { destinations: Destination[] } | null;
  /** Directory under the credentials root of the control interface, for `sysfs` propagation. */
  sysfs: { dir: string } | null;
  hash: string;
}

export interface CompiledIdentity {
  resource: string;
  workloadID: string;
  spiffeId: string;
  selectors: NormalizedSelector[];
  /** Inbound TLS mode; PERMISSIVE when not set, so that enrolling a workload never breaks its callers. */
  tls: { mode: TlsMode; intercept: boolean };
  allowedSpiffeIds: { inbound: string[]; outbound: string[] };
  x509: { ttlSeconds: number | null; dnsNames: string[] };
  egress: CompiledEgressRule[];
  credentials: CompiledCredentialRef[];
  hash: string;
}

export interface NodeProgram {
  scope: { kind: 'daemonGroup' | 'daemon' | 'agent'; id: string };
  trustDomain: string;
  identities: CompiledIdentity[];
  hash: string;
}

const SUPPORTED: readonly SourceType[] = ['kubernetes', 'vault', 'aws'];

function sortedUnique(values: readonly string[] | undefined): string[] {
  return [...new Set(values ?? [])].sort();
}

function byString<T>(key: (t: T) => string) {
  return (a: T, b: T) => {
    const x = key(a);
    const y = key(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };
}

function destinations(services: readonly Located<Service>[]): Destination[] {
  const out: Destination[] = [];
  for (const s of services) {
    const spec = s.value.spec;
    for (const a of spec.addresses ?? []) {
      out.push({
        service: s.key,
        external: spec.external === true,
        address: a.address,
        port: a.port ?? null,
        aliases: sortedUnique(a.aliases),
        networkPrefixes: sortedUnique(a.networkPrefixes),
      });
    }
  }
  return out.sort(byString((d) => `${d.service}\u0000${d.address}\u0000${d.port ?? ''}`));
}

function sortSelectors<T>(selectors: T[]): T[] {
  if (selectors.length < 2) return selectors;
  const keyed = selectors.map((s) => [canonicalJson(s), s] as const);
  keyed.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return keyed.map(([, s]) => s);
}

function sortedLabelSelectors(selectors: readonly Record<string, string>[]): Record<string, string>[] {
  const sorted = selectors.map((s) =>
    Object.fromEntries(
      Object.keys(s)
        .sort()
        .map((k) => [k, s[k]!]),
    ),
  );
  return sortSelectors(sorted);
}

/**
 * Compiled parts kept between compilations, keyed by the resource objects they came from. Two compilations
 * that share resource objects (the base and head of a plan, read through one parse cache; two pushes of the
 * reconciler) rebuild only the identities and references whose inputs changed. It also carries the checks
 * across resources (`ReferenceChecks`) and the Service index, which the same renders share.
 */
export class CompileMemo {
  readonly sources = new WeakMap<object, CompiledCredentialRef['source']>();
  readonly refs = new WeakMap<object, { deps: readonly unknown[]; value: CompiledCredentialRef }>();
  readonly identities = new WeakMap<object, { deps: readonly unknown[]; value: CompiledIdentity }>();
  /** Per scope, the program last made and the compiled identities it was made from, in set order. */
  programs = new Map<string, { members: readonly CompiledIdentity[]; value: NodeProgram }>();
  readonly services = new ServiceIndexMemo();
  readonly checks = new ReferenceChecks();
}

function reuse<T>(
  map: WeakMap<object, { deps: readonly unknown[]; value: T }>,
  key: object,
  deps: readonly unknown[],
  make: () => T,
): T {
  const hit = map.get(key);
  if (hit && hit.deps.length === deps.length && hit.deps.every((d, i) => d === deps[i])) return hit.value;
  const value = make();
  map.set(key, { deps, value });
  return value;
}

const NONE: readonly Located<Service>[] = [];

/** Resources by namespace, then by name (validated unique: the last one wins otherwise). */
function byNamespace<T extends { metadata: { name: string; namespace?: string | undefined } }>(
  list: readonly Located<T>[],
): Map<string, Map<string, Located<T>>> {
  const out = new Map<string, Map<string, Located<T>>>();
  for (const r of list) {
    const ns = namespaceOf(r);
    let names = out.get(ns);
    if (!names) {
      names = new Map();
      out.set(ns, names);
    }
    names.set(r.value.metadata.name, r);
  }
  return out;
}

/** Separates the groups of dependencies of an identity (rules, credentials) so that lists line up exactly. */
const GROUP = Symbol('group');

export function compile(set: ResourceSet, trustDomain: string, memo = new CompileMemo()): NodeProgram[] {
  const services = memo.services.indexFor(set.services);
  // By namespace, then name: a key built per lookup (thousands per pass) cost more than the lookups.
  const sources = byNamespace(set.sources);
  const sourceOf = (ns: string, name: string) => sources.get(ns)!.get(name)!;
  const sourceRef = (s: Located<CredentialSource>) => {
    let ref = memo.sources.get(s.value);
    if (!ref) {
      const type = sourceType(s.value.spec);
      ref = {
        resource: s.key,
        type,
        supported: SUPPORTED.includes(type),
        specHash: contentHash(s.value.spec),
      };
      memo.sources.set(s.value, ref);
    }
    return ref;
  };

  // Credential references per workload ID, from both the current and the older form.
  const refsByWorkload = new Map<string, CompiledCredentialRef[]>();
  for (const b of set.bindings) {
    const spec = b.value.spec;
    const injection = spec.propagation.injection;
    const source = sourceOf(namespaceOf(b), spec.credentialSource);
    const targets = injection ? services.selectAny(injection.selectors) : NONE;
    // A selection is the same array while it stays right (ServiceIndex): compared as one dependency.
    const ref = reuse(memo.refs, b.value, [source.value, targets], () =>
      withHash({
        via: 'CredentialBinding' as const,
        resource: b.key,
        source: sourceRef(source),
        injection: injection ? { destinations: destinations(targets) } : null,
        sysfs:
          spec.propagation.sysfs !== undefined
            ? { dir: `${contentHash(b.key)}/${b.value.metadata.name}` }
            : null,
      }),
    );
    const list = refsByWorkload.get(spec.workloadID) ?? [];
    list.push(ref);
    refsByWorkload.set(spec.workloadID, list);
  }
  const workloadCredentials = byNamespace(set.workloadCredentials);

  const programs = new Map<string, NodeProgram>();
  for (const identity of set.identities) {
    const spec = identity.value.spec;
    const rules = (spec.egress ?? []).map((rule) => {
      const wc = rule.credentialName
        ? workloadCredentials.get(namespaceOf(identity))!.get(rule.credentialName)!
        : null;
      return {
        rule,
        targets: services.selectAny(rule.selectors),
        wc,
        wcSource: wc ? sourceOf(namespaceOf(wc), wc.value.spec.credentialSource) : null,
      };
    });
    const bound = refsByWorkload.get(spec.workloadID) ?? [];
    const deps: unknown[] = [trustDomain];
    for (const r of rules) deps.push(GROUP, r.wc?.value, r.wcSource?.value, r.targets);
    deps.push(GROUP);
    for (const b of bound) deps.push(b);
    const compiled = reuse(memo.identities, identity.value, deps, () =>
      compileIdentity(identity, trustDomain, rules, bound, sourceRef),
    );
    const key = scopeKey(spec);
    let program = programs.get(key);
    if (!program) {
      program = { scope: scopeOf(identity.value), trustDomain, identities: [], hash: '' };
      programs.set(key, program);
    }
    program.identities.push(compiled);
  }
  // A scope whose identities are the very compiled objects of last time, in the same order, is the same program:
  // a one-file commit sorts and hashes the programs of its scopes only.
  const kept: CompileMemo['programs'] = new Map();
  const out = [...programs].map(([key, p]) => {
    const hit = memo.programs.get(key);
    if (
      hit &&
      hit.value.trustDomain === trustDomain &&
      hit.members.length === p.identities.length &&
      hit.members.every((m, i) => m === p.identities[i])
    ) {
      kept.set(key, hit);
      return hit.value;
    }
    const members = [...p.identities];
    p.identities.sort(byString((i) => i.spiffeId));
    const value = {
      ...p,
      hash: orderedHash({ scope: p.scope, trustDomain, identities: p.identities.map((i) => i.hash) }),
    };
    kept.set(key, { members, value });
    return value;
  });
  memo.programs = kept;
  return out.sort(byString((p) => `${p.scope.kind}:${p.scope.id}`));
}

interface RuleInput {
  rule: NonNullable<WorkloadIdentity['spec']['egress']>[number];
  targets: readonly Located<Service>[];
  wc: Located<WorkloadCredential> | null;
  wcSource: Located<CredentialSource> | null;
}

function compileIdentity(
  identity: Located<WorkloadIdentity>,
  trustDomain: string,
  rules: readonly RuleInput[],
  bound: readonly CompiledCredentialRef[],
  sourceRef: (s: Located<CredentialSource>) => CompiledCredentialRef['source'],
): CompiledIdentity {
  const spec = identity.value.spec;
  const egress: CompiledEgressRule[] = [];
  const credentials = [...bound];
  rules.forEach(({ rule, targets, wc, wcSource }, index) => {
    const ruleDestinations = destinations(targets);
    egress.push(
      withHash({
        index,
        selectors: sortedLabelSelectors(rule.selectors),
        destinations: ruleDestinations,
        tls: {
          mode: rule.connection?.tls?.mode ?? null,
          intercept: rule.connection?.tls?.intercept ?? false,
        },
        allowedSpiffeIds: sortedUnique(rule.allowedSPIFFEIDs),
        workloadID: rule.workloadID ?? null,
        credentialName: rule.credentialName ?? null,
      }),
    );
    if (wc && wcSource) {
      credentials.push(
        withHash({
          via: 'WorkloadCredential' as const,
          resource: wc.key,
          source: sourceRef(wcSource),
          injection: { destinations: ruleDestinations },
          sysfs: null,
        }),
      );
    }
  });
  const body = {
    resource: identity.key,
    workloadID: spec.workloadID,
    spiffeId: `spiffe://${trustDomain}/${spec.workloadID}`,
    selectors: sortSelectors(spec.selectors.map(normalizeSelector)),
    tls: {
      mode: spec.connection?.tls?.mode ?? 'PERMISSIVE',
      intercept: spec.connection?.tls?.intercept ?? false,
    },
    allowedSpiffeIds: {
      inbound: sortedUnique(spec.allowedSPIFFEIDs?.inbound),
      outbound: sortedUnique(spec.allowedSPIFFEIDs?.outbound),
    },
    x509: {
      ttlSeconds: spec.svid?.x509?.ttl ? seconds(spec.svid.x509.ttl) : null,
      dnsNames: sortedUnique(spec.svid?.x509?.dnsNames),
    },
    egress,
    credentials: credentials.sort(byString((c) => `${c.resource}\u0000${c.hash}`)),
  };
  // Children already carry hashes: hash over those instead of serialising the children again.
  return {
    ...body,
    hash: orderedHash({
      ...body,
      egress: egress.map((e) => e.hash),
      credentials: body.credentials.map((c) => c.hash),
    }),
  };
}

function scopeOf(identity: WorkloadIdentity): NodeProgram['scope'] {
  const s = identity.spec.scope;
  if (s.daemonGroup) return { kind: 'daemonGroup', id: s.daemonGroup.id };
  if (s.daemon) return { kind: 'daemon', id: s.daemon.id };
  return { kind: 'agent', id: s.agent!.id };
}

/** The byte-exact serialisation of the desired state. */
export function serializePrograms(programs: readonly NodeProgram[]): string {
  return canonicalJson(programs);
}
