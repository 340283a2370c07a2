/**
 * Reconnect and retry delays: exponential backoff with full jitter, never below half the initial delay —
 * the same shape as the reconciler's one retry policy (reconciler/common/retry.ts backoffDelay), which agent/
 * may not import (layers point one way), so this copy exists only for layering. A fleet that lost its reconciler at once comes back spread out.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  random?: () => number;
}

export const DEFAULT_RECONNECT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000 };

/** Attempt 1 waits up to initialMs, doubling, capped at maxMs. */
export function backoffDelay(attempt: number, o: BackoffOptions): number {
  const ceiling = Math.min(o.maxMs, o.initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.max(o.initialMs / 2, ceiling * (o.random ?? Math.random)());
}

/**
 * When to renew an SVID: at half its lifetime, ±10% of that half (SPIRE's rotationutil, as the reconciler's
 * svidRotationTime), so a fleet issued at once does not renew at once.
 */
export function rotationTime(notBefore: Date, notAfter: Date, random: () => number = Math.random): Date {
  const half = (notAfter.getTime() - notBefore.getTime()) / 2;
  return new Date(notBefore.getTime() + half + (random() * 2 - 1) * half * 0.1);
}
