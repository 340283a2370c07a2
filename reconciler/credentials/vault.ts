/**
 * Vault through node-vault: log in at auth/<jwtAuthMethodPath>/login with a JWT-SVID of the workload, read
 * `path`, take the field named by type.token.source. Leases are renewed at about two thirds of their
 * duration (Vault's lifetime watcher and VSO do the same); once a renewal no longer extends the lease (max
 * TTL) or the token would die first (a token's expiry revokes its leases), the session logs in and reads
 * again, then revokes the lease it replaced. Static secrets (no lease) are re-read after their TTL + 5 s, or
 * every pollIntervalMs (tokenex's 15 min) when they carry none.
 *
 * Every request goes through ./http.ts (one deadline per request, answers capped, redirects only within
 * the configured origin). Whatever is obtained and no longer needed is given back on every path: a lease
 * whose secret lacks the field, a lease replaced, the session's lease and token on release. A lease is
 * revoked at sys/leases/revoke; when the role's policy does not grant that (Vault's default policy does
 * not), the token that holds it revokes itself (auth/token/revoke-self, which the default policy grants),
 * taking its leases with it; when that is refused too, the lease is left to expire, said once per role.
 */
import type { Agent } from 'node:https';
import vault from 'node-vault';
import { displayUrl, Redactor, stripUrlUserinfo } from '../common/redact.ts';
import { boundedRequest } from './http.ts';
import { type Obtained, type PolledSession, type ProviderContext, SessionJwt } from './session.ts';
import {
  CredentialError,
  type CredentialValue,
  fingerprintOf,
  headerUnsafe,
  type VaultSourceSpec,
} from './types.ts';
import { describeTransportError } from './util.ts';

export interface VaultProviderOptions {
  httpsAgent: Agent;
  pollIntervalMs: number;
  /** Keys of notices already logged, shared by the sessions of one provider set ("log it once"). */
  notices: Set<string>;
}

/** A Vault answer is a few KB; a secret's data rarely more. */
export const MAX_VAULT_ANSWER_BYTES = 1024 * 1024;

/**
 * node-vault's injectable transport (`config['request-promise']`): its requests, made by bounded HTTP.
 * The shape node-vault expects back: { statusCode, body (parsed JSON), request: { path } }.
 */
function vaultTransport(agent: Agent, deadlineMs: number) {
  return {
    defaults:
      () =>
      async (options: { method: string; uri: string; headers?: Record<string, string>; json?: unknown }) => {
        const url = new URL(options.uri);
        const body =
          options.json && typeof options.json === 'object' ? JSON.stringify(options.json) : undefined;
        const res = await boundedRequest({
          url,
          method: options.method,
          headers: {
            ...options.headers,
            accept: 'application/json',
            ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          },
          ...(body !== undefined ? { body } : {}),
          agent,
          deadlineMs,
          maxBodyBytes: MAX_VAULT_ANSWER_BYTES,
          what: 'Vault',
          carries: /\/auth\/.+\/login$/.test(url.pathname) ? "the workload's JWT-SVID" : 'the Vault token',
        });
        const text = res.body.toString('utf8');
        let parsed: unknown;
        try {
          parsed = text ? JSON.parse(text) : undefined;
        } catch {
          // Whole (the body is capped): it is scrubbed of tokens before it is cut for display, never after.
          parsed = { errors: [text] };
        }
        return { statusCode: res.status, body: parsed, request: { path: url.pathname } };
      },
  };
}

interface TokenState {
  value: string;
  expiresAt: number;
}

interface LeaseState {
  id: string;
  /** Seconds granted at read time; the increment asked for on renewal. */
  duration: number;
  expiresAt: number;
  renewable: boolean;
  /** A renewal came back shorter than asked: the max TTL is near, renewing cannot extend it further. */
  capped: boolean;
  token: TokenState;
}

type VaultApiError = Error & { response?: { statusCode?: number; body?: { errors?: unknown[] } } };

function apiStatus(err: unknown): number | undefined {
  return (err as VaultApiError).response?.statusCode;
}

export class VaultSession implements PolledSession {
  readonly kind = 'polled';
  private readonly mount: string;
  private readonly spiffeId: string;
  private readonly jwt: SessionJwt;
  /** Every JWT sent and token received by this session: server text is scrubbed of them. */
  private readonly redactor = new Redactor();
  private lease: LeaseState | undefined;
  private token: TokenState | undefined;
  private value: CredentialValue | undefined;
  private staticRefreshAt: number | undefined;

