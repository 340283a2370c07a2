/**
 * Recent events per resource, as `kubectl describe` shows them: a bounded ring per resource (default 16), where
 * an event repeating the previous one (same type, reason and message) bumps its count and last time instead of
 * taking a slot, as Kubernetes' event correlator does. The number of resources tracked is bounded too (least
 * recently written dropped first), so memory stays fixed whatever happens.
 */

export interface StatusEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  /** ISO 8601. */
  firstTimestamp: string;
  lastTimestamp: string;
  count: number;
  revision: string | null;
}

export interface EventLogOptions {
  perResource?: number;
  maxResources?: number;
  now?: () => Date;
  /**
   * Called with the key of each ring an event is recorded in or that is dropped (what the status store must
   * write again or delete).
   */
  onChange?: (key: string) => void;
}

const MAX_MESSAGE = 1000;

export class EventLog {
  readonly #rings = new Map<string, StatusEvent[]>();
  readonly #perResource: number;
  readonly #maxResources: number;
  readonly #now: () => Date;
  readonly #onChange: (key: string) => void;

  constructor(opts: EventLogOptions = {}, initial: Record<string, StatusEvent[]> = {}) {
    this.#onChange = opts.onChange ?? (() => {});
    this.#perResource = opts.perResource ?? 16;
    this.#maxResources = opts.maxResources ?? 50_000;
    this.#now = opts.now ?? (() => new Date());
    for (const [k, list] of Object.entries(initial)) this.#rings.set(k, list.slice(-this.#perResource));
  }

  /** Records an event about `key` (`Kind/namespace/name`, `Daemon/<id>`, `Source/<name>`). */
  record(
    key: string,
    type: StatusEvent['type'],
    reason: string,
    message: string,
    revision: string | null,
  ): void {
    const at = this.#now().toISOString();
    const msg = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE - 1)}…` : message;
    const ring = this.#rings.get(key) ?? [];
    this.#rings.delete(key); // re-inserted last: Map order is the eviction order
    const last = ring.at(-1);
    if (last && last.type === type && last.reason === reason && last.message === msg) {
      last.count++;
      last.lastTimestamp = at;
      last.revision = revision;
    } else {
      ring.push({ type, reason, message: msg, firstTimestamp: at, lastTimestamp: at, count: 1, revision });
      if (ring.length > this.#perResource) ring.splice(0, ring.length - this.#perResource);
    }
    this.#rings.set(key, ring);
    this.#onChange(key);
    while (this.#rings.size > this.#maxResources) this.forget(this.#rings.keys().next().value!);
  }

  /** Oldest first. */
  of(key: string): StatusEvent[] {
    return (this.#rings.get(key) ?? []).map((e) => ({ ...e }));
  }

  /** Drops the events of resources not in `keep`. */
  retain(keep: ReadonlySet<string>): void {
    for (const k of this.#rings.keys()) if (!keep.has(k)) this.forget(k);
  }

  /** Drops the ring of `key` (a resource that is gone). */
  forget(key: string): void {
    if (this.#rings.delete(key)) this.#onChange(key);
  }

  /** The ring of `key`, sharing the log's array (undefined: none). */
  ring(key: string): readonly StatusEvent[] | undefined {
    return this.#rings.get(key);
  }

  /** Every ring by key, sharing the log's arrays: serialise it at once and do not keep it. */
  view(): Record<string, StatusEvent[]> {
    return Object.fromEntries(this.#rings);
  }

  toJSON(): Record<string, StatusEvent[]> {
    return Object.fromEntries([...this.#rings].map(([k, v]) => [k, v.map((e) => ({ ...e }))]));
  }
}
