/**
 * Reconnect and retry delays: the product's one backoff shape (kernel-module/backoff.ts, which the reconciler's
 * retries use too), with the random source carried in the options. A fleet that lost its reconciler at once
 * comes back spread out.
 */
import { backoffDelay as delay } from '../kernel-module/backoff.ts';

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  random?: () => number;
}

export const DEFAULT_RECONNECT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000 };

/** Attempt 1 waits up to initialMs, doubling, capped at maxMs. */
export function backoffDelay(attempt: number, o: BackoffOptions): number {
  return delay(attempt, o, o.random);
}

/**
 * When to renew an SVID: at half its lifetime, ±10% of that half (SPIRE's rotationutil, as the reconciler's
 * svidRotationTime), so a fleet issued at once does not renew at once.
 */
export function rotationTime(notBefore: Date, notAfter: Date, random: () => number = Math.random): Date {
  const half = (notAfter.getTime() - notBefore.getTime()) / 2;
  return new Date(notBefore.getTime() + half + (random() * 2 - 1) * half * 0.1);
}
