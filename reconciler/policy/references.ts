/**
 * Checks across resources: names and IDs that must be unique, references that must resolve, SPIFFE IDs,
 * selectors that must select something, and policies that would contradict each other. One function per
 * rule, each reading the indexes built once in `indexResources`; `checkReferences` runs them all.
 */
import { parseSpiffeId } from '../identity/spiffe-id.ts';
import { checkClaims } from './claims.ts';
import type { NodePath, PendingDiagnostic } from './diagnostics.ts';
import type {
  CredentialBinding,
  CredentialSource,
  Service,
  WorkloadCredential,
  WorkloadIdentity,
} from './kinds/index.ts';
import { Reporter } from './reporter.ts';
import { checkSecret, checkService, checkSource, checkWorkloadId } from './resource-checks.ts';
import { namespaceOf, type ResourceSet, scopeKey } from './resource-set.ts';
import type { Located } from './resources.ts';
import {
  checkSelectorValue,
  isKnownSelectorKey,
  labelsMatch,
  type NormalizedSelector,
  normalizeSelector,
  SELECTOR_KEYS,
  SELECTOR_PREFIXES,
} from './selectors.ts';
import { type ServiceIndex, ServiceIndexMemo } from './service-index.ts';
import { didYouMean, Suggestions } from './suggest.ts';

export interface ValidateOptions {
  /** Results reused from an earlier check of the same parsed resources (a long-running reader's). */
  memo?: { claims: ClaimsMemo; services: ServiceIndexMemo; resources: ResourceChecksMemo };
  trustDomain: string;
  /** Trust domains whose SPIFFE IDs may appear in allow lists (riptides.config.yaml `federatesWith`). */
  federatesWith?: readonly string[];
  /** Plaintext Secrets in git are an error unless this is set. */
  allowSecrets?: boolean;
}

/** What the rules share: the resources, where diagnostics go, and the lookups built once. */
interface Context {
  set: ResourceSet;
  opts: ValidateOptions;
  rep: Reporter;
  /** Runs a check that reads one resource and the options only, or repeats what it found for that object. */
  perResource: <T>(rule: string, r: object, check: () => T) => T;
  /**
   * Runs a check of one resource against the others, whose every look at them goes through `find`; or repeats
   * what it found for that object when each of those looks finds what it found then.
   */
  crossResource: (rule: string, r: object, check: () => void) => void;
  /** A lookup in this render's indexes, recorded for the check crossResource is running. */
  find: <K extends keyof Lookups>(kind: K, key: LookupKey<K>) => ReturnType<Lookups[K]>;
  /** Identities by workloadID; the first one wins, later ones are RT041. Invalid IDs are left out. */
  byWorkloadId: Map<string, Located<WorkloadIdentity>>;
  knownSpiffeIds: Set<string>;
  sourcesByNs: Map<string, Located<CredentialSource>>;
  workloadCredentialsByNs: Map<string, Located<WorkloadCredential>>;
  services: ServiceIndex;
  /** Set when a check reads a "did you mean" index (below). */
  hinted: boolean;
  // "Did you mean" indexes, built once on first use: one per name set, never one per diagnostic.
  spiffeIdNames: () => Suggestions;
  workloadIdNames: () => Suggestions;
  sourceNames: () => Map<string, Suggestions>;
  workloadCredentialNames: () => Map<string, Suggestions>;
}

