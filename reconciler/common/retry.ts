/**
 * The one retry policy: exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"), the shape Argo CD, SPIRE and client-go use. Attempt 1 waits up to `initialMs`, each further
 * attempt doubles the ceiling up to `maxMs`; the wait is a uniform draw below the ceiling, never less than
 * half of `initialMs` (so a retry loop never spins).
 */

import { type BackoffPolicy, backoffDelay } from '../../kernel-module/backoff.ts';

export { type BackoffPolicy, backoffDelay };

/** 1 s doubling to 5 min: what the credential manager, the Kubernetes watch and the loop use by default. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 300_000 };
export interface RetryOptions {
  /** Total attempts, the first included (≥ 1). */
  attempts: number;
  policy: BackoffPolicy;
  /** Whether this failure is worth another attempt; others are thrown at once. */
  retryable: (err: unknown) => boolean;
  random?: () => number;
  /** Injectable for tests. */
  sleep?: (ms: number) => Promise<void>;
}

/** Runs `work` until it succeeds, a failure is not retryable, or the attempts are spent (the last error is thrown). */
export async function retry<T>(work: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const wait = opts.sleep ?? sleep;
  for (let attempt = 1; ; attempt++) {
    try {
      return await work(attempt);
    } catch (err) {
      if (attempt >= opts.attempts || !opts.retryable(err)) throw err;
      await wait(backoffDelay(attempt, opts.policy, opts.random));
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
