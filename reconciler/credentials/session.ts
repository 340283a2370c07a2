/**
 * The contract between the manager and a provider: one session per (source, workload). A polled session
 * (Vault, STS) is driven by the manager's timers; a watched session (Secrets) pushes every change itself.
 * Both offer a single `obtain()`, the code path `credentials check` uses.
 */
import { decodeJwt } from 'jose';
import type { BackoffPolicy } from '../common/retry.ts';
import type { JwtMinter, MintJwtOptions } from '../identity/jwt-svid.ts';
import type { FingerprintKey } from './fingerprint.ts';
import type { CredentialError, CredentialLogger, CredentialValue } from './types.ts';

export interface Obtained {
  value: CredentialValue;
  /** Epoch ms after which the value must not be served; undefined: does not expire. */
  expiresAt?: number;
  /** Epoch ms at which the manager should call refresh(); undefined: never (watched, or static). */
  refreshAt?: number;
}

export interface PolledSession {
  kind: 'polled';
  obtain(): Promise<Obtained>;
  /** Extends or replaces the current value (renew a lease, or log in and read again). */
  refresh(): Promise<Obtained>;
  /** Stops and gives back what is no longer needed (revokes Vault leases). */
  release(): Promise<void>;
}

export interface WatchedSession {
  kind: 'watched';
  obtain(): Promise<Obtained>;
  subscribe(onUpdate: (u: Obtained | CredentialError) => void): () => void;
  release(): Promise<void>;
}

export type Session = PolledSession | WatchedSession;

/** A lease's metadata (never its value), as the ledger keeps it. */
export interface LeaseMetadata {
  /** Vault's lease id. */
  id: string;
  /** CredentialSource name and workload ID of the pair that holds it. */
  source: string;
  workloadID: string;
  /** Epoch ms. */
  obtainedAt: number;
  /** Epoch ms: the lease's expiry, or its token's when that comes first. */
  expiresAt: number;
  renewable: boolean;
  /** Keyed fingerprint of the value it produced. */
  fingerprint: string;
}

/**
 * Where leases are recorded so that they outlive the process that obtained them: a reconciler killed with
 * SIGKILL cannot give its leases back, so the next one revokes them (`orphans`) when it logs in for the same
 * pair. Calls never throw; the ledger persists in the background.
 */
export interface LeaseLedger {
  held(lease: LeaseMetadata): void;
  renewed(id: string, expiresAt: number): void;
  /** Given back, or known to be gone. */
  gone(id: string): void;
  /** Leases an earlier run recorded for this pair and did not give back (each handed out once). */
  orphans(source: string, workloadID: string): string[];
}

/** A ledger that keeps nothing (`credentials check`, tests). */
export const NO_LEDGER: LeaseLedger = {
  held() {},
  renewed() {},
  gone() {},
  orphans: () => [],
};

export interface ProviderContext {
  minter: JwtMinter;
  trustDomain: string;
  timeoutMs: number;
  now: () => number;
  random: () => number;
  logger: CredentialLogger;
  backoff: BackoffPolicy;
  fingerprintKey: FingerprintKey;
  leases: LeaseLedger;
}

/**
 * The JWT-SVID a session presents (to Vault's JWT login, to STS), minted again once half its lifetime has
 * passed, as SPIRE's agent caches JWT-SVIDs: the retries of a failing session present the same token instead of
 * signing one per attempt (thousands of sessions behind one unreachable server retry together). Half of what is
 * left when it was minted, read from its `exp` (the minter caps it at its key's expiry), so a reused token always
 * has at least half its lifetime ahead: timed on the monotonic clock as well as the wall clock, so that a wall
 * clock stepped back cannot stretch the reuse past `exp`. A server that refuses the token itself (expired,
 * invalid, a claim it rejects) gets a new one at the next attempt (`invalidate`); a server that throttles or
 * fails gets the same one. Errors are the minter's (JwtMintError), nothing is kept then.
 */
export class SessionJwt {
  #current: { jwt: string; reuseUntil: number; reuseUntilMono: number } | undefined;

  constructor(
    private readonly ctx: Pick<ProviderContext, 'minter' | 'now'>,
    private readonly request: MintJwtOptions,
  ) {}

  async get(): Promise<string> {
    const current = this.#current;
    if (current && this.ctx.now() < current.reuseUntil && performance.now() < current.reuseUntilMono)
      return current.jwt;
    const mintedAt = this.ctx.now();
    const mintedAtMono = performance.now();
    const jwt = await this.ctx.minter.mint(this.request);
    const exp = decodeJwt(jwt).exp;
    const half = exp === undefined ? 0 : (exp * 1000 - mintedAt) / 2;
    this.#current =
      half > 0 ? { jwt, reuseUntil: mintedAt + half, reuseUntilMono: mintedAtMono + half } : undefined;
    return jwt;
  }

  /** The server refused `jwt` itself: the next attempt presents a new one (unless `jwt` is already replaced). */
  invalidate(jwt: string): void {
    if (this.#current?.jwt === jwt) this.#current = undefined;
  }
}
