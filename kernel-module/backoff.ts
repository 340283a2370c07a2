/**
 * The one backoff shape of the product (reconciler retries, agent reconnects, SVID renewal retries):
 * exponential with full jitter, never below half the first ceiling, so a fleet that failed at once comes back
 * spread out. In the lowest layer so that every layer uses this one function (reconciler/common/retry.ts
 * re-exports it; agent/backoff.ts wraps it).
 */

export interface BackoffPolicy {
  /** Ceiling of the first wait, in milliseconds. */
  initialMs: number;
  /** Largest ceiling, in milliseconds. */
  maxMs: number;
}

/** Milliseconds to wait before retry number `attempt` (1-based); `random` returns [0, 1). */
export function backoffDelay(
  attempt: number,
  policy: BackoffPolicy,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.max(policy.initialMs / 2, ceiling * random());
}
