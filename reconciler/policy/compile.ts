/**
 * A validated resource set → the desired state: one node program per scope (daemon group, daemon or agent).
 * Output is deterministic (sorted everywhere, canonical JSON) and every identity, rule and credential
 * reference carries a content hash, so that diffs and pushes compare hashes instead of whole programs.
 */
import { canonicalJson, contentHash, orderedHash, withHash } from './canonical.ts';
import { seconds } from './field-rules.ts';
import {
  type CredentialBinding,
  type CredentialSource,
  type Service,
  type SourceType,
  sourceType,
  type WorkloadCredential,
  type WorkloadIdentity,
} from './kinds/index.ts';
import { ReferenceChecks } from './reference-checks.ts';
import {
  Claimants,
  diffResourceSets,
  type Field,
  MultiMap,
  positionsIn,
  resetOnThrow,
  SelectionWatch,
} from './resource-delta.ts';
import { namespaceOf, type ResourceSet, scopeKey } from './resource-set.ts';
import type { Located } from './resources.ts';
import { type NormalizedSelector, normalizeSelector } from './selectors.ts';
import { type ServiceIndex, ServiceIndexMemo } from './service-index.ts';

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
 * What compile keeps from one compilation to the next (the base and head of a plan, read through one parse
 * cache; two pushes of the reconciler), so that a compilation costs what changed between the two sets rather
 * than what they hold (resource-delta.ts): the resources that came and went are found by object, only they move
 * in the indexes (sources and workload credentials by namespace and name, bindings and identities by workload
 * ID, identities by scope), and a credential reference, an identity or a program is made again only when
 * something it was made from came, went or changed: a source or workload credential under the name it reads, a
 * Service its selectors select (SelectionWatch), a binding of its workload, a member of its scope. It also
 * carries the checks across resources (`ReferenceChecks`) and the Service index, which the same renders share.
 */
export class CompileMemo {
  readonly services = new ServiceIndexMemo();
  readonly checks = new ReferenceChecks();
  readonly programs = new ProgramCompiler();
}

const NONE: readonly Located<Service>[] = [];
const FIELDS: readonly Field[] = ['identities', 'services', 'sources', 'bindings', 'workloadCredentials'];

interface BindingRecord {
  readonly b: Located<CredentialBinding>;
  source: Located<CredentialSource> | null;
  targets: readonly Located<Service>[];
  ref: CompiledCredentialRef | null;
}

interface IdentityRecord {
  readonly r: Located<WorkloadIdentity>;
  readonly scope: string;
  /** What it was compiled from: per rule its workload credential, that credential's source and its targets. */
  deps: readonly unknown[];
  /** Lookup keys (`wc\0ns/name`, `source\0ns/name`) and selectors it read, to be told when they change. */
  looks: readonly string[];
  selectors: readonly Record<string, string>[];
  compiled: CompiledIdentity | null;
}

