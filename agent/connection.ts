/**
 * gRPC channels toward the reconciler. The reconciler is authenticated by SPIFFE ID (its SVID's one URI SAN
 * must be spiffe://<td>/riptides/reconciler) against the trust bundle, never by host name; the agent
 * presents its own SVID once it has one. The only unverified connection is the one that fetches the bundle
 * while joining, and what it returns is trusted only if it holds the root pinned by the join token.
 */
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { AgentServiceClient, CHANNEL_OPTIONS } from './protocol/wire.ts';

/** The URI SANs of a peer certificate as Node reports them (`URI:spiffe://…, DNS:…`). */
export function uriSans(cert: PeerCertificate): string[] {
  const san = cert.subjectaltname ?? '';
  return san
    .split(/,\s*/)
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}

export type AgentServiceStub = grpc.Client & {
  GetTrustBundle: (
    req: object,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: unknown) => void,
  ) => grpc.ClientUnaryCall;
  Join: (opts: grpc.CallOptions) => grpc.ClientDuplexStream<unknown, unknown>;
  Sync: (opts?: grpc.CallOptions) => grpc.ClientDuplexStream<unknown, unknown>;
};

/** SNI sent to the reconciler (host names are not how it is authenticated; an IP is not a valid SNI). */
const SERVER_NAME = 'reconciler.riptides.invalid';

export interface ChannelIdentity {
  /** PEM of the trust domain's authorities. */
  bundlePem: string;
  /** The SPIFFE ID the reconciler must present (or a pattern, while joining with a bundle file). */
  reconcilerSpiffeId: string | RegExp;
  /** The agent's own SVID (key + chain, PEM), for mutual TLS. */
  keyPem?: string;
  chainPem?: string;
}

/** A client for `server` (HOST:PORT) that verifies the reconciler's SVID against the bundle. */
export function verifiedClient(server: string, id: ChannelIdentity): AgentServiceStub {
  const creds = grpc.credentials.createSsl(
    Buffer.from(id.bundlePem),
    id.keyPem ? Buffer.from(id.keyPem) : null,
    id.chainPem ? Buffer.from(id.chainPem) : null,
    {
      checkServerIdentity: (_host, cert) => {
        const uris = uriSans(cert);
        const want = id.reconcilerSpiffeId;
        if (uris.length === 1 && (typeof want === 'string' ? uris[0] === want : want.test(uris[0]!)))
          return undefined;
        return new Error(
          `the server at ${server} presented ${uris.join(', ') || 'no SPIFFE ID'}, not ${String(want)}`,
        );
      },
    },
  );
  return new AgentServiceClient(server, creds, {
    ...CHANNEL_OPTIONS,
    'grpc.ssl_target_name_override': SERVER_NAME,
    'grpc.default_authority': SERVER_NAME,
  }) as unknown as AgentServiceStub;
}

/** A client that accepts any server certificate: only for GetTrustBundle, whose answer is checked by pin. */
export function unverifiedClient(server: string): AgentServiceStub {
  const creds = grpc.credentials.createSsl(null, null, null, { rejectUnauthorized: false });
  return new AgentServiceClient(server, creds, {
    ...CHANNEL_OPTIONS,
    'grpc.ssl_target_name_override': SERVER_NAME,
    'grpc.default_authority': SERVER_NAME,
  }) as unknown as AgentServiceStub;
}
