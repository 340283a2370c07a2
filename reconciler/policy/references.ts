/**
 * The rules that look across resources: names and IDs that must be unique, references that must resolve,
 * SPIFFE IDs, selectors that must select something, and policies that would contradict each other. Each rule
 * reads one resource (or one group: the claimants of a name, the identities of a scope) and looks at the
 * others only through `RuleContext.find`, so that reference-checks.ts can record what each check looked at
 * and run it again only when one of those looks would find something else.
 */
import { parseSpiffeId } from '../identity/spiffe-id.ts';
import { checkClaims } from './claims.ts';
import type { NodePath } from './diagnostics.ts';
import type {
  CredentialBinding,
  CredentialSource,
  Service,
  WorkloadCredential,
  WorkloadIdentity,
} from './kinds/index.ts';
import type { Reporter } from './reporter.ts';
import { checkWorkloadId } from './resource-checks.ts';
import { namespaceOf } from './resource-set.ts';
import type { Located } from './resources.ts';
import {
  checkSelectorValue,
  isKnownSelectorKey,
  labelsMatch,
  normalizeSelector,
  SELECTOR_KEYS,
  SELECTOR_PREFIXES,
} from './selectors.ts';
import { didYouMean, Suggestions } from './suggest.ts';

export interface ValidateOptions {
  trustDomain: string;
  /** Trust domains whose SPIFFE IDs may appear in allow lists (riptides.config.yaml `federatesWith`). */
  federatesWith?: readonly string[];
  /** Plaintext Secrets in git are an error unless this is set. */
  allowSecrets?: boolean;
}

/** The looks at other resources that cross-resource checks make (see RuleContext.find). */
export interface Lookups {
  /** The first identity (in set order) with this well-formed workload ID. */
  identity: (workloadID: string) => Located<WorkloadIdentity> | undefined;
  /** Whether some identity has this SPIFFE ID. */
  spiffeId: (id: string) => boolean;
  /** The CredentialSource `namespace/name` (the last one, when a name is defined twice: RT040). */
  source: (nsName: string) => Located<CredentialSource> | undefined;
  /** The WorkloadCredential `namespace/name` (the last one likewise). */
  workloadCredential: (nsName: string) => Located<WorkloadCredential> | undefined;
  /** The Services a selector selects (ServiceIndex), in set order. */
  select: (selector: Record<string, string>) => readonly Located<Service>[];
}
export type LookupKey<K extends keyof Lookups> = Parameters<Lookups[K]>[0];

/** What a rule is given: where its diagnostics go, the options, the lookups and the "did you mean" indexes. */
export interface RuleContext {
  opts: ValidateOptions;
  rep: Reporter;
  find: <K extends keyof Lookups>(kind: K, key: LookupKey<K>) => ReturnType<Lookups[K]>;
  // "Did you mean" indexes, each built once per render on first use; reading one reads every name of its kind.
  spiffeIdNames: () => Suggestions;
  workloadIdNames: () => Suggestions;
  sourceNames: () => Map<string, Suggestions>;
  workloadCredentialNames: () => Map<string, Suggestions>;
}

const key = (ns: string, name: string) => `${ns}/${name}`;

/** RT040: every claimant of a `Kind/namespace/name` after the first, in set order. */
export function checkDuplicateNames(rep: Reporter, claimants: readonly Located<unknown>[]): void {
  const first = claimants[0];
  for (let i = 1; i < claimants.length; i++) {
    const r = claimants[i]!;
    rep.at('RT040', `${r.key} is defined twice (first in ${first!.file})`, r, ['metadata', 'name'], {
      hint: 'rename one of them or delete the copy',
    });
  }
}

/**
 * RT040: one CredentialSource per name across namespaces, since the credential manager keeps each source's
 * values by its name (two would share one value, handing one namespace's secret to the other's bindings).
 * `claimants`: the sources of one name, in set order.
 */
