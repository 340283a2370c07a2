/**
 * The credential manager's lease ledger over the store's `leases` journal: every Vault lease the reconciler
 * holds is recorded (id, pair, expiry, fingerprint; never the value) while it is held. A reconciler killed
 * with SIGKILL leaves its records behind; the next one hands them out as orphans when it logs in for the same
 * pair, and the Vault session revokes them, so no lease outlives its use by more than a restart.
 */
import type { LeaseLedger, LeaseMetadata } from '../credentials/session.ts';
import type { StateStore } from '../store/state-store.ts';
import type { Logger } from '../telemetry/logger.ts';

const pair = (source: string, workloadID: string) => `${source}\u0000${workloadID}`;

export class StoreLeaseLedger implements LeaseLedger {
  /** Leases recorded by an earlier run and still unexpired, by pair. */
  readonly #orphans = new Map<string, Set<string>>();

  private constructor(
    private readonly store: StateStore,
    private readonly log: Logger,
  ) {}

  /** Takes the records an earlier run left as orphans; those already expired are dropped. */
  static async open(store: StateStore, log: Logger, now = Date.now()): Promise<StoreLeaseLedger> {
    const ledger = new StoreLeaseLedger(store, log);
    for (const [id, r] of [...store.leases.entries()]) {
      if (Date.parse(r.expiresAt) <= now) {
        await store.leases.delete(id);
        continue;
      }
      const key = pair(r.source, r.workloadID);
      const set = ledger.#orphans.get(key) ?? new Set();
      set.add(id);
      ledger.#orphans.set(key, set);
    }
    return ledger;
  }

  /** How many orphans are still waiting for their pair to log in. */
  get orphanCount(): number {
    let n = 0;
    for (const s of this.#orphans.values()) n += s.size;
    return n;
  }

  held(l: LeaseMetadata): void {
    this.#write(
      this.store.leases.put(l.id, {
        source: l.source,
        workloadID: l.workloadID,
        obtainedAt: new Date(l.obtainedAt).toISOString(),
        expiresAt: new Date(l.expiresAt).toISOString(),
        renewable: l.renewable,
        fingerprint: l.fingerprint,
      }),
    );
  }

  renewed(id: string, expiresAt: number): void {
    const r = this.store.leases.get(id);
    if (r) this.#write(this.store.leases.put(id, { ...r, expiresAt: new Date(expiresAt).toISOString() }));
  }

  gone(id: string): void {
    for (const set of this.#orphans.values()) set.delete(id);
    // Always queued, never checked with has(): a record whose put is still being written is not in the map
    // yet, and writes land in order, so this delete follows that put.
    this.#write(this.store.leases.delete(id));
  }

  orphans(source: string, workloadID: string): string[] {
    const key = pair(source, workloadID);
    const set = this.#orphans.get(key);
    this.#orphans.delete(key);
    return set ? [...set] : [];
  }

  #write(p: Promise<void>): void {
    p.catch((err: unknown) => this.log.warn({ err }, 'could not record Vault lease metadata in the store'));
  }
}
