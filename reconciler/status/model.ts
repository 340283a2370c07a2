/**
 * The status of everything the reconciler manages, as `ctl get` and `ctl describe` show it and as the store
 * keeps it. Plain JSON: the store writes it, the API serves it, the CLI formats it. Never a credential value
 * (fingerprints and expiry only).
 *
 * STATE words are the seeds' (`riptides-cli ctl get credentialsource` → `AVAILABLE`, `ctl get credentialbinding`
 * → `OK`); they are the credential manager's states (`credentials/types.ts`).
 */
import type { BindingStatus, SourceStatus } from '../credentials/types.ts';
import type { Condition } from './conditions.ts';
import type { StatusEvent } from './events.ts';

export const RESOURCE_KINDS = [
  'WorkloadIdentity',
  'Service',
  'CredentialSource',
  'CredentialBinding',
  'WorkloadCredential',
] as const;
export type ResourceKind = (typeof RESOURCE_KINDS)[number];

interface StatusBase {
  namespace: string;
  name: string;
  /** Repository-relative file that defines it at `observedRevision`. */
  file: string | null;
  observedRevision: string | null;
  conditions: Condition[];
}

export interface WorkloadIdentityStatus extends StatusBase {
  kind: 'WorkloadIdentity';
  workloadID: string;
  spiffeId: string;
  /** `daemonGroup:<id>`, `daemon:<id>` or `agent:<id>`. */
  scope: string;
  /** Daemons whose program carries this identity. */
  scheduledNodes: number;
  /** Processes attested to this identity on those daemons. */
  attestedProcesses: number;
  /** Earliest notAfter of this identity's X.509-SVIDs on the daemons (ISO 8601), null when none is issued. */
  svidExpiry: string | null;
}

export interface ServiceStatus extends StatusBase {
  kind: 'Service';
  /** `host:port` (or `host` when no port). */
  addresses: string[];
  external: boolean;
  labels: Record<string, string>;
  tags: string[];
}

export interface CredentialSourceStatus extends StatusBase {
  kind: 'CredentialSource';
  /** Provider block: kubernetes, vault, aws, or an unsupported one (gcp, …). */
  type: string;
  state: SourceStatus['state'];
  message: string | null;
  /** Bindings (and WorkloadCredentials) that use it. */
  bindings: number;
}

export interface CredentialBindingStatus extends StatusBase {
  kind: 'CredentialBinding' | 'WorkloadCredential';
  workloadID: string;
  credentialSource: string;
  /** `injection`, `sysfs`, both joined with `+`; `egress` for a WorkloadCredential. */
  propagation: string;
  state: BindingStatus['state'];
  message: string | null;
  /** Keyed fingerprint of the credential held, never the value. */
  fingerprint: string | null;
  version: number | null;
  expiresAt: string | null;
}

export type ResourceStatus =
  | WorkloadIdentityStatus
  | ServiceStatus
  | CredentialSourceStatus
  | CredentialBindingStatus;

/** A node agent (the real product's Daemon kind). */
export interface DaemonStatus {
  /** Daemon id. */
  name: string;
  /** `riptides/daemon/<id>`: what scopes name (`scope.daemon.id`). */
  workloadID: string;
  group: string | null;
  /** `ok`, `degraded` (the kernel side reports a problem), `unreachable` (no stream), `unknown`. */
  health: 'ok' | 'degraded' | 'unreachable' | 'unknown';
  healthMessage: string | null;
  /** Program version the daemon says it enforces (ACKed). */
  appliedVersion: string | null;
  /** Program version the reconciler wants it to enforce. */
  desiredVersion: string | null;
  /** ISO 8601 of the last message from it. */
  lastContact: string | null;
  /** Attested processes it reports. */
  processes: number;
  conditions: Condition[];
}

/** A diagnostic of a commit that does not validate, as the source status carries it. */
export interface SourceDiagnostic {
  code: string;
  severity: 'error' | 'warning';
  message: string;
  file: string;
  line: number;
  column: number;
}

/** The policy repository as the reconciler follows it (`flux get sources git`). */
export interface SourceStatusView {
  name: string;
  /** URL without credentials, or the local path. */
  url: string;
  branch: string;
  path: string;
  lastFetchedRevision: string | null;
  lastFetchedAt: string | null;
  lastAppliedRevision: string | null;
  lastAppliedAt: string | null;
  conditions: Condition[];
  /** Diagnostics of the last fetched revision when it does not validate (bounded, see omittedDiagnostics). */
  diagnostics: SourceDiagnostic[];
  omittedDiagnostics: number;
}

export interface StatusSnapshot {
  format: 1;
  /** ISO 8601. */
  generatedAt: string;
  source: SourceStatusView | null;
  resources: ResourceStatus[];
  daemons: DaemonStatus[];
  /** Recent events by key (`Kind/namespace/name`, `Daemon/<id>`, `Source/<name>`), oldest first. */
  events: Record<string, StatusEvent[]>;
}

/**
 * The whole status sharing the book's objects, and a lookup by key of a resource's entry and of an event ring
 * (`Kind/namespace/name`, `Daemon/<id>`, `Source/<name>`): what the status store reads.
 */
export interface StatusView extends StatusSnapshot {
  lookup: {
    resource(key: string): ResourceStatus | undefined;
    events(key: string): readonly StatusEvent[] | undefined;
  };
}

export function resourceKeyOf(r: { kind: string; namespace: string; name: string }): string {
  return `${r.kind}/${r.namespace}/${r.name}`;
}

export function daemonKey(name: string): string {
  return `Daemon/${name}`;
}

export function sourceKey(name: string): string {
  return `Source/${name}`;
}

/**
 * `items` sorted by namespace and name (stable). The keys are built once per item, not per comparison: with
 * 10,000 resources the comparator runs ~130,000 times per sort.
 */
export function sortByName<T extends { namespace?: string; name: string; kind?: string }>(
  items: readonly T[],
): T[] {
  // Kind last: a Service and a WorkloadIdentity often share a name, and the order must not depend on the input's.
  const keyed = items.map((item) => ({
    key: `${item.namespace ?? ''}/${item.name}\u0000${item.kind ?? ''}`,
    item,
  }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return keyed.map((k) => k.item);
}
