/**
 * The live status of the reconciler, in memory: what the pass, the credential manager and the agent server
 * update, what the API serves and the store persists (`snapshot()`). One StatusBook per reconciler.
 */
import type { Diagnostic } from '../policy/diagnostics.ts';
import { followRevision } from './conditions.ts';
import { EventLog, type EventLogOptions } from './events.ts';
import {
  type DaemonStatus,
  daemonKey,
  type ResourceKind,
  type ResourceStatus,
  resourceKeyOf,
  type SourceDiagnostic,
  type SourceStatusView,
  type StatusSnapshot,
  sortByName,
  sourceKey,
} from './model.ts';

/** At most this many diagnostics are kept in the source status (errors first). */
export const MAX_SOURCE_DIAGNOSTICS = 100;

export interface StatusBookOptions {
  now?: () => Date;
  events?: EventLogOptions;
}

/** Fields that the pass does not know from git and that survive a new revision (runtime state). */
const RUNTIME_FIELDS = [
  'conditions',
  'scheduledNodes',
  'attestedProcesses',
  'svidExpiry',
  'state',
  'message',
  'fingerprint',
  'version',
  'expiresAt',
] as const;

export class StatusBook {
  readonly events: EventLog;
  readonly #now: () => Date;
  #source: SourceStatusView | null = null;
  readonly #resources = new Map<string, ResourceStatus>();
  /**
   * Per skeleton an entry was synced from (statusesFromResources' memo): the entry, its key and the sync that last
   * listed it.
   */
  readonly #skeletons = new Map<ResourceStatus, { key: string; entry: ResourceStatus; sync: number }>();
  /** Per key, the skeleton its entry was last synced from. */
  readonly #skeletonOf = new Map<string, ResourceStatus>();
  readonly #daemons = new Map<string, DaemonStatus>();
  #generation = 0;
  /** Resources and event rings changed since takeChanges() (null: everything, as after start). */
  #changed: Set<string> | null = null;
  /** What the last syncResources made, merged, or could not move to the new revision as a whole. */
  #resynced = new Set<string>();