export function checkReferences(set: ResourceSet, opts: ValidateOptions): PendingDiagnostic[] {
  const rep = new Reporter();
  const memo = opts.memo?.resources;
  const options = `${opts.trustDomain}\u0000${opts.allowSecrets === true}`;
  const perResource = memo
    ? <T>(rule: string, r: object, check: () => T) => memo.run(rule, r, options, rep, check)
    : <T>(_rule: string, _r: object, check: () => T) => check();
  const ctx = indexResources(set, opts, rep, perResource);
  if (memo) {
    const crossOptions = `${options}\u0000${[...(opts.federatesWith ?? [])].sort().join(',')}`;
    const lookups = lookupsOf(ctx);
    let recording: unknown[] | null = null;
    ctx.find = (kind, key) => {
      const value = lookups[kind](key as never) as ReturnType<Lookups[typeof kind]>;
      recording?.push(kind, key, value);
      return value;
    };
    const current = (deps: readonly unknown[]) => {
      for (let i = 0; i < deps.length; i += 3)
        if (lookups[deps[i] as keyof Lookups](deps[i + 1] as never) !== deps[i + 2]) return false;
      return true;
    };
    ctx.crossResource = (rule, r, check) =>
      memo.runCross(rule, r, crossOptions, rep, current, () => {
        const deps: unknown[] = [];
        recording = deps;
        ctx.hinted = false;
        try {
          check();
        } finally {
          recording = null;
        }
        // A "did you mean" hint reads every name of its kind: not kept, the next render finds it again.
        return ctx.hinted ? null : deps;
      });
  }
  checkUniqueNames(ctx);
  checkUniqueWorkloadIds(ctx);
  checkSelectorKeys(ctx);
  checkAllowedSpiffeIds(ctx);
  checkEgressRules(ctx);
  checkProcessClaims(ctx);
  checkBindings(ctx);
  checkWorkloadCredentials(ctx);
  for (const r of set.sources) perResource('source', r, () => checkSource(rep, r));
  for (const r of set.services) perResource('service', r, () => checkService(rep, r));
  for (const r of set.secrets)
    perResource('secret', r, () => checkSecret(rep, r, opts.allowSecrets ?? false));
  checkStatusBlocks(ctx);
  return ctx.rep.out;
}

const key = (ns: string, name: string) => `${ns}/${name}`;

/** The lookups every rule reads. Malformed workload IDs are reported here (RT031), once per identity. */
function indexResources(
  set: ResourceSet,
  opts: ValidateOptions,
  rep: Reporter,
  perResource: Context['perResource'],
): Context {
  const byWorkloadId = new Map<string, Located<WorkloadIdentity>>();
  for (const r of set.identities) {
    const id = r.value.spec.workloadID;
    const valid = perResource('workloadID', r, () =>
      checkWorkloadId(rep, r, ['spec', 'workloadID'], id, opts.trustDomain),
    );
    if (valid && !byWorkloadId.has(id)) byWorkloadId.set(id, r);
  }
  const sourcesByNs = new Map<string, Located<CredentialSource>>();
  for (const s of set.sources) sourcesByNs.set(key(namespaceOf(s), s.value.metadata.name), s);
  const workloadCredentialsByNs = new Map<string, Located<WorkloadCredential>>();
  for (const w of set.workloadCredentials)
    workloadCredentialsByNs.set(key(namespaceOf(w), w.value.metadata.name), w);
  const knownSpiffeIds = new Set([...byWorkloadId.keys()].map((w) => `spiffe://${opts.trustDomain}/${w}`));
  const ctx: Context = {
    set,
    opts,
    rep,
    perResource,
    crossResource: (_rule, _r, check) => check(),
    find: (kind, key) => lookups[kind](key as never) as never,
    hinted: false,
    byWorkloadId,
    knownSpiffeIds,
    sourcesByNs,
    workloadCredentialsByNs,
    services: (opts.memo?.services ?? new ServiceIndexMemo()).indexFor(set.services),
    spiffeIdNames: hinting(() => new Suggestions(knownSpiffeIds)),
    workloadIdNames: hinting(() => new Suggestions(byWorkloadId.keys())),
    sourceNames: hinting(() => namesByNamespace(set.sources)),
    workloadCredentialNames: hinting(() => namesByNamespace(set.workloadCredentials)),
  };
  const lookups = lookupsOf(ctx);
  return ctx;

  function hinting<T>(make: () => T): () => T {
    const get = once(make);
    return () => {
      ctx.hinted = true;
      return get();
    };
  }
}

/** The looks at other resources that cross-resource checks make (see Context.find). */
interface Lookups {
  identity: (workloadID: string) => Located<WorkloadIdentity> | undefined;
  spiffeId: (id: string) => boolean;
  source: (nsName: string) => Located<CredentialSource> | undefined;
  workloadCredential: (nsName: string) => Located<WorkloadCredential> | undefined;
  /** The ServiceIndex's selection: the same array while it stays right. */
  select: (selector: Record<string, string>) => readonly Located<Service>[];
}
type LookupKey<K extends keyof Lookups> = Parameters<Lookups[K]>[0];

function lookupsOf(ctx: Context): Lookups {
  return {
    identity: (id) => ctx.byWorkloadId.get(id),
    spiffeId: (id) => ctx.knownSpiffeIds.has(id),
    source: (k) => ctx.sourcesByNs.get(k),
    workloadCredential: (k) => ctx.workloadCredentialsByNs.get(k),
    select: (sel) => ctx.services.select(sel),
  };
}

