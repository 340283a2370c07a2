/** The validated resources of a repository, grouped by kind, and the keys derived from them. */
import {
  type CredentialBinding,
  type CredentialSource,
  DEFAULT_NAMESPACE,
  type Secret,
  type Service,
  type WorkloadCredential,
  type WorkloadIdentity,
} from './kinds/index.ts';
import type { Located, LocatedResource } from './resources.ts';

export interface ResourceSet {
  identities: Located<WorkloadIdentity>[];
  services: Located<Service>[];
  sources: Located<CredentialSource>[];
  bindings: Located<CredentialBinding>[];
  workloadCredentials: Located<WorkloadCredential>[];
  secrets: Located<Secret>[];
}

const FIELD_OF = {
  WorkloadIdentity: 'identities',
  Service: 'services',
  CredentialSource: 'sources',
  CredentialBinding: 'bindings',
  WorkloadCredential: 'workloadCredentials',
  Secret: 'secrets',
} as const satisfies Record<LocatedResource['kind'], keyof ResourceSet>;

/** The resources of every file, in file order, grouped by kind. */
export function groupResources(files: readonly { resources: readonly LocatedResource[] }[]): ResourceSet {
  const set: ResourceSet = {
    identities: [],
    services: [],
    sources: [],
    bindings: [],
    workloadCredentials: [],
    secrets: [],
  };
  for (const file of files)
    for (const r of file.resources) (set[FIELD_OF[r.kind]] as Located<unknown>[]).push(r.located);
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
