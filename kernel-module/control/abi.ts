/**
 * The control interface of the kernel module: the ABI the agent writes and the kernel side (and the data
 * plane) reads. A sysfs-like tree under one root directory, modelled on the real module's
 * `/sys/module/riptides` (../shared/reference/riptides.md §7). Every type here is the JSON that lands in a
 * file of that tree; field names are part of the ABI (`abi: 1`), so a daemon in another language can write
 * the same tree.
 */
import { createHash } from 'node:crypto';

/** ABI version written in `config`, `rules` and `processes`; a reader refuses any other. */
export const CONTROL_ABI = 1 as const;

/** The production root, as the real module's. The embedded default is a directory in the agent's state dir. */
export const PRODUCTION_ROOT = '/sys/module/riptides';

/** Files of the tree, relative to the root. */
export const ControlPaths = {
  /** `OK\n` or `DEGRADED: <reason>\n`; written by the kernel side, absent while it is not running. */
  health: 'health',
  /** {@link ControlConfig}. */
  config: 'config',
  /** System roots + the node's intercept CA + the trust bundle: what applications trust (PEM). */
  caBundle: 'certs/ca-certificates.crt',
  /** The trust domain's X.509 authorities: what peers' SVIDs are verified against (PEM). */
  trustBundle: 'certs/trust-bundle.crt',
  /** The node-local intercept CA certificate (PEM). */
  interceptCaCert: 'certs/intercept-ca.crt',
  /** Its private key (PKCS#8 PEM, 0600 in a 0700 directory). */
  interceptCaKey: 'private/intercept-ca.key',
  /** {@link RuleTable}, written by the agent. */
  rules: 'rules',
  /** {@link EnforcedStatus}, written by the kernel side. */
  enforced: 'rules.enforced',
  /** {@link ProcessTable}, written by the agent. */
  processes: 'processes',
  /** One {@link ConnectionRecord} JSON object per line, written by the data plane. */
  connections: 'connections',
  /** {@link Manifest}: what the writer wrote, for drift detection. */
  manifest: 'manifest',
  identities: 'identities',
  credentials: 'credentials',
} as const;

/** Files of an identity directory (`identities/<sid>/`). */
export const SVID_CERT_FILE = 'svid.crt';
export const SVID_KEY_FILE = 'svid.key';

/** File names of `sysfs` credential propagation, per credential kind. */
export const CREDENTIAL_FILES = { bearer: 'token', aws: 'credentials' } as const;

/** Modes of what the writer creates. Secrets are 0600 in 0700 directories. */
export const Modes = {
  root: 0o755,
  publicDir: 0o755,
  privateDir: 0o700,
  /** `credentials/` and `credentials/<binding-hash>/`: traversable, not listable, so a workload can reach its own files. */
  traverseDir: 0o711,
  publicFile: 0o644,
  privateFile: 0o600,
} as const;

/**
 * `<sid>`: the first 16 hex of SHA-256 over the SPIFFE ID. Stable across policy edits (it depends on the ID
 * only), and safe as a file name whatever the ID contains.
 */
export function sidOf(spiffeId: string): string {
  return createHash('sha256').update(spiffeId).digest('hex').slice(0, 16);
}

/** `identities/<sid>`: the directory of an identity's SVID. */
export function svidDirOf(spiffeId: string): string {
  return `${ControlPaths.identities}/${sidOf(spiffeId)}`;
}

/** `config`: what the module knows about its node. Keys in snake_case, as the real module's file. */
export interface ControlConfig {
  abi: typeof CONTROL_ABI;
  trust_domain: string;
  daemon_id: string;
}

export type TlsMode = 'MUTUAL' | 'PERMISSIVE' | 'SIMPLE';

/** A Service address an egress rule or an injection applies to (the compiler's Destination). */
export interface RuleDestination {
  /** `Service/<namespace>/<name>`. */
  service: string;
  external: boolean;
  /** Host name or IP address. */
  address: string;
  /** null: any port. */
  port: number | null;
  aliases: string[];
  /** CIDRs. */
  networkPrefixes: string[];
}

export interface EgressRule {
  hash: string;
  destinations: RuleDestination[];
  /** mode null: mTLS only when the peer is itself a managed workload, plain TCP otherwise. */
  tls: { mode: TlsMode | null; intercept: boolean };
  /** Peers this rule may reach (SPIFFE IDs); empty: any peer the identity's outbound list allows. */
  allowedSpiffeIds: string[];
  /** Hashes of entries of the identity's `credentials` injected on this rule's connections. */
  credentials: string[];
}

