/**
 * Vault through node-vault: log in at auth/<jwtAuthMethodPath>/login with a JWT-SVID of the workload, read
 * `path`, take the field named by type.token.source. Leases are renewed at about two thirds of their
 * duration (Vault's lifetime watcher and VSO do the same); once a renewal no longer extends the lease (max
 * TTL) or the token would die first (a token's expiry revokes its leases), the session logs in and reads
 * again, then revokes the lease it replaced. Static secrets (no lease) are re-read after their TTL + 5 s, or
 * every pollIntervalMs (tokenex's 15 min) when they carry none.
 */
import type { Agent } from 'node:https';
import vault from 'node-vault';
import type { Obtained, PolledSession, ProviderContext } from './session.ts';
import { CredentialError, type CredentialValue, type VaultSourceSpec } from './types.ts';
import { describeTransportError, withDeadline } from './util.ts';

export interface VaultProviderOptions {
  httpsAgent: Agent;
  pollIntervalMs: number;
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
  private readonly client: vault.client;
  private readonly mount: string;
  private readonly spiffeId: string;
  private lease: LeaseState | undefined;
  private token: TokenState | undefined;
  private value: CredentialValue | undefined;
  private staticRefreshAt: number | undefined;

  constructor(
    private readonly spec: VaultSourceSpec,
    workloadID: string,
    private readonly ctx: ProviderContext,
    private readonly opts: VaultProviderOptions,
  ) {
    this.mount = (spec.vault.jwtAuthMethodPath ?? 'jwt').replace(/^\/+|\/+$/g, '');
    this.spiffeId = `spiffe://${ctx.trustDomain}/${workloadID}`;
    this.client = vault({
      endpoint: spec.vault.address,
      // node-vault's debug channel prints request bodies (the JWT, and secrets on writes): keep it silent.
      debug: () => {},
      requestOptions: { httpsAgent: opts.httpsAgent, timeout: ctx.timeoutMs },
    });
  }

  private get where(): string {
    return `Vault ${this.spec.vault.address}`;
  }

  private call<T>(what: string, work: Promise<T>): Promise<T> {
    return withDeadline(work, this.ctx.timeoutMs + 500, `${this.where}: ${what}`);
  }

  private failure(what: string, err: unknown, hint: string): CredentialError {
    const status = apiStatus(err);
    if (status === undefined)
      return new CredentialError(`${this.where}: ${what} failed: ${describeTransportError(err)}`);
    const errors = (err as VaultApiError).response?.body?.errors;
    const said = Array.isArray(errors) && errors.length ? errors.map(String).join('; ').slice(0, 300) : '';
    // 5xx (sealed, standby, overloaded) is about Vault itself, not about our role or path.
    const advice = status >= 500 ? 'Vault is not serving requests; retrying with backoff' : hint;
    return new CredentialError(
      `${this.where}: ${what} failed: HTTP ${status}${said ? ` (${said})` : ''}; ${advice}`,
    );
  }

  private async login(): Promise<TokenState> {
    const jwt = await this.ctx.minter.mint({ spiffeId: this.spiffeId, audience: this.spec.vault.audience });
    const what = `login at auth/${this.mount}/login as role "${this.spec.vault.role}" for ${this.spiffeId}`;
    this.client.token = '';
    let res: { auth?: { client_token?: string; lease_duration?: number } };
    try {
      res = await this.call(
        what,
        this.client.jwtLogin({ mount_point: this.mount, role: this.spec.vault.role, jwt }) as Promise<
          typeof res
        >,
      );
    } catch (err) {
      throw this.failure(
        what,
        err,
        `check that the JWT auth method is mounted at "${this.mount}", role "${this.spec.vault.role}" exists, its ` +
          `bound_audiences include ${JSON.stringify(this.spec.vault.audience)} and its bound_subject is ${this.spiffeId}`,
      );
    }
    const token = res.auth?.client_token;
    if (!token) throw new CredentialError(`${this.where}: ${what} answered without auth.client_token`);
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
    const v = field in top ? top[field] : nested?.[field];
    if (typeof v !== 'string' || !v) {
      const fields = Object.keys(nested && !(field in top) ? nested : top).sort();
      throw new CredentialError(
        `${this.where}: secret ${this.spec.vault.path} has no non-empty string field "${field}" ` +
          `(fields: ${fields.join(', ') || 'none'}); fix type.token.source`,
      );
    }
    return { kind: 'bearer', token: v };
  }

