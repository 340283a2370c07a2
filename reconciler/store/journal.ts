/**
 * A durable key → value table for the embedded store: an append-only log of JSON records, each line
 * `<crc32 hex> <json>\n`, replayed over the last snapshot at open, and compacted into a new snapshot when the
 * log grows past twice the live entries. One `put` costs one appended line (and a shared fsync), not a rewrite
 * of the table, so issuing 10,000 serials stays linear (see bench/store.bench.ts for the measured reason).
 *
 * Crash safety (SIGKILL or power loss at any instant):
 *  - a write is acknowledged (its promise resolves) only after its bytes are written and `fdatasync`ed;
 *    writes that arrive while one is in flight share the next write and fsync (group commit);
 *  - a record cut short by a crash fails its checksum or lacks its newline: replay stops there and truncates
 *    the log to the last whole record, so the torn tail (never acknowledged) is dropped and later appends
 *    cannot hide behind it; a failed write is truncated away the same way before the next one;
 *  - compaction writes `<name>.snap` (generation g+1) with the one atomic writer, fsyncs the directory, and only
 *    then starts `<name>.<g+1>.log` and removes `<name>.<g>.log`. A crash at any step leaves either the old
 *    snapshot with its whole log, or the new snapshot (whose log is empty or absent).
 */
