/**
 * Checks across resources: names and IDs that must be unique, references that must resolve, SPIFFE IDs and
 * workload IDs, selectors that must select something, and policies that would contradict each other.
 */
import { parseSpiffeId, validatePath, workloadSpiffeId } from '../identity/spiffe-id.ts';
import { type Code, type NodePath, type PendingDiagnostic, pending, type Severity } from './diagnostics.ts';
import {
  checkAddress,
  checkCidr,
  checkHttpUrl,
  checkRoleArn,
  STS_MAX_SECONDS,
  STS_MIN_SECONDS,
  seconds,
} from './field-rules.ts';
import {
  type CredentialBinding,
  type CredentialSource,
  DEFAULT_NAMESPACE,
  type Secret,
  type Service,
  sourceType,
  UNSUPPORTED_SOURCE_TYPES,
  type WorkloadCredential,
  type WorkloadIdentity,
} from './kinds/index.ts';
import type { Located, LocatedResource } from './resources.ts';
import {
  checkSelectorValue,
  isAtLeastAsBroad,
  isKnownSelectorKey,
  labelsMatch,
  type NormalizedSelector,
  normalizeSelector,
  SELECTOR_KEYS,
  SELECTOR_PREFIXES,
} from './selectors.ts';
import { ServiceIndex } from './service-index.ts';
import { didYouMean } from './suggest.ts';

export interface ResourceSet {
  identities: Located<WorkloadIdentity>[];
  services: Located<Service>[];
  sources: Located<CredentialSource>[];
  bindings: Located<CredentialBinding>[];
  workloadCredentials: Located<WorkloadCredential>[];
  secrets: Located<Secret>[];
}

export interface ValidateOptions {
  trustDomain: string;
  /** Plaintext Secrets in git are an error unless this is set. */
  allowSecrets?: boolean;
}

const FIELD_OF = {
  WorkloadIdentity: 'identities',
  Service: 'services',
  CredentialSource: 'sources',
  CredentialBinding: 'bindings',
  WorkloadCredential: 'workloadCredentials',
  Secret: 'secrets',
} as const satisfies Record<LocatedResource['kind'], keyof ResourceSet>;

export function groupResources(resources: Iterable<LocatedResource>): ResourceSet {
  const set: ResourceSet = {
    identities: [],
    services: [],
    sources: [],
    bindings: [],
    workloadCredentials: [],
    secrets: [],
  };
  for (const r of resources) (set[FIELD_OF[r.kind]] as Located<unknown>[]).push(r.located);
  return set;
}

export function namespaceOf(r: Located<{ metadata: { namespace?: string | undefined } }>): string {
  return r.value.metadata.namespace ?? DEFAULT_NAMESPACE;
}

/** `daemonGroup:<id>`, `daemon:<id>` or `agent:<id>`: the unit that gets one node program. */
export function scopeKey(spec: WorkloadIdentity['spec']): string {
  const s = spec.scope;
  if (s.daemonGroup) return `daemonGroup:${s.daemonGroup.id}`;
  if (s.daemon) return `daemon:${s.daemon.id}`;
  return `agent:${s.agent!.id}`;
}

class Reporter {
  readonly out: PendingDiagnostic[] = [];
  at(
    code: Code,
    message: string,
    r: Located<unknown>,
    path: NodePath,
    opts: { hint?: string | undefined; at?: 'key' | 'value'; severity?: Severity } = {},
  ) {
    this.out.push(
      pending(
        code,
        message,
        {
          file: r.file,
          doc: r.doc,
          path,
          at: opts.at ?? 'value',
          resource: r.key,
          ...(opts.hint ? { hint: opts.hint } : {}),
        },
        opts.severity,
      ),
    );
  }
}

function checkWorkloadId(
  rep: Reporter,
  r: Located<unknown>,
  path: NodePath,
  workloadID: string,
  trustDomain: string,
): boolean {
  if (workloadID === '') {
    rep.at('RT031', 'workloadID must not be empty', r, path);
    return false;
  }
  if (workloadID.startsWith('/')) {
    rep.at('RT031', `workloadID "${workloadID}" must not start with "/"`, r, path, {
      hint: `write "${workloadID.replace(/^\/+/, '')}"`,
    });
    return false;
  }
  const reason = validatePath(`/${workloadID}`);
  if (reason) {
    const parsed = parseSpiffeId(`spiffe://x/${workloadID}`);
    rep.at(
      'RT031',
      `workloadID "${workloadID}" is not a valid SPIFFE ID path: ${parsed.ok ? reason : parsed.message}`,
      r,
      path,
      {
        hint: 'use "/"-separated segments of letters, digits, ".", "-" and "_"',
      },
    );
    return false;
  }
  const full = workloadSpiffeId(trustDomain, workloadID);
  if (!full.ok) {
    rep.at('RT031', `spiffe://${trustDomain}/${workloadID} ${full.message}`, r, path);
    return false;
  }
  return true;
}