const everyManagedResource = (set: ResourceSet) =>
  [
    ...set.identities,
    ...set.services,
    ...set.sources,
    ...set.bindings,
    ...set.workloadCredentials,
  ] as Located<{ status?: unknown }>[];

/**
 * RT040: one resource per kind, namespace and name; and one CredentialSource per name across namespaces, since
 * the credential manager keeps each source's values by its name (two would share one value, handing one
 * namespace's secret to the other's bindings).
 */
function checkUniqueNames({ set, rep }: Context): void {
  const seen = new Map<string, Located<unknown>>();
  for (const r of [...everyManagedResource(set), ...set.secrets] as Located<unknown>[]) {
    const first = seen.get(r.key);
    if (first)
      rep.at('RT040', `${r.key} is defined twice (first in ${first.file})`, r, ['metadata', 'name'], {
        hint: 'rename one of them or delete the copy',
      });
    else seen.set(r.key, r);
  }
  const sources = new Map<string, Located<CredentialSource>>();
  for (const r of set.sources) {
    const first = sources.get(r.value.metadata.name);
    if (!first) sources.set(r.value.metadata.name, r);
    else if (namespaceOf(first) !== namespaceOf(r))
      rep.at(
        'RT040',
        `CredentialSource "${r.value.metadata.name}" is also defined in namespace ${namespaceOf(first)} (${first.file}): credential sources are kept by name across namespaces, so the two would share one value`,
        r,
        ['metadata', 'name'],
        { hint: 'give each CredentialSource a name no other namespace uses' },
      );
  }
}

/** RT041: a workload ID names one identity. */
function checkUniqueWorkloadIds({ set, rep, byWorkloadId }: Context): void {
  for (const r of set.identities) {
    const id = r.value.spec.workloadID;
    const first = byWorkloadId.get(id);
    if (first && first !== r)
      rep.at(
        'RT041',
        `workloadID "${id}" is already claimed by ${first.key} (${first.file})`,
        r,
        ['spec', 'workloadID'],
        { hint: 'each workload ID names one identity; pick another ID' },
      );
  }
}

/** RT036: process selector keys are known ones; RT023: their values are well-formed. */
function checkSelectorKeys({ set, rep, perResource }: Context): void {
  for (const r of set.identities) perResource('selectors', r, () => checkSelectorKeysOf(rep, r));
}

function checkSelectorKeysOf(rep: Reporter, r: Located<WorkloadIdentity>): void {
  r.value.spec.selectors.forEach((map, i) => {
    for (const [k, raw] of Object.entries(map)) {
      if (!isKnownSelectorKey(k)) {
        rep.at('RT036', `unknown selector key "${k}"`, r, ['spec', 'selectors', i, k], {
          at: 'key',
          hint:
            didYouMean(k, [...SELECTOR_KEYS, ...SELECTOR_PREFIXES.map((p) => `${p}<name>`)]) ??
            `known keys: ${SELECTOR_KEYS.join(', ')}, ${SELECTOR_PREFIXES.map((p) => `${p}*`).join(', ')}`,
        });
        continue;
      }
      for (const v of Array.isArray(raw) ? raw : [raw]) {
        const problem = checkSelectorValue(k, v);
        if (problem) rep.at('RT023', problem, r, ['spec', 'selectors', i, k]);
      }
    }
  });
}

/**
 * The SPIFFE IDs in allow lists (inbound, outbound, per egress rule): RT030 malformed or not a workload;
 * RT048 in our trust domain but no identity has it; RT055 in a trust domain that is neither ours nor one we
 * federate with, so no peer could ever present it.
 */
