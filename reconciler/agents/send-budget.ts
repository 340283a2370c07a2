/**
 * Bytes written to agents' streams and not yet taken by them, across every session, with a limit on when a new
 * program update may start. When many agents join at once (a reconciler restart: every agent reconnects, each
 * wanting its whole program), each session would otherwise encode and queue its program at the same moment:
 * with 200 agents and 10,000 resources, about 100 MB of encoded programs and TLS buffers held at once. Past the
 * limit, sessions wait in arrival order and start when earlier writes drain, so memory follows the limit, not
 * the number of agents. One message may take the total over the limit (it is never split); a session's own
 * queue has its own cap (sendQueueBytes).
 */
export class SendBudget {
  #inFlight = 0;
  /** Sessions waiting for room, in arrival order (a Set keeps insertion order). */
  readonly #waiting = new Set<() => void>();

  /** `limitBytes`: no new update starts while this many bytes or more are in flight. */
  constructor(readonly limitBytes: number) {}

  get inFlightBytes(): number {
    return this.#inFlight;
  }

  get waiting(): number {
    return this.#waiting.size;
  }

  /**
   * True when an update may start now. Otherwise `wake` is kept (once) and called when there is room, in
   * arrival order: being called is the admission (the caller starts without asking again). A caller that stops
   * waiting calls cancel(wake).
   */
  admit(wake: () => void): boolean {
    if (this.#inFlight < this.limitBytes && this.#waiting.size === 0) return true;
    this.#waiting.add(wake);
    return false;
  }

  cancel(wake: () => void): void {
    this.#waiting.delete(wake);
  }

  /** `bytes` were written to a stream. */
  take(bytes: number): void {
    this.#inFlight += bytes;
  }

  /** `bytes` were taken by the stream, or dropped with it; wakes waiters while there is room. */
  release(bytes: number): void {
    this.#inFlight -= bytes;
    for (const wake of this.#waiting) {
      if (this.#inFlight >= this.limitBytes) break;
      this.#waiting.delete(wake);
      wake();
    }
  }
}
