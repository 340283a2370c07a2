/**
 * The status snapshot (every resource, the daemons, the source, recent events), kept as a journal of entries
 * so that a write stores only what changed: with 10,000 resources the whole snapshot is about 14 MB of JSON,
 * and the reconciler writes it every few seconds while a few entries change (a binding failing again, an
 * agent's last contact). Rewriting it whole made a 14 MB string, its buffer and a 14 MB fsync each time.
 *
 * Entries: `meta` (format, generatedAt, source), `r/<Kind/namespace/name>`, `d/<daemon>`, `e/<event key>`.
 * The caller names the resources and event rings it changed since the last write (StatusBook.takeChanges);
 * those, the daemons and the meta are compared with a SHA-256 of what was last written under their key, and
 * the changed and removed entries are appended as one journal record, so a crash keeps a whole write or none
 * of it. An entry not named is not even serialised: it is as it was written.
 *
 * Every resource names the revision it refers to, so each new commit would change all 10,000 entries. The
 * comparison of resources and daemons therefore reads their revision fields (`observedRevision`, the
 * entry's and its conditions') that hold the applied revision (the source's lastAppliedRevision) as a NUL,
 * which no revision is; one that differs only there is not written again, and its stored copy records the
 * revision it was written at (`rev`). Reading it back sets those fields to the last write's revision: exactly
 * the entry as it was then. Only the fields: text elsewhere in an entry (a provider's error message) that
 * happens to spell a commit id is never rewritten. Event rings are history (each event keeps the revision it
 * happened at) and are compared and stored as they are.
 *
 * A `status.json` left by an earlier version (the whole snapshot, replaced atomically) is read once into the
 * journal and removed.
 */
import { hash } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { StatusEvent } from '../status/events.ts';
import type {
  DaemonStatus,
  ResourceStatus,
  SourceStatusView,
  StatusSnapshot,
  StatusView,
} from '../status/model.ts';
import { resourceKeyOf, sortByName } from '../status/model.ts';
import { Journal, type JournalOptions, StoreCorruptError } from './journal.ts';

interface Meta {
  format: 1;
  generatedAt: string;
  source: SourceStatusView | null;
}

type Item = ResourceStatus | DaemonStatus | StatusEvent[];
/** An item as stored, with the applied revision when it was written (null: none, no replacement). */
interface Stored {
  rev: string | null;
  v: Item;
}
type Entry = Meta | Stored;

interface Written {
  /** signature() of the entry as last written. */
  sig: string;
  /** The write that last found the entry in the status. */
  gen: number;
}

const META = 'meta';
const RESOURCE = 'r/' as const;
const DAEMON = 'd/' as const;
const EVENTS = 'e/' as const;
type Prefix = typeof RESOURCE | typeof DAEMON | typeof EVENTS;

/**
 * `item` with its revision fields (its own `observedRevision` and its conditions') that hold `from` set to
 * `to`; `item` itself when none does. Never changes `item`.
 */
function moveRevision<T extends Item>(item: T, from: string, to: string): T {
  if (Array.isArray(item)) return item;
  const r = item as ResourceStatus | DaemonStatus;
  const own = 'observedRevision' in r && r.observedRevision === from;
  const conditions =
    Array.isArray(r.conditions) && r.conditions.some((c) => c.observedRevision === from)
      ? r.conditions.map((c) => (c.observedRevision === from ? { ...c, observedRevision: to } : c))
      : r.conditions;
  if (!own && conditions === r.conditions) return item;
  return { ...r, ...(own ? { observedRevision: to } : {}), conditions } as T;
}

/**
 * What a write is compared with: SHA-256 of the entry's JSON, its revision fields holding `revision` masked. A
 * cryptographic hash: entries hold text that servers choose (a provider's error message), which must not be
 * able to make a change look unchanged.
 */
function signature(item: Item, revision: string | null): string {
  return hash('sha256', JSON.stringify(revision ? moveRevision(item, revision, '\u0000') : item), 'base64');
}

async function newerThanJournal(dir: string, file: string): Promise<boolean> {
  let journal = 0;
  for (const f of await readdir(dir))
    if (/^status\.(?:snap|\d+\.log)$/.test(f))
      journal = Math.max(journal, (await stat(join(dir, f))).mtimeMs);
  return (await stat(file)).mtimeMs > journal;
}