  constructor(
    private readonly spec: VaultSourceSpec,
    private readonly workloadID: string,
    private readonly ctx: ProviderContext,
    private readonly opts: VaultProviderOptions,
  ) {
    this.mount = (spec.vault.jwtAuthMethodPath ?? 'jwt').replace(/^\/+|\/+$/g, '');
    this.spiffeId = `spiffe://${ctx.trustDomain}/${workloadID}`;
    this.jwt = new SessionJwt(ctx, { spiffeId: this.spiffeId, audience: spec.vault.audience });
  }

  /**
   * A node-vault client for one exchange, not kept: each holds ~75 KB of per-instance functions, and a
   * reconciler keeps a session per (source, workload) pair, thousands of them. Its default token is cleared:
   * every request here names its token, and none may pick up VAULT_TOKEN from the environment.
   */
  private client(): vault.client {
    const client = vault({
      endpoint: this.spec.vault.address,
      // node-vault's debug channel prints request bodies (the JWT, and secrets on writes): keep it silent.
      debug: () => {},
      'request-promise': vaultTransport(this.opts.httpsAgent, this.ctx.timeoutMs),
    });
    client.token = '';
    return client;
  }

  private get where(): string {
    return `Vault ${stripUrlUserinfo(this.spec.vault.address)}`;
  }

  private failure(what: string, err: unknown, hint: string): CredentialError {
    const status = apiStatus(err);
    if (status === undefined)
      return new CredentialError(
        this.redactor.redact(`${this.where}: ${what} failed: ${describeTransportError(err)}`),
      );
    const errors = (err as VaultApiError).response?.body?.errors;
    // Server text may quote what it was sent (the token, the JWT): scrubbed before it is shown anywhere.
    const said =
      Array.isArray(errors) && errors.length
        ? this.redactor.redact(errors.map(String).join('; ')).slice(0, 300)
        : '';
    // 5xx (sealed, standby, overloaded) and 429 (a rate limit quota) are about Vault itself, not our role or path.
    const advice =
      status >= 500
        ? 'Vault is not serving requests; retrying with backoff'
        : status === 429
          ? 'a Vault rate limit quota refused the request; retrying with backoff'
          : hint;
    return new CredentialError(
      `${this.where}: ${what} failed: HTTP ${status}${said ? ` (${said})` : ''}; ${advice}`,
    );
  }

  private async login(): Promise<TokenState> {
    const jwt = await this.jwt.get();
    this.redactor.set('jwt', jwt);
    const what = `login at auth/${this.mount}/login as role "${this.spec.vault.role}" for ${this.spiffeId}`;
    let res: { auth?: { client_token?: string; lease_duration?: number } };
    try {
      // node-vault keeps the token a login returns as the client's default; this client is dropped after.
      res = (await this.client().jwtLogin({
        mount_point: this.mount,
        role: this.spec.vault.role,
        jwt,
      })) as typeof res;
    } catch (err) {
      // The JWT auth method answers 400 for every token or claims error (expired, audience, subject): a fresh
      // token may pass. Not on 403 (mount, CIDR), 429 (rate limit) or 5xx: a new one would change nothing.
      if (apiStatus(err) === 400) this.jwt.invalidate(jwt);
      throw this.failure(
        what,
        err,
        `check that the JWT auth method is mounted at "${this.mount}", role "${this.spec.vault.role}" exists, its ` +
          `bound_audiences include ${JSON.stringify(this.spec.vault.audience)} and its bound_subject is ${this.spiffeId}`,
      );
    }
    const token = res.auth?.client_token;
    if (!token) throw new CredentialError(`${this.where}: ${what} answered without auth.client_token`);
    this.redactor.set('token', token);
    const ttl = Number(res.auth?.lease_duration ?? 0);
    // A TTL of 0 means a token that never expires (root-like); treat it as lasting until replaced.
    return { value: token, expiresAt: ttl > 0 ? this.ctx.now() + ttl * 1000 : Number.POSITIVE_INFINITY };
  }

