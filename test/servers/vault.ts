/**
 * A Vault server for tests, following the HTTP API as documented (developer.hashicorp.com/vault/api-docs):
 *  - POST /v1/auth/<mount>/login {role, jwt}: the JWT auth method; the token is verified against the
 *    issuer's OIDC discovery document + JWKS (fetched over HTTPS), bound_audiences, bound_subject, and exp/nbf
 *    with vault-plugin-auth-jwt's leeways (expiration 150 s, not-before 150 s, clock skew 60 s);
 *  - GET /v1/<path>: a dynamic secret with a lease tied to the calling token (revoked with it), or a KV
 *    version 1 secret (no lease; lease_duration its advisory TTL);
 *  - PUT /v1/sys/leases/renew {lease_id, increment}: extends up to the max TTL and no further;
 *  - PUT /v1/sys/leases/revoke {lease_id};
 *  - POST /v1/auth/token/revoke-self: the token and every lease it created are revoked;
 *  - X-Vault-Token checks, `{"errors":[...]}` bodies with Vault's status codes (400, 403, 404, 503);
 *  - ACL policies as Vault enforces them: a token carries its role's token_policies plus `default` (unless
 *    token_no_default_policy), and every authenticated path needs the capability (read for a secret,
 *    update for sys/leases/renew, sys/leases/revoke, auth/token/revoke-self) or gets 403 "permission
 *    denied". `default` is Vault's own default policy: renew and revoke-self, not sys/leases/revoke.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errors as joseErrors } from 'jose';
import { type Routed, sendJson, TestHttpsServer } from './base.ts';
import { OidcFetchError, OidcVerifier } from './oidc-verifier.ts';

export interface VaultJwtRole {
  boundAudiences: string[];
  /** When set, the token's `sub` must equal it. */
  boundSubject?: string;
  /** Seconds. */
  tokenTtl: number;
  tokenMaxTtl?: number;
  /** Policies attached to the tokens this role issues (besides `default`). */
  tokenPolicies?: string[];
  /** Vault's token_no_default_policy: the token does not get the `default` policy. */
  tokenNoDefaultPolicy?: boolean;
}

export type VaultCapability = 'create' | 'read' | 'update' | 'delete' | 'list' | 'sudo' | 'deny';

/** One `path "…" { capabilities = [...] }` block; `*` at the end is a prefix glob, `+` one path segment. */
export interface VaultPolicyRule {
  path: string;
  capabilities: VaultCapability[];
}

/** The parts of Vault's built-in default policy (vault/policy_store.go) that concern what this server serves. */
export const DEFAULT_POLICY: VaultPolicyRule[] = [
  { path: 'auth/token/lookup-self', capabilities: ['read'] },
  { path: 'auth/token/renew-self', capabilities: ['update'] },
  { path: 'auth/token/revoke-self', capabilities: ['update'] },
  { path: 'sys/capabilities-self', capabilities: ['update'] },
  { path: 'sys/renew', capabilities: ['update'] },
  { path: 'sys/leases/renew', capabilities: ['update'] },
  { path: 'sys/leases/lookup', capabilities: ['update'] },
  { path: 'cubbyhole/*', capabilities: ['create', 'read', 'update', 'delete', 'list'] },
];

export interface VaultJwtMount {
  oidcDiscoveryUrl: string;
  oidcDiscoveryCa: string;
  roles: Record<string, VaultJwtRole>;
}

export interface VaultSecretEngine {
  /** Seconds; 0 for a static secret without a lease. */
  leaseDuration: number;
  /**
   * KV version 1: no lease (lease_id ""), and lease_duration is only the advisory TTL (the secret's `ttl`
   * field, else the mount's default of 768h), as the kv-v1 API documents it.
   */
  kvV1?: boolean;
  /** Seconds from issue; renewals never extend past it. */
  maxTtl: number;
  renewable: boolean;
  /** Fresh data for every read (dynamic credentials). */
  generate(): Record<string, unknown>;
}

export interface VaultServerOptions {
  jwtMounts: Record<string, VaultJwtMount>;
  secrets: Record<string, VaultSecretEngine>;
  /** ACL policies by name (`default` is built in). */
  policies?: Record<string, VaultPolicyRule[]>;
  /** Milliseconds since the epoch; tests move it to expire tokens and leases. */
  now?: () => number;
}