function checkAllowedSpiffeIds(ctx: Context): void {
  const { rep, opts, spiffeIdNames } = ctx;
  const federated = new Set(opts.federatesWith ?? []);
  const check = (r: Located<unknown>, path: NodePath, ids: string[] | undefined) => {
    ids?.forEach((id, i) => {
      const parsed = parseSpiffeId(id);
      if (!parsed.ok) {
        rep.at('RT030', `"${id}" is not a valid SPIFFE ID: ${parsed.message}`, r, [...path, i], {
          hint: 'write spiffe://<trust-domain>/<workload-id>',
        });
      } else if (parsed.id.path === '') {
        rep.at('RT030', `"${id}" names a trust domain, not a workload`, r, [...path, i], {
          hint: 'append the workload ID path',
        });
      } else if (parsed.id.trustDomain === opts.trustDomain) {
        if (!ctx.find('spiffeId', id))
          rep.at('RT048', `no WorkloadIdentity has the SPIFFE ID "${id}"`, r, [...path, i], {
            hint: spiffeIdNames().didYouMean(id),
          });
      } else if (!federated.has(parsed.id.trustDomain)) {
        rep.at(
          'RT055',
          `"${id}" is in trust domain ${parsed.id.trustDomain}, which is neither this repository's (${opts.trustDomain}) nor federated with it: no peer can present it`,
          r,
          [...path, i],
          {
            hint: `write spiffe://${opts.trustDomain}${parsed.id.path}, or list ${parsed.id.trustDomain} under federatesWith in riptides.config.yaml`,
          },
        );
      }
    });
  };
  for (const r of ctx.set.identities)
    ctx.crossResource('allowedSpiffeIds', r, () => {
      const spec = r.value.spec;
      check(r, ['spec', 'allowedSPIFFEIDs', 'inbound'], spec.allowedSPIFFEIDs?.inbound);
      check(r, ['spec', 'allowedSPIFFEIDs', 'outbound'], spec.allowedSPIFFEIDs?.outbound);
      spec.egress?.forEach((rule, e) => {
        check(r, ['spec', 'egress', e, 'allowedSPIFFEIDs'], rule.allowedSPIFFEIDs);
      });
    });
}

/** The Services a list of label selectors picks; RT045 for each selector that picks none. */
function selectServices(
  { rep, find }: Context,
  r: Located<unknown>,
  path: NodePath,
  selectors: Record<string, string>[],
): readonly Located<Service>[] {
  const matched: Located<Service>[] = [];
  selectors.forEach((sel, i) => {
    const hits = find('select', sel);
    if (hits.length === 0) {
      rep.at('RT045', `selector ${JSON.stringify(sel)} matches no Service`, r, [...path, i], {
        hint: "check the labels against the Services' spec.labels",
      });
    }
    // One at a time: spreading thousands of hits into push() can overflow the call stack.
    for (const h of hits) matched.push(h);
  });
  return matched;
}

/**
 * Egress rules: their service selectors (RT045), MUTUAL toward an external Service (RT046), a rule's own
 * workloadID (RT031), and the older `credentialName` (RT043 dangling, RT053 another workload's, RT049 toward
 * TLS without intercept).
 */
function checkEgressRules(ctx: Context): void {
  for (const r of ctx.set.identities) ctx.crossResource('egress', r, () => checkEgressRulesOf(ctx, r));
}

function checkEgressRulesOf(ctx: Context, r: Located<WorkloadIdentity>): void {
  const { rep, opts } = ctx;
  const spec = r.value.spec;
  const intercepts = spec.connection?.tls?.intercept === true;
  spec.egress?.forEach((rule, e) => {
    const base = ['spec', 'egress', e];
    const services = selectServices(ctx, r, [...base, 'selectors'], rule.selectors);
    if (rule.connection?.tls?.mode === 'MUTUAL') {
      for (const s of services.filter((s) => s.value.spec.external)) {
        rep.at(
          'RT046',
          `egress rule ${e} asks for MUTUAL TLS to ${s.key}, an external service that holds no SPIFFE identity`,
          r,
          [...base, 'connection', 'tls', 'mode'],
          { hint: 'use SIMPLE for external services' },
        );
      }
    }
    if (rule.workloadID !== undefined)
      checkWorkloadId(rep, r, [...base, 'workloadID'], rule.workloadID, opts.trustDomain);
    if (rule.credentialName === undefined) return;
    const ns = namespaceOf(r);
    const wc = ctx.find('workloadCredential', key(ns, rule.credentialName));
    if (!wc) {
      rep.at(
        'RT043',
        `WorkloadCredential "${rule.credentialName}" does not exist in namespace ${ns}`,
        r,
        [...base, 'credentialName'],
        { hint: ctx.workloadCredentialNames().get(ns)?.didYouMean(rule.credentialName) },
      );
      return;
    }
    const expected = rule.workloadID ?? spec.workloadID;
    if (wc.value.spec.workloadID !== expected) {
      rep.at(
        'RT053',
        `WorkloadCredential "${rule.credentialName}" is for workload "${wc.value.spec.workloadID}", but this rule belongs to "${expected}"`,
        r,
        [...base, 'credentialName'],
      );
    }
    if (services.some((s) => isTlsService(s.value)) && !(intercepts || rule.connection?.tls?.intercept)) {
      rep.at(
        'RT049',
        `credential "${rule.credentialName}" goes to a TLS service but the connection is not intercepted, so it cannot be injected`,
        r,
        [...base, 'credentialName'],
        { hint: 'set connection.tls.intercept: true on the rule' },
      );
    }
  });
}

