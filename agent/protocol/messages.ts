/**
 * TypeScript shapes of the messages in riptides_agent.proto, as @grpc/proto-loader decodes them (camelCase
 * field names, `defaults: true`, `longs: Number`, `enums: String`, bytes as Buffer, `oneofs: true` adding
 * the name of the member that is set). Outgoing messages may leave fields out (`Out<T>`). A round-trip test
 * (test/agents/protocol.test.ts) encodes a fully populated value of every message through the loaded .proto
 * and requires it back unchanged, so a field named here but not in the .proto (or the reverse) fails it.
 */

export type TlsMode = 'TLS_MODE_UNSPECIFIED' | 'TLS_MODE_MUTUAL' | 'TLS_MODE_PERMISSIVE' | 'TLS_MODE_SIMPLE';

/** An outgoing message: any field may be left out (proto3 default). */
export type Out<T> = T extends Buffer
  ? T
  : T extends readonly (infer U)[]
    ? Out<U>[]
    : T extends object
      ? { [K in keyof T]?: Out<T[K]> | null }
      : T;

export interface ErrorDetail {
  code: string;
  message: string;
  hint: string;
}

export interface TrustBundle {
  trustDomain: string;
  version: string;
  x509Authorities: Buffer[];
}

export interface JoinToken {
  token: string;
  expectedDaemonGroup: string;
  protocolVersion: number;
}

export interface JoinRequest {
  token?: JoinToken | null;
  csrDer?: Buffer;
  step?: 'token' | 'csrDer';
}

export interface JoinAssignment {
  daemonId: string;
  spiffeId: string;
  daemonGroup: string;
  trustDomain: string;
}

export interface JoinResult {
  svidChainDer: Buffer[];
  bundle: TrustBundle | null;
  reconcilerSpiffeId: string;
}

export interface JoinResponse {
  assignment?: JoinAssignment | null;
  result?: JoinResult | null;
  step?: 'assignment' | 'result';
}

export interface CredentialState {
  refHash: string;
  version: number;
  fingerprint: string;
  expiresAtUnix: number;
}

export interface Hello {
  protocolVersion: number;
  agentVersion: string;
  programVersion: string;
  identityVersions: Record<string, string>;
  ruleHashes: string[];
  credentialRefHashes: string[];
  credentials: CredentialState[];
  bundleVersion: string;
}

export interface ProgramAck {
  responseNonce: string;
  versionInfo: string;
  errorDetail: ErrorDetail | null;
}

export interface IdentityState {
  spiffeId: string;
  svidSerial: string;
  svidNotAfterUnix: number;
  processCount: number;
  /** The identity's hash in the program held ('' from agents that predate the field). */
  hash: string;
}

export interface ProcessState {
  pid: number;
  spiffeId: string;
  conflicts: string[];
}

export interface ControlHealth {
  health: string;
  enforcedVersion: string;
  enforcedGeneration: number;
  error: string;
  drift: string[];
}

export interface DataPlaneListener {
  kind: string;
  address: string;
  target: string;
}

export interface DataPlaneState {
  health: string;
  listeners: DataPlaneListener[];
  activeOutbound: number;
  activeInbound: number;
  connections: Record<string, number>;
  handshakesFailed: Record<string, number>;
  credentialsInjected: Record<string, number>;
  requestsRefused: Record<string, number>;
  connectionsRevoked: number;
}

export interface StateReport {
  programVersion: string;
  identities: IdentityState[];
  credentials: CredentialState[];
  processes: ProcessState[];
  control: ControlHealth | null;
  atUnixMs: number;
  bundleVersion: string;
  rejectedVersion: string;
  rejectedError: ErrorDetail | null;
  dataPlane: DataPlaneState | null;
  /** The request ID of the last ControlRepair finished ('' when none). */
  repairedId: string;
}

export interface SvidRequest {
  requestId: string;
  spiffeId: string;
  csrDer: Buffer;
}

export interface AgentMessage {
  hello?: Hello | null;
  ack?: ProgramAck | null;
  report?: StateReport | null;
  svidRequest?: SvidRequest | null;
  kind?: 'hello' | 'ack' | 'report' | 'svidRequest';
}

export interface StringList {
  values: string[];
}

export interface ProcessSelector {
  match: Record<string, StringList>;
}

export interface LabelSelector {
  labels: Record<string, string>;
}

export interface Identity {
  spiffeId: string;
  workloadId: string;
  resource: string;
  hash: string;
  selectors: ProcessSelector[];
  inboundMode: TlsMode;
  intercept: boolean;
  allowedInbound: string[];
  allowedOutbound: string[];
  x509TtlSeconds: number;
  dnsNames: string[];
  egressRuleHashes: string[];
  credentialRefHashes: string[];
  scope: string;
}

export interface Destination {
  service: string;
  external: boolean;
  address: string;
  port: number;
  aliases: string[];
  networkPrefixes: string[];
}

export interface EgressRule {
  hash: string;
  index: number;
  selectors: LabelSelector[];
  destinations: Destination[];
  mode: TlsMode;
  intercept: boolean;
  allowedSpiffeIds: string[];
  workloadId: string;
  credentialName: string;
}

export interface CredentialSourceRef {
  resource: string;
  type: string;
  supported: boolean;
  specHash: string;
}

export interface CredentialRef {
  hash: string;
  via: string;
  resource: string;
  source: CredentialSourceRef | null;
  injection: { destinations: Destination[] } | null;
  sysfs: { dir: string } | null;
}

export interface ProgramUpdate {
  nonce: string;
  versionInfo: string;
  baseVersion: string;
  full: boolean;
  trustDomain: string;
  identities: Identity[];
  removedIdentities: string[];
  rules: EgressRule[];
  credentialRefs: CredentialRef[];
  scopes: string[];
}

export interface SvidResponse {
  requestId: string;
  spiffeId: string;
  certChainDer: Buffer[];
  serial: string;
  notAfterUnix: number;
}

export interface CredentialValue {
  refHash: string;
  version: number;
  fingerprint: string;
  expiresAtUnix: number;
  bearer?: { token: string } | null;
  aws?: { accessKeyId: string; secretAccessKey: string; sessionToken: string } | null;
  value?: 'bearer' | 'aws';
}

export interface CredentialUpdate {
  values: CredentialValue[];
  withdrawn: string[];
}

export interface Refusal {
  requestId: string;
  messageKind: string;
  error: ErrorDetail | null;
}

/** Put the control interface back as the agent wrote it (a drift heal). */
export interface ControlRepair {
  requestId: string;
}

export interface ServerMessage {
  program?: ProgramUpdate | null;
  svid?: SvidResponse | null;
  credentials?: CredentialUpdate | null;
  bundle?: TrustBundle | null;
  refusal?: Refusal | null;
  repair?: ControlRepair | null;
  kind?: 'program' | 'svid' | 'credentials' | 'bundle' | 'refusal' | 'repair';
}
