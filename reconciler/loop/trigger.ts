/**
 * The coalescing, non-blocking trigger of the reconcile loop, as spire-controller-manager's (a buffered channel
 * of one: sending never blocks, a full buffer absorbs the send):
 *
 * - `fire()` never blocks and never throws; any number of fires while idle start ONE pass (the pass starts on
 *   the next turn of the event loop, so a synchronous burst lands in it whole);
 * - a pass never runs twice at once;
 * - any number of fires while a pass runs schedule EXACTLY ONE more pass, which starts when the running one
 *   ends and sees every reason that arrived meanwhile.
 *
 * Reasons are kept bounded (a count per trigger source and the first few details), so a webhook storm costs
 * a counter increment per request and no memory growth.
 */

/** What asked for a pass. */
export type TriggerSource =
  | 'startup'
  | 'webhook'
  | 'poll'
  | 'watch'
  | 'api'
  | 'signal'
  | 'retry'
  | 'schedule';

export interface TriggerBatch {
  /** How many fires of each source this pass answers. */
  counts: Partial<Record<TriggerSource, number>>;
  /** Total fires this pass answers. */
  fires: number;
  /** The first `MAX_DETAILS` details given to fire(), in order. */
  details: string[];
  /** Epoch ms of the first fire of the batch. */
  firstAt: number;
}

export interface TriggerStats {
  fires: number;
  passes: number;
  /** Fires that did not start a pass of their own (absorbed into a running or pending batch). */
  coalesced: number;
  failures: number;
}

export interface TriggerOptions {
  /** Called when a pass rejects; a pass's failure never escapes as an unhandled rejection. */
  onError?: (err: unknown) => void;
  /** Called after every pass with how long it took, in ms. */
  onPassEnd?: (ms: number, batch: TriggerBatch) => void;
  now?: () => number;
}

const MAX_DETAILS = 8;

export class CoalescingTrigger {
  #pending: TriggerBatch | null = null;
  #running = false;
  #stopped = false;
  #idleWaiters: Array<() => void> = [];
  readonly #stats: TriggerStats = { fires: 0, passes: 0, coalesced: 0, failures: 0 };
  readonly #now: () => number;

  constructor(
    private readonly pass: (batch: TriggerBatch) => Promise<void>,
    private readonly opts: TriggerOptions = {},
  ) {
    this.#now = opts.now ?? Date.now;
  }

  /** Asks for a pass. Never blocks, never throws; ignored after stop(). */
  fire(source: TriggerSource, detail?: string): void {
    if (this.#stopped) return;
    this.#stats.fires++;
    const fresh = this.#pending === null;
    if (fresh) this.#pending = { counts: {}, fires: 0, details: [], firstAt: this.#now() };
    const batch = this.#pending!;
    batch.counts[source] = (batch.counts[source] ?? 0) + 1;
    batch.fires++;
    if (detail !== undefined && batch.details.length < MAX_DETAILS) batch.details.push(detail);
    // The first fire of a batch while idle starts it; every other fire joins a batch that will run anyway.
    if (fresh && !this.#running) setImmediate(() => this.#drain());
    else this.#stats.coalesced++;
  }

  /** True while a pass runs. */
  get running(): boolean {
    return this.#running;
  }

  stats(): TriggerStats {
    return { ...this.#stats };
  }

  /** Resolves when no pass runs and none is pending. */
  idle(): Promise<void> {
    if (!this.#running && this.#pending === null) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Refuses further fires, drops a pending batch, and resolves when the running pass (if any) has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#pending = null;
    await this.idle();
  }

  async #drain(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    while (this.#pending !== null) {
      const batch = this.#pending;
      this.#pending = null;
      this.#stats.passes++;
      const started = this.#now();
      try {
        await this.pass(batch);
      } catch (err) {
        this.#stats.failures++;
        try {
          this.opts.onError?.(err);
        } catch {
          // A failing error handler must not stop the loop.
        }
      }
      this.opts.onPassEnd?.(this.#now() - started, batch);
    }
    this.#running = false;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}