  async obtain(): Promise<Obtained> {
    const token = await this.login();
    const what = `reading ${this.spec.vault.path}`;
    let res: { lease_id?: string; lease_duration?: number; renewable?: boolean; data?: unknown };
    try {
      res = await this.call(
        what,
        this.client.read(this.spec.vault.path, { headers: { 'X-Vault-Token': token.value } }) as Promise<
          typeof res
        >,
      );
    } catch (err) {
      throw this.failure(
        what,
        err,
        apiStatus(err) === 404
          ? 'check the secret path'
          : `check that the policies of role "${this.spec.vault.role}" allow reading it`,
      );
    }
    const value = this.pick(res.data);
    const previous = this.lease;
    const now = this.ctx.now();
    const duration = Number(res.lease_duration ?? 0);
    this.token = token;
    this.value = value;
    if (res.lease_id) {
      this.lease = {
        id: res.lease_id,
        duration,
        expiresAt: now + duration * 1000,
        renewable: res.renewable === true,
        capped: false,
        token,
      };
      this.staticRefreshAt = undefined;
    } else {
      this.lease = undefined;
      this.staticRefreshAt = now + (duration > 0 ? duration * 1000 + 5000 : this.opts.pollIntervalMs);
    }
    if (previous) await this.revoke(previous);
    return this.plan();
  }

  async refresh(): Promise<Obtained> {
    const lease = this.lease;
    const token = this.token;
    const now = this.ctx.now();
    if (lease && token && this.renewWorthwhile(lease, token, now)) {
      const what = `renewing lease ${lease.id}`;
      try {
        const res = (await this.call(
          what,
          this.client.renew({
            lease_id: lease.id,
            increment: lease.duration,
            requestOptions: { headers: { 'X-Vault-Token': token.value } },
          }) as Promise<{ lease_duration?: number; renewable?: boolean }>,
        )) as { lease_duration?: number; renewable?: boolean };
        const granted = Number(res.lease_duration ?? 0);
        lease.expiresAt = this.ctx.now() + granted * 1000;
        lease.capped = granted < lease.duration || res.renewable === false;
        return this.plan();
      } catch (err) {
        const status = apiStatus(err);
        // 400 (lease not found / not renewable) and 403 (token gone) are answers, not outages: start over.
        if (status !== 400 && status !== 403) throw this.failure(what, err, 'Vault will be retried');
        this.ctx.logger.info('vault lease can no longer be renewed; logging in again', {
          address: this.spec.vault.address,
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

  private async revoke(lease: LeaseState): Promise<void> {
    if (lease.token.expiresAt <= this.ctx.now()) return; // its token's expiry already revoked it
    try {
      await this.call(
        `revoking lease ${lease.id}`,
        this.client.revoke({
          lease_id: lease.id,
          requestOptions: { headers: { 'X-Vault-Token': lease.token.value } },
        }),
      );
    } catch (err) {
      // The lease runs out on its own; say so and go on.
      this.ctx.logger.warn(
        'could not revoke a Vault lease that is no longer needed; it will expire on its own',
        {
          address: this.spec.vault.address,
          lease: lease.id,
          reason: this.failure('revoke', err, 'none').message,
        },
      );
    }
  }

  async release(): Promise<void> {
    const lease = this.lease;
    this.lease = undefined;
    this.token = undefined;
    this.value = undefined;
    if (lease) await this.revoke(lease);
  }
}
