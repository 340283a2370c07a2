/**
 * The embedded store: what the reconciler must remember across restarts, in `<state-dir>/store/` (0700, files
 * 0600). Never a credential value: records carry fingerprints, expiry and lease ids, and every write passes the
 * secret guard.
 *
 * | what | kept as | why that shape |
 * | --- | --- | --- |
 * | applied revision (+ the program version per scope) | `applied.json`, replaced atomically | small, once per pass |
 * | status of every resource, the source, the daemons, recent events | journal `status`, an entry per resource, daemon and event list (status-store.ts) | written every few seconds: only the entries that changed |
 * | issued X.509-SVID serials | journal `serials` | one record per issuance, thousands per hour |
 * | credential lease metadata (Vault lease id, expiry) | journal `leases` | so leases can be renewed or revoked after a restart |
 * | drift history (one summary per report) | journal `drift` | appended per report, pruned to the kept N |
 *
 * Atomic documents go through the project's one atomic writer (`common/atomic-file.ts`, temp file + fsync +
 * rename + fsync of the directory); journals are described in journal.ts. A reconciler killed at
 * any instant reopens to every acknowledged write and nothing torn (test/store/crash.test.ts kills a writer
 * with SIGKILL many times).
 */
import { readFileSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeDirs, TEMP_FILE, writeFileAtomic } from '../common/atomic-file.ts';
import { Journal, type JournalOptions, StoreCorruptError } from './journal.ts';
import { acquireLock, type HeldLock } from './lock.ts';
import { stringifyWithoutSecrets } from './secret-guard.ts';
import { StatusStore } from './status-store.ts';

/** The revision in force and what was pushed for it. */
export interface AppliedState {
  /** Commit id of the last good revision applied. */
  revision: string;
  /** ISO 8601. */
  appliedAt: string;
  /** Program version (content hash) per scope key (`daemonGroup:<id>`, …) pushed for that revision. */
  programVersions: Record<string, string>;
}

/** One X.509-SVID issued, keyed by its serial (hex). */
export interface IssuedSerial {
  spiffeId: string;
  /** The daemon (agent) it was issued to. */
  daemonId: string;
  /** ISO 8601. */
  notBefore: string;
  notAfter: string;
  /** Hash of the CSR's public key: a retried request for the same key is answered from here, not re-issued. */
  publicKeyHash: string;
}

/** A credential lease held by a provider (Vault), keyed by the lease id. The value itself is never stored. */
export interface LeaseRecord {
  source: string;
  workloadID: string;
  /** ISO 8601. */
  obtainedAt: string;
  expiresAt: string;
  renewable: boolean;
  /** Keyed fingerprint of the value the lease produced. */
  fingerprint?: string;
}

/** One drift report, summarised; the report itself lives in the reports directory. */
export interface DriftRecord {
  /** ISO 8601. */
  at: string;
  revision: string | null;
  drifted: boolean;
  counts: Record<string, number>;
  /** Report file names (Markdown, JSON) in the reports directory. */
  files: string[];
}

/**
 * A value replaced whole and atomically; reads see the last acknowledged write. Nothing of a write is kept in
 * memory: a document is read at start and rarely after, so a read after a write reads the file back.
 */
export class StoredDocument<T> {
  #value: T | null;
  /** A write was acknowledged since #value was read: the file holds the value. */
  #written = false;
  #chain: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    value: T | null,
  ) {
    this.#value = value;
  }

  static async open<T>(path: string): Promise<StoredDocument<T>> {
    const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    return new StoredDocument<T>(path, text === null ? null : parse<T>(path, text));
  }

  /**
   * The last value written (null when none was ever written), detached from the object written. After a
   * write it is read back from the file, synchronously: it throws StoreCorruptError or the read's error, and
   * it may see a write that is renamed into place but not yet acknowledged (its directory fsync pending).
   */
  get(): T | null {
    if (this.#written) {
      this.#value = parse<T>(this.path, readFileSync(this.path, 'utf8'));
      this.#written = false;
    }
    return this.#value;
  }

  /** Replaces the value; resolves once it is on disk. Concurrent calls are applied in call order. */
  set(value: T): Promise<void> {
    let text: string;
    try {
      text = stringifyWithoutSecrets(value, this.path);
    } catch (err) {
      return Promise.reject(err);
    }
    const write = this.#chain.then(async () => {
      // The writer fsyncs the file and the directory.
      await writeFileAtomic(this.path, text, { mode: 0o600 });
      this.#value = null;
      this.#written = true;
    });
    this.#chain = write.catch(() => {});
    return write;
  }
}

function parse<T>(path: string, text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new StoreCorruptError(`${path} is not valid JSON: restore the state directory from a backup`);
  }
}

export interface StateStoreOptions extends JournalOptions {
  /** The reconciler's state directory; the store lives in `<stateDir>/store`. */
  stateDir: string;
}

export class StateStore {
  private constructor(
    readonly dir: string,
    private readonly lock: HeldLock,
    readonly applied: StoredDocument<AppliedState>,
    readonly status: StatusStore,
    readonly serials: Journal<IssuedSerial>,
    readonly leases: Journal<LeaseRecord>,
    readonly drift: Journal<DriftRecord>,
  ) {}

  /**
   * Opens the store, creating it if needed; takes the state directory's lock (StateDirLockedError when another
   * live reconciler holds it), removes temp files a crash left behind, and replays the journals.
   */
  static async open(opts: StateStoreOptions): Promise<StateStore> {
    const dir = join(opts.stateDir, 'store');
    await makeDirs(dir, 0o700);
    const lock = await acquireLock(join(dir, 'LOCK'));
    try {
      // The atomic writer's temp files (TEMP_FILE): a crash between create and rename leaves one.
      for (const f of await readdir(dir)) if (TEMP_FILE.test(f)) await rm(join(dir, f), { force: true });
      return new StateStore(
        dir,
        lock,
        await StoredDocument.open<AppliedState>(join(dir, 'applied.json')),
        await StatusStore.open(dir, opts),
        await Journal.open<IssuedSerial>(dir, 'serials', opts),
        await Journal.open<LeaseRecord>(dir, 'leases', opts),
        await Journal.open<DriftRecord>(dir, 'drift', opts),
      );
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  /** Drops serial records that expired before `now` (the agent has rotated them long since). */
  async pruneSerials(now: Date): Promise<number> {
    const expired = [...this.serials.entries()].filter(([, s]) => Date.parse(s.notAfter) < now.getTime());
    await Promise.all(expired.map(([k]) => this.serials.delete(k)));
    return expired.length;
  }

  /** Flushes every journal and releases the lock. */
  async close(): Promise<void> {
    await Promise.all([this.status.close(), this.serials.close(), this.leases.close(), this.drift.close()]);
    await this.lock.release();
  }
}