  constructor(opts: StatusBookOptions = {}, snapshot?: StatusSnapshot | null) {
    this.#now = opts.now ?? (() => new Date());
    this.events = new EventLog(
      { now: this.#now, ...opts.events, onRecord: (key) => this.#changed?.add(key) },
      snapshot?.events ?? {},
    );
    if (snapshot) {
      this.#source = snapshot.source;
      for (const r of snapshot.resources) this.#resources.set(resourceKeyOf(r), r);
      for (const d of snapshot.daemons) this.#daemons.set(d.name, d);
    }
  }

  now(): Date {
    return this.#now();
  }

  source(): SourceStatusView | null {
    return this.#source;
  }

  setSource(source: SourceStatusView): void {
    this.#source = source;
  }

  /** Applies `mutate` to the source status (created from `init` when there is none yet). */
  updateSource(init: () => SourceStatusView, mutate: (s: SourceStatusView) => void): SourceStatusView {
    this.#source ??= init();
    mutate(this.#source);
    return this.#source;
  }

  /**
   * Sets the source's diagnostics (those of a revision that does not validate; empty once one does), keeping
   * errors first and at most MAX_SOURCE_DIAGNOSTICS.
   */
  setSourceDiagnostics(diagnostics: readonly Diagnostic[]): void {
    if (!this.#source) return;
    const ordered = [
      ...diagnostics.filter((d) => d.severity === 'error'),
      ...diagnostics.filter((d) => d.severity !== 'error'),
    ];
    this.#source.diagnostics = ordered.slice(0, MAX_SOURCE_DIAGNOSTICS).map(
      (d): SourceDiagnostic => ({
        code: d.code,
        severity: d.severity,
        message: d.message,
        file: d.file,
        line: d.line,
        column: d.column,
      }),
    );
    this.#source.omittedDiagnostics = Math.max(0, ordered.length - MAX_SOURCE_DIAGNOSTICS);
  }

  resource(kind: ResourceKind, namespace: string, name: string): ResourceStatus | undefined {
    return this.#resources.get(`${kind}/${namespace}/${name}`);
  }

  /** Every resource (of `kind`), sorted by namespace and name. */
  resources(kind?: ResourceKind): ResourceStatus[] {
    const all = [...this.#resources.values()];
    return sortByName(kind ? all.filter((r) => r.kind === kind) : all);
  }

  /** Moves each time syncResources replaces the set of resources (new statuses may need runtime fields). */
  get generation(): number {
    return this.#generation;
  }

  /** Every resource with its key, in no particular order (for updates that visit them all). */
  entries(): IterableIterator<[string, ResourceStatus]> {
    return this.#resources.entries();
  }

  /**
   * Makes `list` the set of resources (those of a newly applied revision): resources that stay keep their
   * runtime fields (conditions, states, counts; the list's values for them are the defaults of a new
   * resource, PENDING and zero), so a commit that does not touch a binding neither resets its state nor
   * records an event for it; resources gone from git are dropped with their events.
   */
  syncResources(list: readonly ResourceStatus[]): void {
    const sync = ++this.#generation;
    this.#resynced = new Set();
    let removed = false;
    for (const r of list) {
      // The same skeleton object as last time (statusesFromResources' memo): only the revision is new. Found by
      // the object, so a commit that leaves 10,000 resources as they were builds no key and no map for them.
      const known = this.#skeletons.get(r);
      if (known) {
        known.sync = sync;
        const prev = known.entry;
        const from = prev.observedRevision;
        prev.observedRevision = r.observedRevision;
        // Every revision the entry names is the one it referred to: moving them all is the text replacement
        // the status store makes when it reads an entry back (status-store.ts), so the entry is not counted as
        // changed and a commit does not serialise 10,000 entries again. Otherwise it is written as it is.
        // Moved in place (followRevision): a copy of every entry's conditions per commit was the largest thing a
        // one-file pass left for the garbage collector to move.
        if (!followRevision(prev.conditions, from, r.observedRevision)) {
          this.#changed?.add(known.key);
          this.#resynced.add(known.key);
        }
        continue;
      }
      const key = resourceKeyOf(r);
      const prev = this.#resources.get(key);
      const merged = { ...r } as Record<string, unknown>;
      if (prev && prev.kind === r.kind) {
        const old = prev as unknown as Record<string, unknown>;
        for (const f of RUNTIME_FIELDS) if (f in old) merged[f] = old[f];
      }
      const entry = merged as unknown as ResourceStatus;
      this.#resources.set(key, entry);
      const replaced = this.#skeletonOf.get(key);
      if (replaced) this.#skeletons.delete(replaced);
      this.#skeletonOf.set(key, r);
      this.#skeletons.set(r, { key, entry, sync });
      this.#changed?.add(key);
      this.#resynced.add(key);
    }
    for (const [skeleton, known] of this.#skeletons) {
      if (known.sync === sync) continue;
      this.#skeletons.delete(skeleton);
      this.#skeletonOf.delete(known.key);
      this.#resources.delete(known.key);
      removed = true;
    }
    // Entries read from a snapshot have no skeleton: those the list did not name are gone.
    if (this.#resources.size !== this.#skeletonOf.size)
      for (const key of this.#resources.keys())
        if (!this.#skeletonOf.has(key)) {
          this.#resources.delete(key);
          removed = true;
        }
    if (removed) this.#retainEvents();
  }

  /**
   * Keys of the entries the last syncResources made, merged, or could not move to the new revision as a whole,
   * in the order of its list (not the book's: a merged entry keeps its place among the others). Every other entry
   * is as it was before that sync, its revisions moved in lockstep: what was current for the previous revision is
   * current for the new one.
   */
  resynced(): ReadonlySet<string> {
    return this.#resynced;
  }

  /** One resource's status by its key (`Kind/namespace/name`). */
  entry(key: string): ResourceStatus | undefined {
    return this.#resources.get(key);
  }

  /** Applies `mutate` to one resource's status; false when there is no such resource. */
  updateResource(key: string, mutate: (r: ResourceStatus) => void): boolean {
    const r = this.#resources.get(key);
    if (!r) return false;
    mutate(r);
    this.#changed?.add(key);
    return true;
  }

  daemon(name: string): DaemonStatus | undefined {
    return this.#daemons.get(name);
  }

  daemons(): DaemonStatus[] {
    return sortByName([...this.#daemons.values()]);
  }

  upsertDaemon(d: DaemonStatus): void {
    this.#daemons.set(d.name, d);
  }

  removeDaemon(name: string): void {
    this.#daemons.delete(name);
    this.#retainEvents();
  }

  /** A copy of the whole status, detached from the book (what the API serves), in namespace/name order. */
  snapshot(): StatusSnapshot {
    const view = this.view();
    return structuredClone({
      ...view,
      resources: sortByName(view.resources),
      daemons: sortByName(view.daemons),
    });
  }

  /**
   * Keys of the resources and event rings changed since the last call (null: take every entry as changed), for
   * the status store; starts counting again. Every change made through the book's methods and the event log is
   * counted but one: a new revision that a resource's entry follows as a whole (syncResources), which the store
   * applies when it reads the entry back. A resource changed any other way is not seen.
   */
  takeChanges(): ReadonlySet<string> | null {
    const changed = this.#changed;
    this.#changed = new Set();
    return changed;
  }

  /**
   * The whole status sharing the book's objects (resources, daemons, event lists), in no particular order, for
   * the status store, which compares them with what it wrote and keeps them by reference. Saves a deep copy and
   * a sort of every resource per write.
   */
  view(): StatusSnapshot {
    return {
      format: 1,
      generatedAt: this.#now().toISOString(),
      source: this.#source,
      resources: [...this.#resources.values()],
      daemons: [...this.#daemons.values()],
      events: this.events.view(),
    };
  }

  #retainEvents(): void {
    const keep = new Set<string>([...this.#resources.keys(), ...[...this.#daemons.keys()].map(daemonKey)]);
    if (this.#source) keep.add(sourceKey(this.#source.name));
    this.events.retain(keep);
  }
}
