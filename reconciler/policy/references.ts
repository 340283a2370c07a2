/**
 * Checks across resources: names and IDs that must be unique, references that must resolve, SPIFFE IDs,
 * selectors that must select something, and policies that would contradict each other.
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
import { checkService, checkSource, checkWorkloadId } from './resource-checks.ts';
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
import { ServiceIndex } from './service-index.ts';
import { didYouMean, Suggestions } from './suggest.ts';

export interface ValidateOptions {
  trustDomain: string;
  /** Plaintext Secrets in git are an error unless this is set. */
  allowSecrets?: boolean;
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
  // "Did you mean" indexes, built once on first use: one per name set, never one per diagnostic.
  const spiffeIdNames = once(() => new Suggestions(knownSpiffeIds));
  const workloadIdNames = once(() => new Suggestions(byWorkloadId.keys()));
  const sourceNames = once(() => namesByNamespace(set.sources));
  const workloadCredentialNames = once(() => namesByNamespace(set.workloadCredentials));

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
          hint: spiffeIdNames().didYouMean(id),
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
      for (const h of hits) matched.push(h);
    });
    return matched;
  };

  const resolveSource = (r: Located<CredentialBinding | WorkloadCredential>, ns: string) => {
    const name = r.value.spec.credentialSource;
    const source = sourcesByNs.get(`${ns}/${name}`);
    if (!source) {
      rep.at(
        'RT042',
        `CredentialSource "${name}" does not exist in namespace ${ns}`,
        r,
        ['spec', 'credentialSource'],
        { hint: sourceNames().get(ns)?.didYouMean(name) },
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
        hint: workloadIdNames().didYouMean(id) ?? 'create the WorkloadIdentity first, or fix the ID',
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
          rep.at(
            'RT043',
            `WorkloadCredential "${rule.credentialName}" does not exist in namespace ${namespaceOf(r)}`,
            r,
            [...base, 'credentialName'],
            { hint: workloadCredentialNames().get(namespaceOf(r))?.didYouMean(rule.credentialName) },
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
