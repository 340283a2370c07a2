/**
 * The contract between the manager and a provider: one session per (source, workload). A polled session
 * (Vault, STS) is driven by the manager's timers; a watched session (Secrets) pushes every change itself.
 * Both offer a single `obtain()`, the code path `credentials check` uses.
 */
import type { BackoffPolicy } from '../common/retry.ts';
import type { JwtMinter } from '../identity/jwt-svid.ts';
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

export interface ProviderContext {
  minter: JwtMinter;
  trustDomain: string;
  timeoutMs: number;
  now: () => number;
  random: () => number;
  logger: CredentialLogger;
  backoff: BackoffPolicy;
  fingerprintKey: FingerprintKey;
}