function isSnapshot(v: unknown): v is StatusSnapshot {
  const s = v as StatusSnapshot | null;
  return (
    typeof s === 'object' &&
    s !== null &&
    s.format === 1 &&
    typeof s.generatedAt === 'string' &&
    (s.source === null || typeof s.source === 'object') &&
    Array.isArray(s.resources) &&
    s.resources.every((r) => typeof r === 'object' && r !== null && typeof r.name === 'string') &&
    Array.isArray(s.daemons) &&
    s.daemons.every((d) => typeof d === 'object' && d !== null && typeof d.name === 'string') &&
    typeof s.events === 'object' &&
    s.events !== null &&
    Object.values(s.events).every(Array.isArray)
  );
}

const appliedRevision = (source: SourceStatusView | null | undefined) => source?.lastAppliedRevision || null;

export class StatusStore {
  /**
   * What was last written, per kind of entry and by the book's key (no prefixed key is built for an entry that
   * is not written): its signature, and the write that last saw it (entries no write sees are deleted).
   */
  readonly #written: Record<Prefix, Map<string, Written>> = {
    [RESOURCE]: new Map(),
    [DAEMON]: new Map(),
    [EVENTS]: new Map(),
  };
  #metaSignature: string | null = null;
  #generation = 0;
  /**
   * The next write compares every entry, whatever it is told changed: a write failed, and the changes it carried
   * (named to it once, by StatusBook.takeChanges) are known to no later write.
   */
  #full = false;
  /** The last write queued. */
  #last: Promise<void> = Promise.resolve();

  private constructor(private readonly journal: Journal<Entry>) {
    this.#learn(true);
  }

  /**
   * The keys the journal holds, and with `signatures` what was written under each. At open the journal's values
   * are what the files hold. After a failed write they may not be: the journal keeps the book's objects by
   * reference, and the book has changed them since; so then every entry counts as unknown and the next write
   * (a full one) writes each again and deletes each key the status no longer has.
   */
  #learn(signatures: boolean): void {
    this.#metaSignature = null;
    for (const map of Object.values(this.#written)) map.clear();
    for (const [key, value] of this.journal.entries()) {
      if (key === META) {
        if (signatures) this.#metaSignature = hash('sha256', JSON.stringify(value), 'base64');
      } else {
        const stored = value as Stored;
        const prefix = key.slice(0, 2) as Prefix;
        this.#written[prefix]?.set(key.slice(2), {
          sig: signatures ? signature(stored.v, stored.rev) : '',
          gen: 0,
        });
      }
    }
  }

  /**
   * Opens the journal `status` in `dir` (replaying it; StoreCorruptError when damaged), moving a legacy
   * `status.json` into it.
   */
  static async open(dir: string, opts: JournalOptions = {}): Promise<StatusStore> {
    const journal = await Journal.open<Entry>(dir, 'status', { ...opts, keepReferences: true });
    const store = new StatusStore(journal);
    const legacy = join(dir, 'status.json');
    const text = await readFile(legacy, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (text !== null) {
      // With a journal already there, the file is read only when written after it (this version was run, then
      // an earlier one, then this one again); an older file is what this version moved in before.
      if (journal.size === 0 || (await newerThanJournal(dir, legacy))) {
        let snapshot: StatusSnapshot;
        try {
          snapshot = JSON.parse(text) as StatusSnapshot;
        } catch {
          throw new StoreCorruptError(
            `${legacy} is not valid JSON: restore the state directory from a backup`,
          );
        }
        if (!isSnapshot(snapshot))
          throw new StoreCorruptError(
            `${legacy} is not a status snapshot (format 1, with resources, daemons and events): restore the state directory from a backup, or remove the file to start with an empty status`,
          );
        await store.set(snapshot);
      }
      await rm(legacy, { force: true });
    }
    return store;
  }

  /** The last snapshot written (null when none was), resources in namespace/name order as the book shows them. */
  get(): StatusSnapshot | null {
    const meta = this.journal.get(META) as Meta | undefined;
    if (!meta) return null;
    const revision = appliedRevision(meta.source);
    const resources: ResourceStatus[] = [];
    const daemons: DaemonStatus[] = [];
    const events: Record<string, StatusEvent[]> = {};
    for (const [key, value] of this.journal.entries()) {
      if (key === META) continue;
      const stored = value as Stored;
      if (stored.rev && revision && stored.rev !== revision) {
        // Moved in place: the same content, so the journal may hold it (and the book then shares it).
        stored.v = moveRevision(stored.v, stored.rev, revision);
        stored.rev = revision;
      }
      if (key.startsWith(RESOURCE)) resources.push(stored.v as ResourceStatus);
      else if (key.startsWith(DAEMON)) daemons.push(stored.v as DaemonStatus);
      else if (key.startsWith(EVENTS)) events[key.slice(EVENTS.length)] = stored.v as StatusEvent[];
    }
    return {
      format: 1,
      generatedAt: meta.generatedAt,
      source: meta.source,
      resources: sortByName(resources),
      daemons: sortByName(daemons),
      events,
    };
  }

  /**
   * Makes `snapshot` the stored status; resolves once durable. Keeps references to the snapshot's objects (no
   * copy): the caller may go on mutating them, and the next write stores what changed. `changed`, when given,
   * names the resources and event rings (by book key, `Kind/namespace/name`) that may differ from the last
   * write but for the revision (StatusBook.takeChanges): the others are not even serialised, which with
   * 10,000 resources is most of a write's cost; null compares every entry. With `changed` and a StatusView (its
   * lookup by key), a key named that the view no longer has deletes its entry, and the others are not even
   * visited: the write costs what changed. Refuses (and stores nothing of) a snapshot with a field named like a
   * credential value (SecretInStoreError).
   */
  set(snapshot: StatusSnapshot | StatusView, changed: ReadonlySet<string> | null = null): Promise<void> {
    const revision = appliedRevision(snapshot.source);
    const gen = ++this.#generation;
    const changes: Array<[string, Entry | undefined]> = [];
    const after: Array<() => void> = [];
    const meta: Meta = { format: 1, generatedAt: snapshot.generatedAt, source: snapshot.source };
    const metaSignature = hash('sha256', JSON.stringify(meta), 'base64');
    if (metaSignature !== this.#metaSignature) {
      changes.push([META, meta]);
      after.push(() => {
        this.#metaSignature = metaSignature;
      });
    }
    const visit = (prefix: Prefix, key: string, v: Item, named: boolean) => {
      const map = this.#written[prefix];
      const was = map.get(key);
      if (was) was.gen = gen;
      // Not named as changed and written before: as it was written.
      if (was && !named) return;
      const rev = prefix === EVENTS ? null : revision;
      const sig = signature(v, rev);
      if (was?.sig === sig) return;
      changes.push([prefix + key, { rev, v }]);
      after.push(() => map.set(key, { sig, gen }));
    };
    const drop = (prefix: Prefix, key: string) => {
      changes.push([prefix + key, undefined]);
      after.push(() => this.#written[prefix].delete(key));
    };
    if (this.#full) {
      changed = null;
      this.#full = false;
    }
    const lookup = changed && 'lookup' in snapshot ? (snapshot as StatusView).lookup : null;
    if (lookup) {
      // Only what the book names: an entry it does not name is as it was written, and one it names but no
      // longer has was removed (StatusBook counts removals as changes). With 10,000 resources and a few
      // changed, no walk of the others.
      for (const key of changed!) {
        const r = lookup.resource(key);
        if (r) visit(RESOURCE, key, r, true);
        else if (this.#written[RESOURCE].has(key)) drop(RESOURCE, key);
        const ring = lookup.events(key);
        if (ring) visit(EVENTS, key, ring as StatusEvent[], true);
        else if (this.#written[EVENTS].has(key)) drop(EVENTS, key);
      }
    } else {
      for (const r of snapshot.resources) {
        const key = resourceKeyOf(r);
        visit(RESOURCE, key, r, !changed || changed.has(key));
      }
      for (const [key, list] of Object.entries(snapshot.events))
        visit(EVENTS, key, list, !changed || changed.has(key));
    }
    for (const d of snapshot.daemons) visit(DAEMON, d.name, d, true);
    for (const prefix of lookup ? [DAEMON] : [RESOURCE, DAEMON, EVENTS])
      for (const [key, was] of this.#written[prefix]) if (was.gen !== gen) drop(prefix, key);
    // Nothing changed: durable once the write that stored it is.
    if (changes.length === 0) return this.#last;
    const written = this.journal.batch(changes);
    // Counted as written at once, so that a write queued behind this one compares with it; after a failed write
    // the next one compares everything with what the journal holds.
    for (const apply of after) apply();
    this.#last = written.catch((err: unknown) => {
      // Back to the keys the journal holds (a failed batch changes none of them), and the next write goes over
      // every entry: it stores what this one carried, removals included.
      this.#learn(false);
      this.#full = true;
      throw err;
    });
    return this.#last;
  }

  /** Waits for queued writes and closes the journal. */
  close(): Promise<void> {
    return this.journal.close();
  }
}