/**
 * RT047 results per scope, with the identities (parsed objects, in order) they were found for. A scope whose
 * identities are the very same objects as last time has the same claims: a commit that changes one file
 * compares the selectors of its scopes only.
 */
export class ClaimsMemo {
  scopes = new Map<string, { members: readonly object[]; found: readonly PendingDiagnostic[] }>();
}

/**
 * What the checks that read one resource and the options only (its workload ID, its selector keys, a source's,
 * a Service's or a Secret's own fields) found, per check and parsed object: a commit that changes one file
 * checks only that file's resources again; and those that also look at other resources, with the looks they
 * made (runCross). The diagnostics are repeated as found, in the same place of the
 * list as a fresh check puts them.
 */
export class ResourceChecksMemo {
  readonly #rules = new Map<
    string,
    WeakMap<object, { options: string; found: readonly PendingDiagnostic[]; value: unknown }>
  >();
  readonly #cross = new Map<
    string,
    WeakMap<object, { options: string; deps: readonly unknown[]; found: readonly PendingDiagnostic[] }>
  >();

  run<T>(rule: string, r: object, options: string, rep: Reporter, check: () => T): T {
    let kept = this.#rules.get(rule);
    if (!kept) {
      kept = new WeakMap();
      this.#rules.set(rule, kept);
    }
    const hit = kept.get(r);
    if (hit?.options === options) {
      for (const d of hit.found) rep.out.push(d);
      return hit.value as T;
    }
    const from = rep.out.length;
    const value = check();
    kept.set(r, { options, found: rep.out.slice(from), value });
    return value;
  }

  /**
   * The same for a check that also looks at other resources: `check` runs it and returns the looks it made
   * (triples of lookup, key and what it found; null: do not keep), and a kept result is repeated only while
   * `current` finds each look as it was. A one-file commit thus checks again the resources of that file and
   * those whose references it moved, not all 10,000.
   */
  runCross(
    rule: string,
    r: object,
    options: string,
    rep: Reporter,
    current: (deps: readonly unknown[]) => boolean,
    check: () => readonly unknown[] | null,
  ): void {
    let kept = this.#cross.get(rule);
    if (!kept) {
      kept = new WeakMap();
      this.#cross.set(rule, kept);
    }
    const hit = kept.get(r);
    if (hit?.options === options && current(hit.deps)) {
      for (const d of hit.found) rep.out.push(d);
      return;
    }
    const from = rep.out.length;
    const deps = check();
    if (deps) kept.set(r, { options, deps, found: rep.out.slice(from) });
    else kept.delete(r);
  }
}

/** RT047: two identities whose selectors claim the same process in the same scope. */
function checkProcessClaims({ set, rep, opts }: Context): void {
  const byScope = new Map<string, Located<WorkloadIdentity>[]>();
  for (const r of set.identities) {
    const scope = scopeKey(r.value.spec);
    const list = byScope.get(scope);
    if (list) list.push(r);
    else byScope.set(scope, [r]);
  }
  const memo = opts.memo?.claims;
  const next: ClaimsMemo['scopes'] = new Map();
  for (const [scope, members] of byScope) {
    const hit = memo?.scopes.get(scope);
    if (hit && hit.members.length === members.length && hit.members.every((m, i) => m === members[i])) {
      for (const d of hit.found) rep.out.push(d);
      next.set(scope, hit);
      continue;
    }
    const entries: Array<{ r: Located<WorkloadIdentity>; index: number; sel: NormalizedSelector }> = [];
    for (const r of members)
      r.value.spec.selectors.forEach((map, index) => {
        entries.push({ r, index, sel: normalizeSelector(map) });
      });
    const from = rep.out.length;
    checkClaims(rep, entries);
    next.set(scope, { members, found: rep.out.slice(from) });
  }
  if (memo) memo.scopes = next;
}

/** RT042: the CredentialSource a binding or WorkloadCredential names exists in its namespace. */
function resolveSource(
  ctx: Context,
  r: Located<CredentialBinding | WorkloadCredential>,
): Located<CredentialSource> | undefined {
  const ns = namespaceOf(r);
  const name = r.value.spec.credentialSource;
  const source = ctx.find('source', key(ns, name));
  if (!source) {
    ctx.rep.at(
      'RT042',
      `CredentialSource "${name}" does not exist in namespace ${ns}`,
      r,
      ['spec', 'credentialSource'],
      { hint: ctx.sourceNames().get(ns)?.didYouMean(name) },
    );
  }
  return source;
}

