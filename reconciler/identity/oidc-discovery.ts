/**
 * OIDC discovery for the JWT issuer, as AWS STS (IAM OIDC identity providers) and Vault's JWT auth
 * (`oidc_discovery_url`) fetch it: `<issuer>/.well-known/openid-configuration` and the JWKS at
 * `<issuer>/keys` (SPIRE's oidc-discovery-provider paths). The issuer URL may carry a path; the handler
 * answers only its two paths and returns false for anything else, so it composes into any node:http(s)
 * server.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { JwtMinter } from './jwt-svid.ts';

/** Relying parties re-fetch at most this often; a prepared key is published hours before it signs. */
const CACHE_SECONDS = 300;

export function oidcDiscoveryDocument(issuer: string): Record<string, unknown> {
  return {
    issuer,
    jwks_uri: `${issuer}/keys`,
    authorization_endpoint: '',
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
    // SPIRE publishes the `_implemented` spelling; the standard (and go-oidc, which Vault uses) reads
    // `_supported`. Both, so that either kind of client sees ES256.
    id_token_signing_alg_values_implemented: ['ES256'],
    id_token_signing_alg_values_supported: ['ES256'],
    claims_supported: ['sub', 'aud', 'exp', 'iat', 'iss', 'jti'],
  };
}

export function createOidcDiscoveryHandler(
  minter: JwtMinter,
): (req: IncomingMessage, res: ServerResponse) => Promise<boolean> {
  const base = new URL(minter.issuer).pathname.replace(/\/+$/, '');
  const discoveryPath = `${base}/.well-known/openid-configuration`;
  const keysPath = `${base}/keys`;
  const discovery = JSON.stringify(oidcDiscoveryDocument(minter.issuer));
  return async (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== discoveryPath && path !== keysPath) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      res.end('method not allowed: use GET\n');
      return true;
    }
    const body = path === discoveryPath ? discovery : JSON.stringify(await minter.jwks());
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': `public, max-age=${CACHE_SECONDS}`,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
}