export function checkSourceNameClash(rep: Reporter, claimants: readonly Located<CredentialSource>[]): void {
  const first = claimants[0]!;
  for (let i = 1; i < claimants.length; i++) {
    const r = claimants[i]!;
    if (namespaceOf(first) === namespaceOf(r)) continue;
    rep.at(
      'RT040',
      `CredentialSource "${r.value.metadata.name}" is also defined in namespace ${namespaceOf(first)} (${first.file}): credential sources are kept by name across namespaces, so the two would share one value`,
      r,
      ['metadata', 'name'],
      { hint: 'give each CredentialSource a name no other namespace uses' },
    );
  }
}

/**
 * RT041: a workload ID names one identity. `claimants`: the identities with one workload ID, in set order;
 * `owner`: the first of them whose ID is well-formed (the others are reported against it).
 */
export function checkWorkloadIdClash(
  rep: Reporter,
  claimants: readonly Located<WorkloadIdentity>[],
  owner: Located<WorkloadIdentity> | undefined,
): void {
  if (!owner) return;
  for (const r of claimants) {
    if (r === owner) continue;
    rep.at(
      'RT041',
      `workloadID "${r.value.spec.workloadID}" is already claimed by ${owner.key} (${owner.file})`,
      r,
      ['spec', 'workloadID'],
      { hint: 'each workload ID names one identity; pick another ID' },
    );
  }
}

/** RT047: two identities of one scope (`members`, in set order) whose selectors claim the same process. */
export function checkScopeClaims(rep: Reporter, members: readonly Located<WorkloadIdentity>[]): void {
  const entries: Parameters<typeof checkClaims>[1] = [];
  for (const r of members)
    r.value.spec.selectors.forEach((map, index) => {
      entries.push({ r, index, sel: normalizeSelector(map) });
    });
  checkClaims(rep, entries);
}

/** RT052: a status block in git is ignored (the reconciler writes status). */
export function checkStatusBlock(rep: Reporter, r: Located<{ status?: unknown }>): void {
  if (r.value.status !== undefined)
    rep.at('RT052', 'status is written by the reconciler; the value in git is ignored', r, ['status'], {
      at: 'key',
      hint: 'remove the status block',
    });
}

/** RT036: process selector keys are known ones; RT023: their values are well-formed. */
export function checkSelectorKeysOf(rep: Reporter, r: Located<WorkloadIdentity>): void {
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
export function checkAllowedSpiffeIdsOf(ctx: RuleContext, r: Located<WorkloadIdentity>): void {
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
  const spec = r.value.spec;
  check(r, ['spec', 'allowedSPIFFEIDs', 'inbound'], spec.allowedSPIFFEIDs?.inbound);
  check(r, ['spec', 'allowedSPIFFEIDs', 'outbound'], spec.allowedSPIFFEIDs?.outbound);
  spec.egress?.forEach((rule, e) => {
    check(r, ['spec', 'egress', e, 'allowedSPIFFEIDs'], rule.allowedSPIFFEIDs);
  });
}

/** The Services a list of label selectors picks; RT045 for each selector that picks none. */
function selectServices(
  { rep, find }: RuleContext,
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
export function checkEgressRulesOf(ctx: RuleContext, r: Located<WorkloadIdentity>): void {
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

/** RT042: the CredentialSource a binding or WorkloadCredential names exists in its namespace. */
function resolveSource(
  ctx: RuleContext,
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
  ctx: RuleContext,
  r: Located<CredentialBinding | WorkloadCredential>,
): Located<WorkloadIdentity> | undefined {
  const id = r.value.spec.workloadID;
  const valid = checkWorkloadId(ctx.rep, r, ['spec', 'workloadID'], id, ctx.opts.trustDomain);
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
export function checkBinding(ctx: RuleContext, r: Located<CredentialBinding>): void {
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
export function checkWorkloadCredential(ctx: RuleContext, r: Located<WorkloadCredential>): void {
  resolveSource(ctx, r);
  resolveIdentity(ctx, r);
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

/** Names of resources per namespace, indexed for "did you mean". */
export function namesByNamespace(
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