import { closeSync, constants, fsyncSync, openSync } from 'node:fs';
import { type FileHandle, open, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { writeFileAtomic } from '../common/atomic-file.ts';
import { assertNoSecretFields } from './secret-guard.ts';

/** Positional writes need a file opened without O_APPEND. */
const RW_CREATE = constants.O_RDWR | constants.O_CREAT;
const RW_CREATE_TRUNCATE = RW_CREATE | constants.O_TRUNC;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface Snapshot {
  format: 1;
  generation: number;
  entries: Array<[string, Json]>;
}

type EntryRecord = { k: string; v: Json } | { k: string; d: 1 };
/** Several puts and deletes in one line: one checksum, so a crash keeps all of them or none. */
type LogRecord = EntryRecord | { b: EntryRecord[] };

/** Entries a record changes (what the compaction threshold counts). */
const entriesIn = (rec: LogRecord) => ('b' in rec ? rec.b.length : 1);

export class StoreCorruptError extends Error {}

/** fsync of a directory, so that a rename or unlink in it survives a power loss. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function encode(rec: LogRecord): string {
  const json = JSON.stringify(rec);
  return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
}

/** Whole records of a log and the byte length they span; stops at the first torn or corrupt line. */
function decodeLog(buf: Buffer): { records: LogRecord[]; goodBytes: number } {
  const records: LogRecord[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const nl = buf.indexOf(0x0a, offset);
    if (nl < 0) break;
    const line = buf.toString('utf8', offset, nl);
    const json = line.slice(9);
    if (line[8] !== ' ' || crc32(json).toString(16).padStart(8, '0') !== line.slice(0, 8)) break;
    let rec: LogRecord;
    try {
      rec = JSON.parse(json) as LogRecord;
    } catch {
      break;
    }
    records.push(rec);
    offset = nl + 1;
  }
  return { records, goodBytes: offset };
}

/** Applies one record to a table: the same replay at open, after a write, and for a compaction from disk. */
function applyRecord<V>(entries: Map<string, V>, rec: LogRecord): void {
  if ('b' in rec) for (const r of rec.b) applyRecord(entries, r);
  else if ('d' in rec) entries.delete(rec.k);
  else {
    // Re-insert so that iteration order follows the latest write.
    entries.delete(rec.k);
    entries.set(rec.k, rec.v as V);
  }
}

interface Pending {
  rec: LogRecord;
  /** The record's line, encoded when it was queued: the value as it was checked, whatever happens to it later. */
  line: string;
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface JournalOptions {
  /** Compact when the log holds more than 2 × live entries + this many records; default 1000. */
  compactSlack?: number;
  /**
   * Keep each value as given instead of a copy. For a caller that writes its live objects (the status) and
   * mutates them afterwards: saves a second copy in memory, and a compaction then writes a value as it is at
   * that moment, which is at least as new as its last write. Default false (values are detached).
   */
  keepReferences?: boolean;
}

export class Journal<V> {
  readonly #entries = new Map<string, V>();
  #generation = 0;
  #log: FileHandle | null = null;
  #logBytes = 0;
  #logRecords = 0;
  #queue: Pending[] = [];
  #writing: Promise<void> | null = null;
  #closed = false;
  readonly #slack: number;
  readonly #keepReferences: boolean;

  private constructor(
    readonly dir: string,
    readonly name: string,
    opts: JournalOptions,
  ) {
    this.#slack = opts.compactSlack ?? 1000;
    this.#keepReferences = opts.keepReferences ?? false;
  }

  /** Opens (or creates) the table `name` in `dir`, replaying snapshot + log and dropping a torn tail. */
  static async open<V>(dir: string, name: string, opts: JournalOptions = {}): Promise<Journal<V>> {
    if (!/^[a-z][a-z0-9-]*$/.test(name))
      throw new Error(`journal name "${name}" must be lower-case letters, digits, dashes`);
    const j = new Journal<V>(dir, name, opts);
    await j.#load();
    return j;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): V | undefined {
    return this.#entries.get(key);
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** Acknowledged entries, in insertion order of their latest write. */
  entries(): IterableIterator<[string, V]> {
    return this.#entries.entries();
  }

  values(): IterableIterator<V> {
    return this.#entries.values();
  }

  /**
   * Stores `value` under `key`; resolves once it is durable. Refuses values holding a field that names a
   * credential (see secret-guard.ts). Reads see the value once the promise has resolved.
   */
  put(key: string, value: V): Promise<void> {
    try {
      assertNoSecretFields(value, `${this.name}[${key}]`);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#enqueue({ k: key, v: this.#held(value) });
  }

  /**
   * Applies several puts (a value) and deletes (undefined) as one record: after a crash, all of them or none
   * are there. Resolves once durable; refuses the whole batch when any value holds a credential-named field.
   */
  batch(changes: ReadonlyArray<readonly [key: string, value: V | undefined]>): Promise<void> {
    const b: EntryRecord[] = [];
    try {
      for (const [k, v] of changes) {
        if (v === undefined) b.push({ k, d: 1 });
        else {
          assertNoSecretFields(v, `${this.name}[${k}]`);
          b.push({ k, v: this.#held(v) });
        }
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#enqueue({ b });
  }

  #held(value: V): Json {
    return this.#keepReferences ? (value as Json) : (JSON.parse(JSON.stringify(value)) as Json);
  }

  /** Removes `key`; resolves once durable. Removing a missing key is a no-op write. */
  delete(key: string): Promise<void> {
    return this.#enqueue({ k: key, d: 1 });
  }

  /** Waits for every queued write, then closes the log. */
  async close(): Promise<void> {
    await this.#flush();
    this.#closed = true;
    await this.#log?.close();
    this.#log = null;
  }

  #snapPath(): string {
    return join(this.dir, `${this.name}.snap`);
  }

  #logPath(gen: number): string {
    return join(this.dir, `${this.name}.${gen}.log`);
  }

  #apply(rec: LogRecord): void {
    applyRecord(this.#entries, rec);
  }

  /** The snapshot file, or null when there is none; StoreCorruptError when it is damaged. */
  async #readSnapshot(): Promise<Snapshot | null> {
    const snapText = await readFile(this.#snapPath(), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (snapText === null) return null;
    let snap: Snapshot;
    try {
      snap = JSON.parse(snapText) as Snapshot;
    } catch {
      // Written atomically, so it is never half-written: this is damage from outside, and guessing is worse.
      throw new StoreCorruptError(
        `${this.#snapPath()} is not valid JSON: restore the state directory from a backup`,
      );
    }
    if (snap.format !== 1 || !Array.isArray(snap.entries))
      throw new StoreCorruptError(`${this.#snapPath()} has an unknown format`);
    return snap;
  }

  /**
   * The table as the files hold it (snapshot + the log's acknowledged records): what a journal keeping
   * references compacts, so that its snapshot holds only values that passed the secret guard when written,
   * never what the caller's objects became afterwards.
   */
  async #durableEntries(): Promise<Map<string, Json>> {
    const entries = new Map<string, Json>();
    for (const [k, v] of (await this.#readSnapshot())?.entries ?? []) entries.set(k, v);
    const buf = Buffer.alloc(this.#logBytes);
    if (this.#logBytes > 0) await this.#log!.read(buf, 0, this.#logBytes, 0);
    for (const r of decodeLog(buf).records) applyRecord(entries, r);
    return entries;
  }

  async #load(): Promise<void> {
    const snap = await this.#readSnapshot();
    if (snap) {
      this.#generation = snap.generation;
      for (const [k, v] of snap.entries) this.#entries.set(k, v as V);
    }
    // Logs of other generations are leftovers of an interrupted compaction.
    const prefix = `${this.name}.`;
    for (const f of await readdir(this.dir)) {
      const m = f.startsWith(prefix) && /^(\d+)\.log$/.exec(f.slice(prefix.length));
      if (m && Number(m[1]) !== this.#generation) await rm(join(this.dir, f), { force: true });
    }
    const logPath = this.#logPath(this.#generation);
    this.#log = await open(logPath, RW_CREATE, 0o600);
    const buf = await this.#log.readFile();
    const { records, goodBytes } = decodeLog(buf);
    for (const r of records) this.#apply(r);
    this.#logRecords = records.reduce((n, r) => n + entriesIn(r), 0);
    this.#logBytes = goodBytes;
    if (goodBytes < buf.length) {
      await this.#log.truncate(goodBytes);
      await this.#log.datasync();
    }
  }

  #enqueue(rec: LogRecord): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`journal ${this.name} is closed`));
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ rec, line: encode(rec), resolve, reject });
      this.#writing ??= this.#drain();
    });
  }

  async #flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  async #drain(): Promise<void> {
    // Let the other writes of this turn of the event loop join the batch.
    await new Promise<void>((r) => setImmediate(r));
    while (this.#queue.length) {
      const batch = this.#queue;
      this.#queue = [];
      const text = batch.map((p) => p.line).join('');
      const bytes = Buffer.from(text);
      try {
        const log = this.#log!;
        await log.write(bytes, 0, bytes.length, this.#logBytes);
        await log.datasync();
        this.#logBytes += bytes.length;
        for (const p of batch) this.#logRecords += entriesIn(p.rec);
        for (const p of batch) this.#apply(p.rec);
        for (const p of batch) p.resolve();
        if (this.#logRecords > 2 * this.#entries.size + this.#slack) await this.#compact().catch(() => {});
      } catch (err) {
        // Cut back whatever part of the batch reached the file, so the log stays a sequence of whole records.
        await this.#log?.truncate(this.#logBytes).catch(() => {});
        for (const p of batch) p.reject(err as Error);
      }
    }
    this.#writing = null;
  }

  /**
   * Folds the log into a new snapshot. A failure before the snapshot's rename changes nothing (the log stays
   * valid and compaction is tried again after the next write); after it, the new generation is in force.
   */
  async #compact(): Promise<void> {
    const next = this.#generation + 1;
    const entries = this.#keepReferences ? await this.#durableEntries() : this.#entries;
    const log = await open(this.#logPath(next), RW_CREATE_TRUNCATE, 0o600);
    const snap: Snapshot = { format: 1, generation: next, entries: [...entries] as Array<[string, Json]> };
    try {
      await writeFileAtomic(this.#snapPath(), JSON.stringify(snap), { mode: 0o600 });
    } catch {
      await log.close();
      await rm(this.#logPath(next), { force: true });
      return;
    }
    const old = this.#logPath(this.#generation);
    await this.#log!.close().catch(() => {});
    this.#log = log;
    this.#generation = next;
    this.#logBytes = 0;
    this.#logRecords = 0;
    try {
      syncDir(this.dir);
      await rm(old, { force: true });
    } catch {
      // The old log is a leftover that the next open removes.
    }
  }
}
