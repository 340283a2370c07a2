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
  type StatusView,
  sortByName,
  sourceKey,
} from './model.ts';

/** At most this many diagnostics are kept in the source status (errors first). */
export const MAX_SOURCE_DIAGNOSTICS = 100;

export interface StatusBookOptions {
  now?: () => Date;
  events?: EventLogOptions;
}

/** What the book keeps of an entry synced from a skeleton (statusesFromResources' memo). */
interface Kept {
  key: string;
  entry: ResourceStatus;
  skeleton: ResourceStatus;
  /** The sync that last listed it. */
  sync: number;
  /** The sync whose revision its revision fields show (see #follow). */
  at: number;
  /** Moves each time the entry is made, merged, updated, or moved by a sync (not when it follows lazily). */
  stamp: number;
}

/** Every condition of `r` refers to its own revision (so it follows a new one as a whole). */
function uniform(r: ResourceStatus): boolean {
  for (const c of r.conditions) if (c.observedRevision !== r.observedRevision) return false;
  return true;
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
  /** Keys of the resources by kind (what syncIdentities walks instead of every resource). */
  readonly #byKind = new Map<ResourceKind, Set<string>>();
  /** Per skeleton an entry was synced from (statusesFromResources' memo), what the book keeps of that entry. */
  readonly #kept = new Map<ResourceStatus, Kept>();
  /** The same by the entry's key. */
  readonly #keptOf = new Map<string, Kept>();
  /**
   * Keys of kept entries whose conditions do not all refer to the entry's own revision: they do not follow a new
   * revision as a whole, so each sync looks at them (all other kept entries follow it lazily, see #follow).
   */
  readonly #mixed = new Set<string>();
  readonly #daemons = new Map<string, DaemonStatus>();
  /** The number of syncResources so far. */
  #generation = 0;
  /** The revision of the last syncResources. */
  #revision: string | null = null;
  /** The revision of the sync before the last (what an entry showed before the last sync: see #make). */
  #before: string | null = null;
  /** The last Kept.stamp given. */
  #stamps = 0;
  /** Resources and event rings changed since takeChanges() (null: everything, as after start). */
  #changed: Set<string> | null = null;
  /** What the last syncResources made, merged, or could not move to the new revision as a whole. */
  #resynced = new Set<string>();

  constructor(opts: StatusBookOptions = {}, snapshot?: StatusSnapshot | null) {
    this.#now = opts.now ?? (() => new Date());
    this.events = new EventLog(
      { now: this.#now, ...opts.events, onChange: (key) => this.#changed?.add(key) },
      snapshot?.events ?? {},
    );
    if (snapshot) {
      this.#source = snapshot.source;
      for (const r of snapshot.resources) this.#add(resourceKeyOf(r), r);
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
    return this.entry(`${kind}/${namespace}/${name}`);
  }

  /** Every resource (of `kind`), sorted by namespace and name. */
  resources(kind?: ResourceKind): ResourceStatus[] {
    const keys = kind ? (this.#byKind.get(kind) ?? []) : this.#resources.keys();
    return sortByName([...keys].map((key) => this.entry(key)!));
  }

  /** The revision of the last syncResources (null before the first). */
  get revision(): string | null {
    return this.#revision;
  }

  /**
   * A number that moves each time the entry of `key` is made, merged or updated through the book, or moved by a
   * sync without all its conditions (undefined: an entry not synced from a skeleton). The same number twice
   * means the same entry, its revisions at most following new revisions as a whole.
   */
  stamp(key: string): number | undefined {
    return this.#keptOf.get(key)?.stamp;
  }

  /** The keys of every resource of `kind`, in no particular order. */
  keysOf(kind: ResourceKind): ReadonlySet<string> {
    return this.#byKind.get(kind) ?? new Set();
  }

  /** Moves each time syncResources replaces the set of resources (new statuses may need runtime fields). */
  get generation(): number {
    return this.#generation;
  }

  /** Every resource with its key, in no particular order (for updates that visit them all). */
  *entries(): IterableIterator<[string, ResourceStatus]> {
    for (const [key, entry] of this.#resources) yield [key, this.#current(key, entry)];
  }

  /**
   * Makes `list` the set of resources, those of the newly applied `revision` (its new entries are made at that
   * revision): resources that stay keep their runtime fields (conditions, states, counts; the list's values for
   * them are the defaults of a new resource, PENDING and zero), so a commit that does not touch a binding neither
   * resets its state nor records an event for it; resources gone from git are dropped with their events.
   *
   * An entry synced from the same skeleton as last time (statusesFromResources' memo: a resource the commit did
   * not touch) follows the new revision as a whole: its own revision and those of its conditions, when they all
   * referred to the previous one. That is done when the entry is next read (#follow), not here, so a commit that
   * leaves 10,000 resources as they were neither writes to them nor counts them as changed: the status store
   * makes the same move when it reads an entry back (status-store.ts). Entries whose conditions refer to another
   * revision (#mixed) are looked at now, as a sync always did.
   */
  syncResources(list: readonly ResourceStatus[], revision: string | null): void {
    const sync = this.#begin(revision);
    let removed = false;
    for (const r of list) {
      const known = this.#kept.get(r);
      if (known) known.sync = sync;
      else this.#make(r, revision, sync);
    }
    for (const known of this.#kept.values())
      if (known.sync !== sync) {
        this.#forget(known);
        removed = true;
      }
    // Entries read from a snapshot have no skeleton: those the list did not name are gone.
    if (this.#resources.size !== this.#keptOf.size)
      for (const key of this.#resources.keys())
        if (!this.#keptOf.has(key)) {
          this.#remove(key);
          removed = true;
        }
    if (removed) this.#retainEvents();
  }

  /**
   * syncResources with the list of the last sync, `added` appended and `removed` taken out (skeletons, as
   * statusesFromResources makes them): what StatusSync does for a commit that changed a few resources of
   * thousands, at the cost of those few. Only for a book whose every entry came from the skeletons of its
   * syncs (not read from a snapshot since), which StatusSync sees to.
   */
  syncChanges(
    added: readonly ResourceStatus[],
    removed: readonly ResourceStatus[],
    revision: string | null,
  ): void {
    const sync = this.#begin(revision);
    for (const r of added) this.#make(r, revision, sync);
    // A skeleton replaced by an added one of the same key is no longer kept: its entry stays, merged.
    for (const r of removed) {
      const known = this.#kept.get(r);
      if (!known) continue;
      this.#forget(known);
      this.events.forget(known.key);
    }
  }

  /** A new sync at `revision`: the entries that do not follow it as a whole are moved now (#mixed). */
  #begin(revision: string | null): number {
    const sync = ++this.#generation;
    this.#before = this.#revision;
    this.#revision = revision;
    this.#resynced = new Set();
    for (const key of this.#mixed) {
      // Its own revision moves, its conditions stay: counted as changed. A revision seen before (a revert) may
      // make it whole again, and then it follows the next ones lazily.
      const kept = this.#keptOf.get(key)!;
      this.#follow(kept);
      kept.stamp = ++this.#stamps;
      if (uniform(kept.entry)) this.#mixed.delete(key);
      this.#changed?.add(key);
      this.#resynced.add(key);
    }
    return sync;
  }

  /** The entry of skeleton `r` at `revision`, merged with the runtime fields of the entry of its key if any. */
  #make(r: ResourceStatus, revision: string | null, sync: number): void {
    const key = resourceKeyOf(r);
    const prev = this.#resources.get(key);
    const merged = { ...r, observedRevision: revision } as Record<string, unknown>;
    const replaced = this.#keptOf.get(key);
    if (prev && prev.kind === r.kind) {
      // An entry that follows the revisions lazily and was not read since an earlier sync: its conditions as
      // they were before this sync (at the previous one's revision), as if it had been read then. What a merged
      // entry keeps must not depend on whether anything read it in between.
      if (replaced && replaced.at !== sync)
        followRevision(prev.conditions, prev.observedRevision, this.#before);
      const old = prev as unknown as Record<string, unknown>;
      for (const f of RUNTIME_FIELDS) if (f in old) merged[f] = old[f];
    }
    const entry = merged as unknown as ResourceStatus;
    this.#add(key, entry);
    if (replaced) this.#kept.delete(replaced.skeleton);
    const kept: Kept = { key, entry, skeleton: r, sync, at: sync, stamp: ++this.#stamps };
    this.#kept.set(r, kept);
    this.#keptOf.set(key, kept);
    if (uniform(entry)) this.#mixed.delete(key);
    else this.#mixed.add(key);
    this.#changed?.add(key);
    this.#resynced.add(key);
  }

  #forget(known: Kept): void {
    this.#kept.delete(known.skeleton);
    this.#keptOf.delete(known.key);
    this.#remove(known.key);
  }

  #add(key: string, entry: ResourceStatus): void {
    this.#resources.set(key, entry);
    const keys = this.#byKind.get(entry.kind);
    if (keys) keys.add(key);
    else this.#byKind.set(entry.kind, new Set([key]));
  }

  #remove(key: string): void {
    const entry = this.#resources.get(key);
    if (!entry) return;
    this.#resources.delete(key);
    this.#byKind.get(entry.kind)?.delete(key);
    this.#mixed.delete(key);
    this.#changed?.add(key);
  }

  /** `entry` (the book's entry of `key`) brought to the last sync's revision, when it follows it lazily. */
  #current(key: string, entry: ResourceStatus): ResourceStatus {
    const kept = this.#keptOf.get(key);
    if (kept && kept.at !== this.#generation) this.#follow(kept);
    return entry;
  }

  /**
   * Brings a kept entry to the last sync's revision as the syncs since it was last brought would have, one
   * after the other: when its conditions all referred to its own revision, they and it now refer to the new one
   * (in place: each entry's conditions are its own objects, see followRevision); otherwise only its own
   * revision moves. Entries of the second kind are in #mixed, which each sync brings at once, so no revision
   * in between could have made one whole again.
   */
  #follow(kept: Kept): void {
    const entry = kept.entry;
    followRevision(entry.conditions, entry.observedRevision, this.#revision);
    entry.observedRevision = this.#revision;
    kept.at = this.#generation;
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
    const entry = this.#resources.get(key);
    return entry && this.#current(key, entry);
  }

  /** Applies `mutate` to one resource's status; false when there is no such resource. */
  updateResource(key: string, mutate: (r: ResourceStatus) => void): boolean {
    const r = this.entry(key);
    if (!r) return false;
    mutate(r);
    const kept = this.#keptOf.get(key);
    if (kept) {
      kept.stamp = ++this.#stamps;
      if (uniform(r)) this.#mixed.delete(key);
      else this.#mixed.add(key);
    }
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
    const { lookup: _lookup, ...view } = this.view();
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
  view(): StatusView {
    const book = this;
    return {
      format: 1,
      generatedAt: this.#now().toISOString(),
      source: this.#source,
      // Built when read: a write that names its changes (takeChanges) reads only those, through `lookup`.
      get resources() {
        return [...book.entries()].map(([, r]) => r);
      },
      daemons: [...this.#daemons.values()],
      get events() {
        return book.events.view();
      },
      lookup: {
        resource: (key) => this.entry(key),
        events: (key) => this.events.ring(key),
      },
    };
  }

  #retainEvents(): void {
    const keep = new Set<string>([...this.#resources.keys(), ...[...this.#daemons.keys()].map(daemonKey)]);
    if (this.#source) keep.add(sourceKey(this.#source.name));
    this.events.retain(keep);
  }
}