/** Compile's state between compilations (see CompileMemo). */
class ProgramCompiler {
  #trustDomain: string | null = null;
  #previous: ResourceSet | null = null;
  readonly #known = new Set<object>();
  readonly #bindings = new Map<object, BindingRecord>();
  readonly #identities = new Map<object, IdentityRecord>();
  readonly #sources = new Claimants<Located<CredentialSource>>();
  readonly #credentials = new Claimants<Located<WorkloadCredential>>();
  readonly #bindingsByWorkload = new Claimants<Located<CredentialBinding>>();
  readonly #identitiesByWorkload = new Claimants<Located<WorkloadIdentity>>();
  readonly #scopes = new Claimants<Located<WorkloadIdentity>>();
  readonly #indexes: readonly Pick<Claimants<unknown>, 'clear' | 'reset'>[] = [
    this.#sources,
    this.#credentials,
    this.#bindingsByWorkload,
    this.#identitiesByWorkload,
    this.#scopes,
  ];
  /** Bindings and identities by the lookups they made (`wc\0ns/name`, `source\0ns/name`). */
  readonly #readers = new MultiMap<string, BindingRecord | IdentityRecord>();
  readonly #selections = new SelectionWatch<BindingRecord | IdentityRecord>();
  readonly #sourceRefs = new WeakMap<object, CompiledCredentialRef['source']>();
  /** Per scope, the program and the compiled identities (set order) it was made from. */
  readonly #programs = new Map<string, { members: readonly CompiledIdentity[]; value: NodeProgram }>();
  #sorted: NodeProgram[] = [];

  compile(set: ResourceSet, trustDomain: string, services: ServiceIndex): NodeProgram[] {
    return resetOnThrow(
      () => this.#compile(set, trustDomain, services),
      () => this.#reset(null),
    );
  }

  #compile(set: ResourceSet, trustDomain: string, services: ServiceIndex): NodeProgram[] {
    if (trustDomain !== this.#trustDomain) this.#reset(trustDomain);
    const known = (r: object) => this.#known.has(r);
    const delta = diffResourceSets(this.#previous, set, FIELDS, known, () => this.#reset(trustDomain));
    this.#previous = set;
    const position = positionsIn(set);

    const dirty = new Set<BindingRecord | IdentityRecord>();
    const changedServices: Record<string, string>[] = [];
    for (const { r, field } of delta.removed) {
      this.#known.delete(r);
      this.#place(r, field, false);
      if (field === 'services') changedServices.push((r as Located<Service>).value.spec.labels);
    }
    let duplicated = false;
    for (const { r, field } of delta.added) {
      if (this.#known.has(r)) duplicated = true;
      this.#known.add(r);
      const rec = this.#place(r, field, true);
      if (rec) dirty.add(rec);
      if (field === 'services') changedServices.push((r as Located<Service>).value.spec.labels);
    }
    this.#sources.settle(position('sources'));
    this.#credentials.settle(position('workloadCredentials'));
    this.#bindingsByWorkload.settle(position('bindings'));
    this.#identitiesByWorkload.settle(position('identities'));
    this.#scopes.settle(position('identities'));

    // What now reads something else: a source or workload credential replaced, a selection moved.
    for (const [k, before] of this.#sources.touched)
      if (before.at(-1) !== this.#sources.lists.get(k)?.at(-1)) this.#mark(dirty, `source\u0000${k}`);
    for (const [k, before] of this.#credentials.touched)
      if (before.at(-1) !== this.#credentials.lists.get(k)?.at(-1)) this.#mark(dirty, `wc\u0000${k}`);
    this.#selections.affected(changedServices, dirty);

    // Credential references first: an identity reads those of its workload.
    const workloads = new Set<string>(this.#bindingsByWorkload.touched.keys());
    for (const rec of dirty) {
      if (!('b' in rec) || !this.#bindings.has(rec.b)) continue;
      const before = rec.ref;
      this.#compileBinding(rec, services);
      if (rec.ref !== before) workloads.add(rec.b.value.spec.workloadID);
    }
    for (const w of workloads)
      for (const r of this.#identitiesByWorkload.lists.get(w) ?? []) dirty.add(this.#identities.get(r)!);
    const scopes = new Set<string>(this.#scopes.touched.keys());
    for (const rec of dirty) {
      if ('b' in rec || !this.#identities.has(rec.r)) continue;
      const before = rec.compiled;
      this.#compileIdentity(rec, trustDomain, services);
      if (rec.compiled !== before) scopes.add(rec.scope);
    }
    for (const c of this.#indexes) c.clear();

    let reorder = false;
    for (const key of scopes) {
      const members = this.#scopes.lists.get(key);
      if (!members) {
        if (this.#programs.delete(key)) reorder = true;
        continue;
      }
      const compiled = members.map((r) => this.#identities.get(r)!.compiled!);
      const hit = this.#programs.get(key);
      if (hit && hit.members.length === compiled.length && hit.members.every((m, i) => m === compiled[i]))
        continue;
      const identities = [...compiled].sort(byString((i) => i.spiffeId));
      const program = {
        scope: scopeOf(members[0]!.value),
        trustDomain,
        identities,
        hash: orderedHash({
          scope: scopeOf(members[0]!.value),
          trustDomain,
          identities: identities.map((i) => i.hash),
        }),
      };
      if (!hit) reorder = true;
      this.#programs.set(key, { members: compiled, value: program });
    }
    // The scope key is `kind:id`, the order of the output: sorted again only when scopes came or went.
    if (reorder)
      this.#sorted = [...this.#programs.values()]
        .map((p) => p.value)
        .sort(byString((p) => `${p.scope.kind}:${p.scope.id}`));
    else if (scopes.size)
      this.#sorted = this.#sorted.map((p) => this.#programs.get(`${p.scope.kind}:${p.scope.id}`)!.value);
    const out = [...this.#sorted];
    if (duplicated) this.#reset(null);
    return out;
  }

  #reset(trustDomain: string | null): void {
    this.#trustDomain = trustDomain;
    this.#previous = null;
    this.#known.clear();
    this.#bindings.clear();
    this.#identities.clear();
    for (const c of this.#indexes) c.reset();
    this.#readers.clear();
    this.#selections.clear();
    this.#programs.clear();
    this.#sorted = [];
  }

  /** Puts a resource in the indexes (or takes it out); a new binding or identity comes back to be compiled. */
  #place(r: Located<unknown>, field: Field, add: boolean): BindingRecord | IdentityRecord | null {
    const ns = namespaceOf(r as Located<{ metadata: { namespace?: string } }>);
    const put = <T>(c: Claimants<T>, key: string, x: T) => (add ? c.add(key, x) : c.remove(key, x));
    switch (field) {
      case 'sources': {
        const s = r as Located<CredentialSource>;
        put(this.#sources, `${ns}/${s.value.metadata.name}`, s);
        return null;
      }
      case 'workloadCredentials': {
        const wc = r as Located<WorkloadCredential>;
        put(this.#credentials, `${ns}/${wc.value.metadata.name}`, wc);
        return null;
      }
      case 'bindings': {
        const b = r as Located<CredentialBinding>;
        put(this.#bindingsByWorkload, b.value.spec.workloadID, b);
        if (add) {
          const rec: BindingRecord = { b, source: null, targets: NONE, ref: null };
          this.#bindings.set(b, rec);
          return rec;
        }
        const rec = this.#bindings.get(b)!;
        this.#bindings.delete(b);
        const look = `source\u0000${ns}/${b.value.spec.credentialSource}`;
        this.#readers.delete(look, rec);
        for (const sel of b.value.spec.propagation.injection?.selectors ?? [])
          this.#selections.unwatch(sel, rec);
        return null;
      }
      case 'identities': {
        const identity = r as Located<WorkloadIdentity>;
        const spec = identity.value.spec;
        put(this.#identitiesByWorkload, spec.workloadID, identity);
        const scope = scopeKey(spec);
        put(this.#scopes, scope, identity);
        if (add) {
          const rec: IdentityRecord = {
            r: identity,
            scope,
            deps: [],
            looks: [],
            selectors: [],
            compiled: null,
          };
          this.#identities.set(identity, rec);
          return rec;
        }
        const rec = this.#identities.get(identity)!;
        this.#identities.delete(identity);
        this.#forget(rec);
        return null;
      }
      default:
        return null;
    }
  }

  #mark(dirty: Set<BindingRecord | IdentityRecord>, look: string): void {
    this.#readers.forEach(look, (rec) => dirty.add(rec));
  }

  #compileBinding(rec: BindingRecord, services: ServiceIndex): void {
    const b = rec.b;
    const spec = b.value.spec;
    const injection = spec.propagation.injection;
    const sourceKey = `${namespaceOf(b)}/${spec.credentialSource}`;
    const source = this.#sources.lists.get(sourceKey)!.at(-1)!;
    // A selection is the same array while it stays right (ServiceIndex): compared as one dependency.
    const targets = injection ? services.selectAny(injection.selectors) : NONE;
    if (rec.ref === null) {
      // A binding object never changes what it reads: it is watched from its first compile until it is gone.
      this.#readers.add(`source\u0000${sourceKey}`, rec);
      for (const sel of injection?.selectors ?? []) this.#selections.watch(sel, rec);
    }
    if (rec.ref && rec.source?.value === source.value && rec.targets === targets) return;
    rec.source = source;
    rec.targets = targets;
    rec.ref = withHash({
      via: 'CredentialBinding' as const,
      resource: b.key,
      source: this.#sourceRef(source),
      injection: injection ? { destinations: destinations(targets) } : null,
      sysfs:
        spec.propagation.sysfs !== undefined
          ? { dir: `${contentHash(b.key)}/${b.value.metadata.name}` }
          : null,
    });
  }

  #compileIdentity(rec: IdentityRecord, trustDomain: string, services: ServiceIndex): void {
    const identity = rec.r;
    const spec = identity.value.spec;
    const ns = namespaceOf(identity);
    const looks: string[] = [];
    const rules = (spec.egress ?? []).map((rule) => {
      let wc: Located<WorkloadCredential> | null = null;
      let wcSource: Located<CredentialSource> | null = null;
      if (rule.credentialName) {
        const wcKey = `${ns}/${rule.credentialName}`;
        wc = this.#credentials.lists.get(wcKey)!.at(-1)!;
        const sourceKey = `${namespaceOf(wc)}/${wc.value.spec.credentialSource}`;
        wcSource = this.#sources.lists.get(sourceKey)!.at(-1)!;
        looks.push(`wc\u0000${wcKey}`, `source\u0000${sourceKey}`);
      }
      return { rule, targets: services.selectAny(rule.selectors), wc, wcSource };
    });
    const bound = (this.#bindingsByWorkload.lists.get(spec.workloadID) ?? []).map(
      (b) => this.#bindings.get(b)!.ref!,
    );
    const deps: unknown[] = [];
    for (const r of rules) deps.push(GROUP, r.wc?.value, r.wcSource?.value, r.targets);
    deps.push(GROUP);
    for (const b of bound) deps.push(b);
    this.#forget(rec);
    rec.looks = looks;
    for (const look of looks) this.#readers.add(look, rec);
    rec.selectors = rules.flatMap((r) => r.rule.selectors);
    for (const sel of rec.selectors) this.#selections.watch(sel, rec);
    if (rec.compiled && rec.deps.length === deps.length && rec.deps.every((d, i) => d === deps[i])) return;
    rec.deps = deps;
    rec.compiled = compileIdentity(identity, trustDomain, rules, bound, (s) => this.#sourceRef(s));
  }

  /** Stops telling `rec` of changes to what it read (it is gone, or about to read again). */
  #forget(rec: IdentityRecord): void {
    for (const look of rec.looks) {
      this.#readers.delete(look, rec);
    }
    for (const sel of rec.selectors) this.#selections.unwatch(sel, rec);
    rec.looks = [];
    rec.selectors = [];
  }

  #sourceRef(s: Located<CredentialSource>): CompiledCredentialRef['source'] {
    let ref = this.#sourceRefs.get(s.value);
    if (!ref) {
      const type = sourceType(s.value.spec);
      ref = {
        resource: s.key,
        type,
        supported: SUPPORTED.includes(type),
        specHash: contentHash(s.value.spec),
      };
      this.#sourceRefs.set(s.value, ref);
    }
    return ref;
  }
}

/** Separates the groups of dependencies of an identity (rules, credentials) so that lists line up exactly. */
const GROUP = Symbol('group');

/**
 * A validated resource set → one node program per scope, sorted by scope. Through `memo`, kept from the
 * compilations before (see CompileMemo); programs that did not change are the same objects as last time.
 */
export function compile(set: ResourceSet, trustDomain: string, memo = new CompileMemo()): NodeProgram[] {
  return memo.programs.compile(set, trustDomain, memo.services.indexFor(set.services));
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