  private pick(data: unknown): CredentialValue {
    const field = this.spec.vault.type.token.source;
    const top = (data ?? {}) as Record<string, unknown>;
    // KV version 2 nests the fields under data.data.
    const nested =
      top.data && typeof top.data === 'object' ? (top.data as Record<string, unknown>) : undefined;
    // Own fields only: `source: constructor` names a field of the secret, never Object's constructor.
    const atTop = Object.hasOwn(top, field);
    const v = atTop ? top[field] : nested && Object.hasOwn(nested, field) ? nested[field] : undefined;
    if (typeof v !== 'string' || !v) {
      const fields = Object.keys(nested && !atTop ? nested : top).sort();
      throw new CredentialError(
        `${this.where}: secret ${this.spec.vault.path} has no non-empty string field "${field}" ` +
          `(fields: ${fields.join(', ') || 'none'}); fix type.token.source`,
      );
    }
    // Refused here, before obtain() gives back the previous lease: the manager keeps serving the previous value.
    const value: CredentialValue = { kind: 'bearer', token: v };
    const unsafe = headerUnsafe(value, this.spec.name);
    if (unsafe) throw unsafe;
    this.redactor.set('value', v);
    return value;
  }

  async obtain(): Promise<Obtained> {
    const token = await this.login();
    const what = `reading ${this.spec.vault.path}`;
    let res: { lease_id?: string; lease_duration?: number; renewable?: boolean; data?: unknown };
    try {
      res = (await this.client().read(this.spec.vault.path, {
        headers: { 'X-Vault-Token': token.value },
      })) as typeof res;
    } catch (err) {
      await this.retire(undefined, token);
      throw this.failure(
        what,
        err,
        apiStatus(err) === 404
          ? 'check the secret path'
          : `check that the policies of role "${this.spec.vault.role}" allow reading it`,
      );
    }
    const now = this.ctx.now();
    const duration = Number(res.lease_duration ?? 0);
    const lease: LeaseState | undefined = res.lease_id
      ? {
          id: res.lease_id,
          duration,
          expiresAt: now + duration * 1000,
          renewable: res.renewable === true,
          capped: false,
          token,
        }
      : undefined;
    let value: CredentialValue;
    try {
      value = this.pick(res.data);
    } catch (err) {
      // The secret is of no use: give back the lease and the token just obtained for it.
      await this.retire(lease, token);
      throw err;
    }
    const previous = { lease: this.lease, token: this.token };
    this.token = token;
    this.value = value;
    this.lease = lease;
    this.staticRefreshAt = lease
      ? undefined
      : now + (duration > 0 ? duration * 1000 + 5000 : this.opts.pollIntervalMs);
    if (lease)
      this.ctx.leases.held({
        id: lease.id,
        source: this.spec.name,
        workloadID: this.workloadID,
        obtainedAt: now,
        expiresAt: Math.min(lease.expiresAt, token.expiresAt),
        renewable: lease.renewable,
        fingerprint: fingerprintOf(this.ctx.fingerprintKey, value),
      });
    await this.retire(previous.lease, previous.token);
    await this.revokeOrphans(token);
    return this.plan();
  }

  /**
   * Leases an earlier run obtained for this pair and could not give back (it was killed): revoked with the
   * token just obtained, at sys/leases/revoke. Without that capability they are left to expire, said once.
   */
  private async revokeOrphans(token: TokenState): Promise<void> {
    for (const id of this.ctx.leases.orphans(this.spec.name, this.workloadID)) {
      try {
        await this.client().revoke({
          lease_id: id,
          requestOptions: { headers: { 'X-Vault-Token': token.value } },
        });
        this.ctx.logger.info('revoked a Vault lease left by an earlier run', {
          address: displayUrl(this.spec.vault.address),
          lease: id,
        });
      } catch (err) {
        this.notice(
          'orphan-revoke-failed',
          'could not revoke a Vault lease left by an earlier run; it will expire on its own',
          { lease: id, reason: this.failure('revoke', err, 'none').message },
        );
      }
      this.ctx.leases.gone(id);
    }
  }

  async refresh(): Promise<Obtained> {
    const lease = this.lease;
    const token = this.token;
    const now = this.ctx.now();
    if (lease && token && this.renewWorthwhile(lease, token, now)) {
      const what = `renewing lease ${lease.id}`;
      try {
        const res = (await this.client().renew({
          lease_id: lease.id,
          increment: lease.duration,
          requestOptions: { headers: { 'X-Vault-Token': token.value } },
        })) as { lease_duration?: number; renewable?: boolean };
        const granted = Number(res.lease_duration ?? 0);
        lease.expiresAt = this.ctx.now() + granted * 1000;
        lease.capped = granted < lease.duration || res.renewable === false;
        this.ctx.leases.renewed(lease.id, Math.min(lease.expiresAt, token.expiresAt));
        return this.plan();
      } catch (err) {
        const status = apiStatus(err);
        // 400 (lease not found / not renewable) and 403 (token gone) are answers, not outages: start over.
        if (status !== 400 && status !== 403) throw this.failure(what, err, 'Vault will be retried');
        // A token Vault no longer honours revoked its leases with it: nothing left to give back.
        if (status === 403) token.expiresAt = now;
        this.ctx.logger.info('vault lease can no longer be renewed; logging in again', {
          address: displayUrl(this.spec.vault.address),
          path: this.spec.vault.path,
          status,
        });
      }
    }
    return this.obtain();
  }