/** RT031 / RT044: the workload a binding or WorkloadCredential names is well-formed and has an identity. */
function resolveIdentity(
  ctx: Context,
  r: Located<CredentialBinding | WorkloadCredential>,
): Located<WorkloadIdentity> | undefined {
  const id = r.value.spec.workloadID;
  const valid = ctx.perResource('workloadID', r, () =>
    checkWorkloadId(ctx.rep, r, ['spec', 'workloadID'], id, ctx.opts.trustDomain),
  );
  if (!valid) return undefined;
  const identity = ctx.find('identity', id);
  if (!identity) {
    ctx.rep.at('RT044', `no WorkloadIdentity has workloadID "${id}"`, r, ['spec', 'workloadID'], {
      hint: ctx.workloadIdNames().didYouMean(id) ?? 'create the WorkloadIdentity first, or fix the ID',
    });
  }
  return identity;
}

/**
 * CredentialBindings: source and workload resolve (RT042, RT044), injection selectors pick Services (RT045),
 * and a credential injected toward TLS needs the workload's TLS intercepted (RT049).
 */
function checkBindings(ctx: Context): void {
  for (const r of ctx.set.bindings) ctx.crossResource('binding', r, () => checkBinding(ctx, r));
}

function checkBinding(ctx: Context, r: Located<CredentialBinding>): void {
  const source = resolveSource(ctx, r);
  const identity = resolveIdentity(ctx, r);
  const injection = r.value.spec.propagation.injection;
  if (!injection) return;
  const services = selectServices(
    ctx,
    r,
    ['spec', 'propagation', 'injection', 'selectors'],
    injection.selectors,
  );
  if (!identity || !source || identityIntercepts(identity.value, services)) return;
  const tlsTargets = services.filter((s) => isTlsService(s.value));
  if (tlsTargets.length) {
    ctx.rep.at(
      'RT049',
      `${identity.key} does not intercept TLS, so this credential cannot be injected into ${tlsTargets.map((s) => s.key).join(', ')}`,
      r,
      ['spec', 'propagation', 'injection'],
      { at: 'key', hint: `set spec.connection.tls.intercept: true on ${identity.key}` },
    );
  }
}

/** The older WorkloadCredentials: source and workload resolve (RT042, RT044). */
function checkWorkloadCredentials(ctx: Context): void {
  for (const r of ctx.set.workloadCredentials)
    ctx.crossResource('workloadCredential', r, () => {
      resolveSource(ctx, r);
      resolveIdentity(ctx, r);
    });
}

/** RT052: a status block in git is ignored (the reconciler writes status). */
function checkStatusBlocks({ set, rep }: Context): void {
  for (const r of everyManagedResource(set)) {
    if (r.value.status !== undefined)
      rep.at('RT052', 'status is written by the reconciler; the value in git is ignored', r, ['status'], {
        at: 'key',
        hint: 'remove the status block',
      });
  }
}

function isTlsService(s: Service): boolean {
  return s.spec.tls === true || (s.spec.addresses ?? []).some((a) => a.port === 443);
}

function identityIntercepts(identity: WorkloadIdentity, services: readonly Located<Service>[]): boolean {
  if (identity.spec.connection?.tls?.intercept) return true;
  return (identity.spec.egress ?? []).some(
    (rule) =>
      rule.connection?.tls?.intercept &&
      services.every((s) => rule.selectors.some((sel) => labelsMatch(sel, s.value.spec.labels))),
  );
}

function once<T>(make: () => T): () => T {
  let value: T | undefined;
  return () => {
    value ??= make();
    return value;
  };
}

/** Names of resources per namespace, indexed for "did you mean". */
function namesByNamespace(
  list: ReadonlyArray<Located<{ metadata: { name: string; namespace?: string | undefined } }>>,
): Map<string, Suggestions> {
  const names = new Map<string, string[]>();
  for (const r of list) {
    const ns = namespaceOf(r);
    const bucket = names.get(ns) ?? [];
    bucket.push(r.value.metadata.name);
    names.set(ns, bucket);
  }
  return new Map([...names].map(([ns, n]) => [ns, new Suggestions(n)]));
}
