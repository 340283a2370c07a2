/**
 * Who is calling the API. Every request but `/healthz`, `/readyz` and the signed webhooks must prove one of:
 *  - a bearer credential (`Authorization: Bearer rt_admin_…` or `rt_metrics_…`), compared in constant time;
 *  - over mutual TLS, a client X.509-SVID whose SPIFFE ID is one of the configured admin IDs (verified by the
 *    TLS stack against the trust bundle the server was given).
 * A credential in the query string is never looked at (URLs end up in logs and shell history).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { ApiRole } from './api-credentials.ts';

export interface Principal {
  role: ApiRole;
  /** `token:admin`, `token:metrics`, or the SPIFFE ID of the client certificate. */
  id: string;
}

export interface AuthConfig {
  tokens: Partial<Record<ApiRole, string>>;
  /** SPIFFE IDs whose X.509-SVID (mTLS) makes the caller an admin. */
  adminSpiffeIds?: readonly string[];
}

const digest = (s: string) => createHash('sha256').update(s).digest();

function sameSecret(a: string, b: string): boolean {
  // Digests have equal lengths, so neither the secret nor its length leaks through timing.
  return timingSafeEqual(digest(a), digest(b));
}

/** The principal of `req`, or null (unauthenticated). */
export function authenticate(req: IncomingMessage, config: AuthConfig): Principal | null {
  const header = req.headers.authorization;
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) return null;
    const given = m[1]!;
    let found: Principal | null = null;
    // Compare against every configured credential, so timing does not tell which role almost matched.
    for (const role of ['admin', 'metrics'] as const) {
      const expected = config.tokens[role];
      if (expected && sameSecret(given, expected)) found = { role, id: `token:${role}` };
    }
    return found;
  }
  const socket = req.socket as TLSSocket;
  if (socket.encrypted && socket.authorized && config.adminSpiffeIds?.length) {
    const san = socket.getPeerX509Certificate?.()?.subjectAltName ?? '';
    const uris = san
      .split(', ')
      .filter((s) => s.startsWith('URI:'))
      .map((s) => s.slice(4));
    // An X.509-SVID carries exactly one URI SAN.
    if (uris.length === 1 && config.adminSpiffeIds.includes(uris[0]!)) return { role: 'admin', id: uris[0]! };
  }
  return null;
}

/** What `role` may do: admins everything, the metrics credential only `GET /metrics`. */
export function allowed(role: ApiRole, method: string, route: string): boolean {
  if (role === 'admin') return true;
  return role === 'metrics' && method === 'GET' && route === '/metrics';
}
