/**
 * Polling of the policy repository: one tick every `intervalMs` plus a uniform jitter of up to
 * `jitter × intervalMs`, so that many reconcilers started together do not hit the git server in step (Argo CD
 * polls every 120 s with up to 60 s jitter; we default to 60 s + up to 10%, as the issue asks).
 */

export interface PollOptions {
  /** Base interval in ms; default 60 000. */
  intervalMs?: number;
  /** Fraction of the interval added at most, 0 ≤ jitter ≤ 1; default 0.1. */
  jitter?: number;
  random?: () => number;
}

export const DEFAULT_POLL_INTERVAL_MS = 60_000;
export const DEFAULT_POLL_JITTER = 0.1;

/** The wait before the next tick, in ms: interval + interval × jitter × random(), random() in [0, 1). */
export function pollDelay(opts: PollOptions = {}): number {
  const interval = opts.intervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  const jitter = opts.jitter ?? DEFAULT_POLL_JITTER;
  if (!(interval > 0) || !Number.isFinite(interval))
    throw new RangeError(`poll interval must be > 0 ms (got ${interval})`);
  if (!(jitter >= 0 && jitter <= 1))
    throw new RangeError(`poll jitter must be between 0 and 1 (got ${jitter})`);
  return interval + interval * jitter * (opts.random ?? Math.random)();
}

/** Calls `onTick` after each jittered delay until stop(). The timer never keeps the process alive by itself. */
export class Poller {
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;

  constructor(
    private readonly onTick: () => void,
    private readonly opts: PollOptions = {},
  ) {
    pollDelay({ ...opts, random: () => 0 }); // validates the options now, not at the first tick
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      if (this.#stopped) return;
      this.onTick();
      this.#schedule();
    }, pollDelay(this.opts));
    this.#timer.unref();
  }
}