export function checkReferences(set: ResourceSet, opts: ValidateOptions): PendingDiagnostic[] {
  const rep = new Reporter();
  const td = opts.trustDomain;

  // Unique names per kind and namespace.
  const seen = new Map<string, Located<unknown>>();
  for (const r of [
    ...set.identities,
    ...set.services,
    ...set.sources,
    ...set.bindings,
    ...set.workloadCredentials,
    ...set.secrets,
  ] as Located<unknown>[]) {
    const first = seen.get(r.key);
    if (first)
      rep.at('RT040', `${r.key} is defined twice (first in ${first.file})`, r, ['metadata', 'name'], {
        hint: 'rename one of them or delete the copy',
      });
    else seen.set(r.key, r);
  }

  // Identities by workloadID; SPIFFE IDs in this trust domain that exist.
  const byWorkloadId = new Map<string, Located<WorkloadIdentity>>();
  for (const r of set.identities) {
    const id = r.value.spec.workloadID;
    if (!checkWorkloadId(rep, r, ['spec', 'workloadID'], id, td)) continue;
    const first = byWorkloadId.get(id);
    if (first)
      rep.at(
        'RT041',
        `workloadID "${id}" is already claimed by ${first.key} (${first.file})`,
        r,
        ['spec', 'workloadID'],
        { hint: 'each workload ID names one identity; pick another ID' },
      );
    else byWorkloadId.set(id, r);
  }
  const knownSpiffeIds = new Set([...byWorkloadId.keys()].map((w) => `spiffe://${td}/${w}`));

  const sourcesByNs = new Map<string, Located<CredentialSource>>();
  for (const s of set.sources) sourcesByNs.set(`${namespaceOf(s)}/${s.value.metadata.name}`, s);
  const wcByNs = new Map<string, Located<WorkloadCredential>>();
  for (const w of set.workloadCredentials) wcByNs.set(`${namespaceOf(w)}/${w.value.metadata.name}`, w);

  const checkSpiffeIds = (r: Located<unknown>, path: NodePath, ids: string[] | undefined) => {
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
      } else if (parsed.id.trustDomain === td && !knownSpiffeIds.has(id)) {
        rep.at('RT048', `no WorkloadIdentity has the SPIFFE ID "${id}"`, r, [...path, i], {
          hint: didYouMean(id, knownSpiffeIds),
        });
      }
    });
  };

  const serviceIndex = new ServiceIndex(set.services);
  const checkLabelSelectors = (r: Located<unknown>, path: NodePath, selectors: Record<string, string>[]) => {
    const matched: Located<Service>[] = [];
    selectors.forEach((sel, i) => {
      const hits = serviceIndex.select(sel);
      if (hits.length === 0) {
        rep.at('RT045', `selector ${JSON.stringify(sel)} matches no Service`, r, [...path, i], {
          hint: "check the labels against the Services' spec.labels",
        });
      }
      matched.push(...hits);
    });
    return matched;
  };

  const resolveSource = (r: Located<CredentialBinding | WorkloadCredential>, ns: string) => {
    const name = r.value.spec.credentialSource;
    const source = sourcesByNs.get(`${ns}/${name}`);
    if (!source) {
      const names = set.sources.filter((s) => namespaceOf(s) === ns).map((s) => s.value.metadata.name);
      rep.at(
        'RT042',
        `CredentialSource "${name}" does not exist in namespace ${ns}`,
        r,
        ['spec', 'credentialSource'],
        { hint: didYouMean(name, names) },
      );
    }
    return source;
  };
  const resolveIdentity = (r: Located<CredentialBinding | WorkloadCredential>) => {
    const id = r.value.spec.workloadID;
    if (!checkWorkloadId(rep, r, ['spec', 'workloadID'], id, td)) return undefined;
    const identity = byWorkloadId.get(id);
    if (!identity) {
      rep.at('RT044', `no WorkloadIdentity has workloadID "${id}"`, r, ['spec', 'workloadID'], {
        hint: didYouMean(id, byWorkloadId.keys()) ?? 'create the WorkloadIdentity first, or fix the ID',
      });
    }
    return identity;
  };

  // Per identity.
  const claims = new Map<
    string,
    Array<{ r: Located<WorkloadIdentity>; index: number; sel: NormalizedSelector }>
  >();
  for (const r of set.identities) {
    const spec = r.value.spec;
    spec.selectors.forEach((map, i) => {
      for (const [key, raw] of Object.entries(map)) {
        if (!isKnownSelectorKey(key)) {
          rep.at('RT036', `unknown selector key "${key}"`, r, ['spec', 'selectors', i, key], {
            at: 'key',
            hint:
              didYouMean(key, [...SELECTOR_KEYS, ...SELECTOR_PREFIXES.map((p) => `${p}<name>`)]) ??
              `known keys: ${SELECTOR_KEYS.join(', ')}, ${SELECTOR_PREFIXES.map((p) => `${p}*`).join(', ')}`,
          });
          continue;
        }
        for (const v of Array.isArray(raw) ? raw : [raw]) {
          const problem = checkSelectorValue(key, v);
          if (problem) rep.at('RT023', problem, r, ['spec', 'selectors', i, key]);
        }
      }
      const scope = scopeKey(spec);
      const list = claims.get(scope) ?? [];
      list.push({ r, index: i, sel: normalizeSelector(map) });
      claims.set(scope, list);
    });
    checkSpiffeIds(r, ['spec', 'allowedSPIFFEIDs', 'inbound'], spec.allowedSPIFFEIDs?.inbound);
    checkSpiffeIds(r, ['spec', 'allowedSPIFFEIDs', 'outbound'], spec.allowedSPIFFEIDs?.outbound);
    const intercepts = spec.connection?.tls?.intercept === true;
    spec.egress?.forEach((rule, e) => {
      const base = ['spec', 'egress', e];
      const services = checkLabelSelectors(r, [...base, 'selectors'], rule.selectors);
      checkSpiffeIds(r, [...base, 'allowedSPIFFEIDs'], rule.allowedSPIFFEIDs);
      if (rule.connection?.tls?.mode === 'MUTUAL') {
        for (const s of services) {
          if (s.value.spec.external) {
            rep.at(
              'RT046',
              `egress rule ${e} asks for MUTUAL TLS to ${s.key}, an external service that holds no SPIFFE identity`,
              r,
              [...base, 'connection', 'tls', 'mode'],
              { hint: 'use SIMPLE for external services' },
            );
          }
        }
      }
      if (rule.workloadID !== undefined)
        checkWorkloadId(rep, r, [...base, 'workloadID'], rule.workloadID, td);
      if (rule.credentialName !== undefined) {
        const wc = wcByNs.get(`${namespaceOf(r)}/${rule.credentialName}`);
        if (!wc) {
          const names = set.workloadCredentials
            .filter((w) => namespaceOf(w) === namespaceOf(r))
            .map((w) => w.value.metadata.name);
          rep.at(
            'RT043',
            `WorkloadCredential "${rule.credentialName}" does not exist in namespace ${namespaceOf(r)}`,
            r,
            [...base, 'credentialName'],
            { hint: didYouMean(rule.credentialName, names) },
          );
        } else {
          const expected = rule.workloadID ?? spec.workloadID;
          if (wc.value.spec.workloadID !== expected) {
            rep.at(
              'RT053',
              `WorkloadCredential "${rule.credentialName}" is for workload "${wc.value.spec.workloadID}", but this rule belongs to "${expected}"`,
              r,
              [...base, 'credentialName'],
            );
          }
          if (
            services.some((s) => isTlsService(s.value)) &&
            !(intercepts || rule.connection?.tls?.intercept)
          ) {
            rep.at(
              'RT049',
              `credential "${rule.credentialName}" goes to a TLS service but the connection is not intercepted, so it cannot be injected`,
              r,
              [...base, 'credentialName'],
              { hint: 'set connection.tls.intercept: true on the rule' },
            );
          }
        }
      }
    });
  }

  // Two identities claiming the same process in the same scope.
  for (const entries of claims.values()) checkClaims(rep, entries);

  // Bindings and the older WorkloadCredentials.
  for (const r of set.bindings) {
    const source = resolveSource(r, namespaceOf(r));
    const identity = resolveIdentity(r);
    const injection = r.value.spec.propagation.injection;
    if (!injection) continue;
    const services = checkLabelSelectors(
      r,
      ['spec', 'propagation', 'injection', 'selectors'],
      injection.selectors,
    );
    if (identity && source && !identityIntercepts(identity.value, services)) {
      const tlsTargets = services.filter((s) => isTlsService(s.value));
      if (tlsTargets.length) {
        rep.at(
          'RT049',
          `${identity.key} does not intercept TLS, so this credential cannot be injected into ${tlsTargets.map((s) => s.key).join(', ')}`,
          r,
          ['spec', 'propagation', 'injection'],
          { at: 'key', hint: `set spec.connection.tls.intercept: true on ${identity.key}` },
        );
      }
    }
  }
  for (const r of set.workloadCredentials) {
    resolveSource(r, namespaceOf(r));
    resolveIdentity(r);
  }

  for (const r of set.sources) checkSource(rep, r);
  for (const r of set.services) checkService(rep, r);
  for (const r of set.secrets) {
    const values = Object.keys(r.value.data ?? {}).length + Object.keys(r.value.stringData ?? {}).length;
    if (values > 0 && !r.value.sops && !opts.allowSecrets) {
      rep.at(
        'RT050',
        `Secret "${r.value.metadata.name}" holds ${values} plaintext value(s) committed to git`,
        r,
        [r.value.stringData ? 'stringData' : 'data'],
        {
          at: 'key',
          hint: 'create the Secret in the cluster (kubectl create secret) or in --secrets-dir, or encrypt it with SOPS; --allow-plaintext-secrets accepts it',
        },
      );
    }
  }
  for (const r of [
    ...set.identities,
    ...set.services,
    ...set.sources,
    ...set.bindings,
    ...set.workloadCredentials,
  ] as Located<{ status?: unknown }>[]) {
    if (r.value.status !== undefined)
      rep.at('RT052', 'status is written by the reconciler; the value in git is ignored', r, ['status'], {
        at: 'key',
        hint: 'remove the status block',
      });
  }
  return rep.out;
}