/** vault-plugin-auth-jwt defaults: expiration_leeway 150 s + clock_skew_leeway 60 s (same for not-before). */
const LEEWAY_SEC = 150 + 60;

interface TokenState {
  expiresAt: number;
  role: string;
  sub: string;
  policies: string[];
}

/** Vault's ACL lookup: the most specific matching path wins (exact over glob, longer glob over shorter). */
function capabilities(rules: VaultPolicyRule[], path: string): Set<VaultCapability> {
  let best: { score: number; caps: Set<VaultCapability> } | undefined;
  for (const rule of rules) {
    const glob = rule.path.endsWith('*');
    const body = glob ? rule.path.slice(0, -1) : rule.path;
    const re = new RegExp(
      `^${body
        .split('+')
        .map((p) => p.replace(/[.*?^${}()|[\]\\]/g, '\\$&'))
        .join('[^/]+')}${glob ? '' : '$'}`,
    );
    if (!re.test(path)) continue;
    const score = glob ? body.length : Number.MAX_SAFE_INTEGER;
    if (!best || score > best.score) best = { score, caps: new Set(rule.capabilities) };
    else if (score === best.score) for (const c of rule.capabilities) best.caps.add(c);
  }
  return best?.caps ?? new Set();
}

interface LeaseState {
  path: string;
  token: string;
  expiresAt: number;
  maxExpiresAt: number;
  renewable: boolean;
  revoked: boolean;
}

export class VaultTestServer extends TestHttpsServer {
  private readonly tokens = new Map<string, TokenState>();
  readonly leases = new Map<string, LeaseState>();
  private readonly verifiers = new Map<string, OidcVerifier>();
  /** Every client token and secret value handed out, for the secret-hygiene test. */
  readonly issuedValues: string[] = [];
  /** The JWT of every login that named a role and a token, in order (kept in memory only). */
  readonly jwtsPresented: string[] = [];
  /** The next n logins are refused by a rate limit quota (HTTP 429). */
  rateLimited = 0;
  /**
   * When set, 403 answers quote the token that was refused, as some proxies and plugins in front of Vault
   * do: clients must not print it. `json`: in Vault's `{"errors":[…]}`; `html`: in a gateway's HTML page,
   * the token starting 285 characters in (where a client that cuts server text at 300 before scrubbing it
   * would print its first 15).
   */
  quoteTokenInErrors: false | 'json' | 'html' = false;
  /** Added to the server's clock: moves it ahead of (or behind) its clients. */
  skewMs = 0;
  private readonly clock: () => number;

  now(): number {
    return this.clock() + this.skewMs;
  }

  constructor(private readonly opts: VaultServerOptions) {
    super();
    this.clock = opts.now ?? Date.now;
  }

  /** Leases that are neither revoked nor expired (their token alive too). */
  liveLeases(): string[] {
    return [...this.leases.entries()].filter(([, l]) => this.leaseAlive(l)).map(([id]) => id);
  }

  revokedLeases(): string[] {
    return [...this.leases.entries()].filter(([, l]) => l.revoked).map(([id]) => id);
  }

  protected unavailable(res: ServerResponse): void {
    sendJson(res, 503, { errors: ['Vault is sealed'] });
  }

  protected route(req: IncomingMessage, res: ServerResponse, body: Buffer): Routed {
    const url = new URL(req.url ?? '/', 'https://vault');
    const path = url.pathname;
    const login = /^\/v1\/auth\/(.+)\/login$/.exec(path);
    if (login && req.method === 'POST')
      return { key: 'login', handle: () => this.login(login[1]!, body, res) };
    if (path === '/v1/sys/leases/renew' && (req.method === 'PUT' || req.method === 'POST'))
      return { key: 'renew', handle: () => this.renew(req, body, res) };
    if (path === '/v1/sys/leases/revoke' && (req.method === 'PUT' || req.method === 'POST'))
      return { key: 'revoke', handle: () => this.revoke(req, body, res) };
    if (path === '/v1/auth/token/revoke-self' && (req.method === 'PUT' || req.method === 'POST'))
      return { key: 'revoke-self', handle: () => this.revokeSelf(req, res) };
    if (req.method === 'GET' && path.startsWith('/v1/'))
      return { key: 'read', handle: () => this.read(req, path.slice(4), res) };
    return { key: 'other', handle: () => sendJson(res, 405, { errors: [] }) };
  }

