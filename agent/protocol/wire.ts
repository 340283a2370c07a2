/**
 * The agent protocol on the wire: riptides_agent.proto loaded with @grpc/proto-loader (at run time, so the
 * .proto stays the one contract and no generated code can drift from it), the gRPC service definition both
 * sides use, the limits both sides enforce, and the SPIFFE IDs of the two ends.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { AgentMessage, ServerMessage } from './messages.ts';

/** The major version of the protocol this code speaks; a Hello or JoinToken with another one is refused. */
export const PROTOCOL_VERSION = 1;

export const SERVICE_NAME = 'riptides.agent.v1.AgentService';

/** Limits both ends enforce on what the other sends. */
export const LIMITS = {
  /** Any one gRPC message (grpc-js refuses larger ones with RESOURCE_EXHAUSTED). */
  maxMessageBytes: 4 * 1024 * 1024,
  /** A CSR in an SvidRequest or a Join. */
  maxCsrBytes: 16 * 1024,
  /** Identities in a program, processes and credential states in a report. */
  maxIdentities: 10_000,
  maxProcesses: 65_536,
  maxCredentials: 10_000,
  /** SVID requests an agent may have outstanding at once. */
  maxPendingSvidRequests: 64,
  /** Length of any identifier-like string field (SPIFFE IDs are at most 2048 bytes). */
  maxIdLength: 2048,
} as const;

import { DAEMON_PATH_PREFIX, RECONCILER_PATH } from '../../kernel-module/identity-paths.ts';

export { DAEMON_PATH_PREFIX, RECONCILER_PATH };

export function daemonSpiffeId(trustDomain: string, daemonId: string): string {
  return `spiffe://${trustDomain}/${DAEMON_PATH_PREFIX}${daemonId}`;
}

export function reconcilerSpiffeId(trustDomain: string): string {
  return `spiffe://${trustDomain}/${RECONCILER_PATH}`;
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

function protoPath(): string {
  // From the sources (agent/protocol/) or from the compiled tree (dist/agent/protocol/).
  const candidates = [
    new URL('./riptides_agent.proto', import.meta.url),
    new URL('../../../agent/protocol/riptides_agent.proto', import.meta.url),
  ].map((u) => fileURLToPath(u));
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`riptides_agent.proto not found (looked in ${candidates.join(', ')})`);
  return found;
}

/** The .proto's location on disk (for tests and for implementers in other languages). */
export const PROTO_FILE = protoPath();

const packageDefinition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);

/** The service as grpc-js takes it; Sync's responses may be passed pre-encoded (a Buffer) to count bytes. */
export const agentServiceDefinition: grpc.ServiceDefinition = (() => {
  const def = packageDefinition[SERVICE_NAME] as grpc.ServiceDefinition;
  const sync = def.Sync!;
  const encode = sync.responseSerialize;
  return {
    ...def,
    Sync: {
      ...sync,
      responseSerialize: (m: unknown) => (Buffer.isBuffer(m) ? m : encode(m)),
    },
  };
})();

/** Encodes a ServerMessage as the Sync stream sends it (without the 5-byte gRPC frame prefix). */
export function encodeServerMessage(m: ServerMessage | Record<string, unknown>): Buffer {
  return agentServiceDefinition.Sync!.responseSerialize(m);
}

export function decodeServerMessage(b: Buffer): ServerMessage {
  return agentServiceDefinition.Sync!.responseDeserialize(b) as ServerMessage;
}

export function encodeAgentMessage(m: AgentMessage | Record<string, unknown>): Buffer {
  return agentServiceDefinition.Sync!.requestSerialize(m);
}

export function decodeAgentMessage(b: Buffer): AgentMessage {
  return agentServiceDefinition.Sync!.requestDeserialize(b) as AgentMessage;
}

/** A client constructor for AgentService (getTrustBundle, join, sync). */
export const AgentServiceClient = grpc.makeGenericClientConstructor(agentServiceDefinition, 'AgentService');

/** Channel options shared by both ends: message caps and HTTP/2 keepalive to find dead peers. */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': LIMITS.maxMessageBytes,
  'grpc.max_send_message_length': LIMITS.maxMessageBytes,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
};

/**
 * A gRPC error as one readable line: its details without grpc-js's empty trailer ("Resolution note: " with
 * nothing after it) and without the nested "Error: " prefix it puts before the socket error.
 */
export function grpcErrorText(err: unknown): string {
  const e = err as Partial<grpc.ServiceError>;
  const text = e.details || e.message || String(err);
  return text
    .replace(/\s*Resolution note:\s*$/, '')
    .replace(/Last error: Error: /, 'Last error: ')
    .replace(/\.$/, '');
}