function isTlsService(s: Service): boolean {
  return s.spec.tls === true || (s.spec.addresses ?? []).some((a) => a.port === 443);
}

function identityIntercepts(identity: WorkloadIdentity, services: Located<Service>[]): boolean {
  if (identity.spec.connection?.tls?.intercept) return true;
  return (identity.spec.egress ?? []).some(
    (rule) =>
      rule.connection?.tls?.intercept &&
      services.every((s) => rule.selectors.some((sel) => labelsMatch(sel, s.value.spec.labels))),
  );
}

function checkClaims(
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

function checkSource(rep: Reporter, r: Located<CredentialSource>) {
  const spec = r.value.spec;
  const type = sourceType(spec);
  if ((UNSUPPORTED_SOURCE_TYPES as readonly string[]).includes(type)) {
    rep.at(
      'RT051',
      `${type} credential sources are not yet supported: nothing will be fetched for "${r.value.metadata.name}"`,
      r,
      ['spec', type],
      { at: 'key', hint: 'use a kubernetes, vault or aws source, or expect the bindings to report FAILED' },
    );
  }
  if (spec.aws) {
    const problem = checkRoleArn(spec.aws.roleArn);
    if (problem) rep.at('RT033', problem, r, ['spec', 'aws', 'roleArn']);
    if (spec.aws.lifetime) {
      const s = seconds(spec.aws.lifetime);
      if (s < STS_MIN_SECONDS || s > STS_MAX_SECONDS) {
        rep.at(
          'RT032',
          `lifetime ${spec.aws.lifetime} is outside what STS grants (${STS_MIN_SECONDS}s..${STS_MAX_SECONDS}s)`,
          r,
          ['spec', 'aws', 'lifetime'],
          { hint: "the role's MaxSessionDuration may lower the upper bound further" },
        );
      }
    }
    if (spec.aws.idTokenLifetime && seconds(spec.aws.idTokenLifetime) < 1) {
      rep.at('RT032', 'idTokenLifetime must be at least 1s', r, ['spec', 'aws', 'idTokenLifetime']);
    }
  }
  if (spec.vault) {
    const { error, plaintext } = checkHttpUrl(spec.vault.address);
    if (error) rep.at('RT034', `vault.address: ${error}`, r, ['spec', 'vault', 'address']);
    else if (plaintext)
      rep.at(
        'RT054',
        'vault.address uses plain http: Vault tokens and secrets would cross the network unencrypted',
        r,
        ['spec', 'vault', 'address'],
        { hint: 'use https' },
      );
  }
}

function checkService(rep: Reporter, r: Located<Service>) {
  r.value.spec.addresses?.forEach((a, i) => {
    const problem = checkAddress(a.address);
    if (problem) rep.at('RT035', problem, r, ['spec', 'addresses', i, 'address']);
    a.networkPrefixes?.forEach((p, j) => {
      const bad = checkCidr(p);
      if (bad) rep.at('RT035', bad, r, ['spec', 'addresses', i, 'networkPrefixes', j]);
    });
  });
}