  private parse(body: Buffer): Record<string, unknown> | undefined {
    try {
      const v = JSON.parse(body.toString('utf8')) as unknown;
      return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }

  private verifier(mount: VaultJwtMount): OidcVerifier {
    let v = this.verifiers.get(mount.oidcDiscoveryUrl);
    if (!v) {
      v = new OidcVerifier(mount.oidcDiscoveryUrl, mount.oidcDiscoveryCa);
      this.verifiers.set(mount.oidcDiscoveryUrl, v);
    }
    return v;
  }

  private async login(mountPath: string, body: Buffer, res: ServerResponse): Promise<void> {
    const mount = this.opts.jwtMounts[mountPath];
    if (!mount) return sendJson(res, 403, { errors: ['permission denied'] }); // no such mount: Vault's answer
    const args = this.parse(body);
    if (!args) return sendJson(res, 400, { errors: ['failed to parse JSON input'] });
    const roleName = typeof args.role === 'string' ? args.role : '';
    const jwt = typeof args.jwt === 'string' ? args.jwt : '';
    if (!roleName) return sendJson(res, 400, { errors: ['missing role'] });
    if (!jwt) return sendJson(res, 400, { errors: ['missing token'] });
    this.jwtsPresented.push(jwt);
    if (this.rateLimited > 0) {
      this.rateLimited--;
      // A rate limit quota's answer (Vault 1.5+).
      return sendJson(res, 429, {
        errors: [`request path "auth/${mountPath}/login": rate limit quota exceeded`],
      });
    }
    const role = mount.roles[roleName];
    if (!role) return sendJson(res, 400, { errors: [`role "${roleName}" could not be found`] });
    let claims: Record<string, unknown>;
    try {
      claims = await this.verifier(mount).verify(jwt, new Date(this.now()), LEEWAY_SEC);
    } catch (err) {
      if (err instanceof OidcFetchError)
        return sendJson(res, 400, { errors: [`error fetching OIDC discovery or keys: ${err.message}`] });
      if (err instanceof joseErrors.JWTExpired)
        return sendJson(res, 400, { errors: ['error validating claims: token is expired (exp)'] });
      if (err instanceof joseErrors.JWTClaimValidationFailed)
        return sendJson(res, 400, { errors: [`error validating claims: ${err.message}`] });
      return sendJson(res, 400, { errors: ['error validating token: failed to verify signature'] });
    }
    const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
    if (!aud.some((a) => role.boundAudiences.includes(String(a))))
      return sendJson(res, 400, {
        errors: ['error validating claims: aud claim does not match any bound audience'],
      });
    const sub = String(claims.sub ?? '');
    if (role.boundSubject !== undefined && sub !== role.boundSubject)
      return sendJson(res, 400, {
        errors: ['error validating claims: sub claim does not match bound subject'],
      });
    const ttl = Math.min(role.tokenTtl, role.tokenMaxTtl ?? role.tokenTtl);
    const token = `hvs.${randomBytes(18).toString('base64url')}`;
    this.issuedValues.push(token);
    const policies = [...(role.tokenNoDefaultPolicy ? [] : ['default']), ...(role.tokenPolicies ?? [])];
    this.tokens.set(token, { expiresAt: this.now() + ttl * 1000, role: roleName, sub, policies });
    sendJson(res, 200, {
      request_id: randomUUID(),
      lease_id: '',
      renewable: false,
      lease_duration: 0,
      data: null,
      wrap_info: null,
      warnings: null,
      auth: {
        client_token: token,
        accessor: randomBytes(12).toString('base64url'),
        policies,
        token_policies: policies,
        metadata: { role: roleName },
        lease_duration: ttl,
        renewable: true,
        entity_id: randomUUID(),
        token_type: 'service',
        orphan: true,
      },
    });
  }

  /**
   * The calling token when it is alive and its policies grant `capability` on `path`; otherwise answers 403
   * (Vault's "permission denied") and returns undefined.
   */
  private authorized(req: IncomingMessage, res: ServerResponse, path: string, capability: VaultCapability) {
    const token = this.tokenOf(req);
    const state = token ? this.tokens.get(token) : undefined;
    if (token && state) {
      const rules = state.policies.flatMap((p) =>
        p === 'default' ? DEFAULT_POLICY : (this.opts.policies?.[p] ?? []),
      );
      const caps = capabilities(rules, path);
      if (caps.has(capability) && !caps.has('deny')) return token;
    }
    const said = `token ${String(req.headers['x-vault-token'])} may not ${capability} ${path}`;
    if (this.quoteTokenInErrors === 'html') {
      const page = '<html><head><title>403 Forbidden</title></head><body><h1>Forbidden</h1><p>';
      res.writeHead(403, { 'content-type': 'text/html' });
      res.end(`${page.padEnd(285 - 'token '.length, '.')}${said}</p></body></html>`);
      return undefined;
    }
    sendJson(res, 403, { errors: [`permission denied${this.quoteTokenInErrors ? `: ${said}` : ''}`] });
    return undefined;
  }

  private tokenOf(req: IncomingMessage): string | undefined {
    const t = req.headers['x-vault-token'];
    if (typeof t !== 'string') return undefined;
    const state = this.tokens.get(t);
    return state && state.expiresAt > this.now() ? t : undefined;
  }

  private leaseAlive(l: LeaseState): boolean {
    const token = this.tokens.get(l.token);
    const now = this.now();
    return !l.revoked && l.expiresAt > now && token !== undefined && token.expiresAt > now;
  }

  private read(req: IncomingMessage, path: string, res: ServerResponse) {
    const token = this.authorized(req, res, path, 'read');
    if (!token) return;
    const engine = this.opts.secrets[path];
    if (!engine) return sendJson(res, 404, { errors: [] });
    const data = engine.generate();
    for (const v of Object.values(data)) if (typeof v === 'string') this.issuedValues.push(v);
    let leaseId = '';
    if (engine.leaseDuration > 0 && !engine.kvV1) {
      leaseId = `${path}/${randomBytes(12).toString('base64url')}`;
      const now = this.now();
      this.leases.set(leaseId, {
        path,
        token,
        expiresAt: now + engine.leaseDuration * 1000,
        maxExpiresAt: now + engine.maxTtl * 1000,
        renewable: engine.renewable,
        revoked: false,
      });
    }
    sendJson(res, 200, {
      request_id: randomUUID(),
      lease_id: leaseId,
      renewable: engine.renewable,
      lease_duration: engine.leaseDuration,
      data,
      wrap_info: null,
      warnings: null,
      auth: null,
    });
  }

  private renew(req: IncomingMessage, body: Buffer, res: ServerResponse) {
    if (!this.authorized(req, res, 'sys/leases/renew', 'update')) return;
    const args = this.parse(body) ?? {};
    const leaseId = typeof args.lease_id === 'string' ? args.lease_id : '';
    if (!leaseId) return sendJson(res, 400, { errors: ['lease_id must be specified'] });
    const lease = this.leases.get(leaseId);
    if (!lease || !this.leaseAlive(lease)) return sendJson(res, 400, { errors: ['lease not found'] });
    if (!lease.renewable) return sendJson(res, 400, { errors: ['lease is not renewable'] });
    const engine = this.opts.secrets[lease.path]!;
    const increment =
      typeof args.increment === 'number' && args.increment > 0 ? args.increment : engine.leaseDuration;
    const now = this.now();
    const room = Math.max(0, Math.floor((lease.maxExpiresAt - now) / 1000));
    const ttl = Math.min(increment, room);
    lease.expiresAt = now + ttl * 1000;
    sendJson(res, 200, {
      request_id: randomUUID(),
      lease_id: leaseId,
      renewable: true,
      lease_duration: ttl,
      data: null,
      wrap_info: null,
      warnings:
        ttl < increment
          ? [
              `TTL of "${increment}s" exceeded the effective max_ttl of "${room}s"; TTL value is capped accordingly`,
            ]
          : null,
      auth: null,
    });
  }

  private revoke(req: IncomingMessage, body: Buffer, res: ServerResponse) {
    if (!this.authorized(req, res, 'sys/leases/revoke', 'update')) return;
    const args = this.parse(body) ?? {};
    const leaseId = typeof args.lease_id === 'string' ? args.lease_id : '';
    if (!leaseId) return sendJson(res, 400, { errors: ['lease_id must be specified'] });
    const lease = this.leases.get(leaseId);
    if (lease) lease.revoked = true;
    res.writeHead(204);
    res.end();
  }

  private revokeSelf(req: IncomingMessage, res: ServerResponse) {
    const token = this.authorized(req, res, 'auth/token/revoke-self', 'update');
    if (!token) return;
    this.tokens.delete(token);
    for (const lease of this.leases.values()) if (lease.token === token) lease.revoked = true;
    res.writeHead(204);
    res.end();
  }
}