  private renewWorthwhile(lease: LeaseState, token: TokenState, now: number): boolean {
    return lease.renewable && !lease.capped && lease.expiresAt > now && lease.expiresAt < token.expiresAt;
  }

  /** When the value stops being valid and when to act next. */
  private plan(): Obtained {
    const now = this.ctx.now();
    const value = this.value!;
    const lease = this.lease;
    if (!lease) return { value, refreshAt: this.staticRefreshAt };
    const expiresAt = Math.min(lease.expiresAt, lease.token.expiresAt);
    // Two thirds of what is left, 0–10% earlier at random so that many leases do not renew in step.
    const refreshAt = now + Math.max(0, expiresAt - now) * (2 / 3) * (0.9 + 0.1 * this.ctx.random());
    return { value, expiresAt, refreshAt };
  }

  /**
   * Gives back a lease and the token that is no longer used: the lease at sys/leases/revoke; if the role may
   * not (403), the token revokes itself, which revokes its leases; then the token, when it was not already
   * revoked that way. Failures are logged (the lease runs out on its own), once per role and reason.
   */
  private async retire(lease: LeaseState | undefined, token: TokenState | undefined): Promise<void> {
    const now = this.ctx.now();
    let tokenGone = token === undefined || token.expiresAt <= now;
    // A lease whose token is gone went with it.
    if (lease && lease.token.expiresAt <= now) this.ctx.leases.gone(lease.id);
    if (lease && lease.token.expiresAt > now) {
      try {
        await this.client().revoke({
          lease_id: lease.id,
          requestOptions: { headers: { 'X-Vault-Token': lease.token.value } },
        });
        this.ctx.leases.gone(lease.id);
      } catch (err) {
        if (apiStatus(err) !== 403) {
          // Still live, perhaps: the record stays, so a later run may revoke it.
          this.notice(
            'revoke-failed',
            'could not revoke a Vault lease that is no longer needed; it will expire on its own',
            {
              lease: lease.id,
              reason: this.failure('revoke', err, 'none').message,
            },
          );
        } else if (await this.revokeSelf(lease.token)) {
          this.ctx.leases.gone(lease.id);
          if (lease.token === token) tokenGone = true;
          this.notice(
            'revoke-forbidden',
            `the policies of role "${this.spec.vault.role}" do not allow sys/leases/revoke (update); leases are given back by revoking their token instead`,
            { lease: lease.id },
          );
        } else {
          // Nothing this role may do will revoke it, now or later: it runs out at its expiry.
          this.ctx.leases.gone(lease.id);
          this.notice(
            'revoke-forbidden-expire',
            `the policies of role "${this.spec.vault.role}" allow neither sys/leases/revoke nor auth/token/revoke-self (update); leases no longer needed are left to expire`,
            { lease: lease.id, expiresAt: new Date(lease.expiresAt).toISOString() },
          );
        }
      }
    }
    if (!tokenGone && token) await this.revokeSelf(token);
  }

  /** auth/token/revoke-self with `token`; true when Vault accepted it. */
  private async revokeSelf(token: TokenState): Promise<boolean> {
    try {
      await this.client().request({
        path: '/auth/token/revoke-self',
        method: 'POST',
        headers: { 'X-Vault-Token': token.value },
      });
      token.expiresAt = this.ctx.now();
      return true;
    } catch {
      return false;
    }
  }

  /** Logs a notice once per role and kind, however many leases it concerns. */
  private notice(kind: string, message: string, fields: Record<string, unknown>): void {
    const key = `${this.spec.vault.address}\u0000${this.mount}\u0000${this.spec.vault.role}\u0000${kind}`;
    if (this.opts.notices.has(key)) return;
    this.opts.notices.add(key);
    this.ctx.logger.warn(message, {
      address: displayUrl(this.spec.vault.address),
      role: this.spec.vault.role,
      ...fields,
    });
  }

  async release(): Promise<void> {
    const lease = this.lease;
    const token = this.token;
    this.lease = undefined;
    this.token = undefined;
    this.value = undefined;
    await this.retire(lease, token);
  }
}