export type CredentialKind = 'bearer' | 'aws' | 'unsupported';

export interface CredentialRule {
  /** The credential reference's content hash; also the key of the in-memory credential store. */
  hash: string;
  /** `<Kind>/<namespace>/<name>` of the binding (CredentialBinding or WorkloadCredential). */
  binding: string;
  /** The binding's name. */
  name: string;
  kind: CredentialKind;
  injection: { destinations: RuleDestination[] } | null;
  /** `<binding-hash>/<binding-name>`, relative to `credentials/`. */
  sysfs: { dir: string } | null;
}

export interface IdentityRule {
  spiffeId: string;
  workloadID: string;
  hash: string;
  inbound: { mode: TlsMode; intercept: boolean; allowedSpiffeIds: string[] };
  outbound: { allowedSpiffeIds: string[] };
  egress: EgressRule[];
  credentials: CredentialRule[];
  /** The SVID in `dir` (= `identities/<sid>`), or null while the identity has none. */
  svid: { dir: string; serial: string; notAfter: string } | null;
}

/** `rules`: the rule table. `generation` grows by one on every write of the tree's writer. */
export interface RuleTable {
  abi: typeof CONTROL_ABI;
  /** The program version (its content hash) this table comes from. */
  version: string;
  generation: number;
  trustDomain: string;
  identities: IdentityRule[];
}

/**
 * `rules.enforced`: what the kernel side enforces. A refused table leaves `version` / `generation` at the
 * table still in force (null when none ever was) and says why in `error`.
 */
export interface EnforcedStatus {
  version: string | null;
  generation: number | null;
  /** ISO 8601: when this status was written. */
  at: string;
  error?: { generation: number | null; version: string | null; reason: string };
}

/**
 * One attested process. `startTime` is field 22 of /proc/<pid>/stat (clock ticks after boot): with the pid it
 * names the process, so a reused pid is never mistaken for the process that had it before.
 *
 * Exactly one of these shapes:
 *  - one identity: `spiffeId` set, `destinationPorts` null (all connections) or the ports it applies to;
 *  - none: everything null;
 *  - conflict: two or more identities claim the process on overlapping ports; `conflict` lists them and the
 *    process gets none of them;
 *  - per-port `routes`: two or more identities, each limited by `destination:port` to ports no other one
 *    claims (e.g. 8080 → A, 5432 → B); `spiffeId` is null. {@link identityForConnection} resolves a port.
 */
export interface ProcessRecord {
  pid: number;
  startTime: number;
  spiffeId: string | null;
  conflict: string[] | null;
  destinationPorts: number[] | null;
  routes?: Array<{ spiffeId: string; destinationPorts: number[] }>;
}

/** `processes`. */
export interface ProcessTable {
  abi: typeof CONTROL_ABI;
  generation: number;
  processes: ProcessRecord[];
}

/**
 * A line of `connections` (the real module's `/proc/riptides/connections` fields, plus `pid` and the name of
 * the binding whose credential was injected, never the credential).
 */
export interface ConnectionRecord {
  dst: string;
  dst_port: number;
  src_port: number;
  /** e.g. `TLS1.3`, or `NONE`. */
  tls_version: string;
  mtls_version: string;
  spiffe_id: string | null;
  peer_spiffe_id: string | null;
  pid: number | null;
  binding: string | null;
}

/**
 * `manifest`: SHA-256 (hex) and mode of every file the writer wrote, by path relative to the root, and the
 * last generation it used (so a restarted writer continues above it).
 */
export interface Manifest {
  abi: typeof CONTROL_ABI;
  generation: number;
  files: Record<string, { sha256: string; mode: number }>;
}

/**
 * The identity a process's connection to `port` uses: its single identity when that applies to the port, the
 * route for the port, a conflict, or none. The data plane calls this per connection (`destination:port` in a
 * selector cannot be decided before the connection exists).
 */
export function identityForConnection(
  record: ProcessRecord,
  port: number,
): { spiffeId: string } | { conflict: string[] } | null {
  if (record.conflict) return { conflict: record.conflict };
  if (record.spiffeId) {
    if (record.destinationPorts === null || record.destinationPorts.includes(port))
      return { spiffeId: record.spiffeId };
    return null;
  }
  for (const r of record.routes ?? []) if (r.destinationPorts.includes(port)) return { spiffeId: r.spiffeId };
  return null;
}
