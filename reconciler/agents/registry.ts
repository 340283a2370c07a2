/**
 * The daemons that joined: daemon ID → group, kept under `<state-dir>/daemons/` (one JSON file each, 0600,
 * atomic, named by a hash of the daemon ID). The Sync stream authorises a caller only through this registry:
 * a valid agent SVID whose daemon is not registered is refused. Evicting a daemon
 * (`riptides-cli daemon evict ID`) writes an eviction marker, then removes the record (removing the record by
 * hand works too): a running reconciler checks both on every new stream and ends a live one when either
 * changes (AgentServer watches the directory). The marker holds while a renewal that was under way rewrites
 * the record; a new join of the ID lifts it.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../common/atomic-file.ts';

export interface DaemonRecord {
  daemonId: string;
  spiffeId: string;
  daemonGroup: string | null;
  joinedAt: string;
  /** The join token it used (its public id). */
  tokenId: string;
  /**
   * Serials (lowercase hex) of the agent SVIDs issued to this registration, newest first (the join's, then
   * renewals; the last MAX_SERIALS). A stream must present one of them: an SVID issued to an evicted
   * registration of the same daemon ID is refused. Absent in records written before this field existed.
   */
  svidSerials?: string[];
}

/** Agent SVID serials kept per daemon: the current one and the ones it may still present while renewing. */
const MAX_SERIALS = 3;

const fileStem = (dir: string, daemonId: string) =>
  join(dir, createHash('sha256').update(daemonId).digest('hex').slice(0, 16));

/** The record file of `daemonId` in a registry directory. */
export function daemonRecordFile(dir: string, daemonId: string): string {
  return `${fileStem(dir, daemonId)}.json`;
}

/**
 * The eviction marker of `daemonId`: while it exists the daemon is not registered, even if a write that was
 * under way when it was evicted puts its record back. A new join of the ID removes it.
 */
function evictionMarker(dir: string, daemonId: string): string {
  return `${fileStem(dir, daemonId)}.evicted`;
}

export class DaemonRegistry {
  private readonly byId = new Map<string, DaemonRecord>();

  private constructor(readonly dir: string) {}

  static async open(dir: string): Promise<DaemonRegistry> {
    const r = new DaemonRegistry(dir);
    let names: string[] = [];
    try {
      names = await readdir(dir);
    } catch {
      // No daemon joined yet.
    }
    for (const n of names.filter((x) => x.endsWith('.json'))) {
      try {
        const rec = JSON.parse(await readFile(join(dir, n), 'utf8')) as DaemonRecord;
        if (existsSync(evictionMarker(dir, rec.daemonId))) continue;
        r.byId.set(rec.daemonId, rec);
      } catch {
        // A record an operator truncated by hand: that daemon must join again.
      }
    }
    return r;
  }

  /** The daemon's record, if it is still registered on disk (an operator may have evicted it since). */
  get(daemonId: string): DaemonRecord | undefined {
    const rec = this.byId.get(daemonId);
    if (rec && !this.#onDisk(daemonId)) {
      this.byId.delete(daemonId);
      return undefined;
    }
    return rec;
  }

  #onDisk(daemonId: string): boolean {
    return (
      existsSync(daemonRecordFile(this.dir, daemonId)) && !existsSync(evictionMarker(this.dir, daemonId))
    );
  }

  all(): DaemonRecord[] {
    return [...this.byId.values()];
  }

  /** Registers a daemon that joined (a new join of an evicted ID registers it again). */
  async add(record: DaemonRecord): Promise<void> {
    await rm(evictionMarker(this.dir, record.daemonId), { force: true });
    await this.#write(record);
  }

  async #write(record: DaemonRecord): Promise<void> {
    const file = daemonRecordFile(this.dir, record.daemonId);
    await writeFileAtomic(file, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    this.byId.set(record.daemonId, record);
  }

  /** Records a renewed agent SVID of `daemonId` (it may present it from now on). */
  async addSerial(daemonId: string, serial: string): Promise<void> {
    // Through get(): a record removed meanwhile (evicted) is never written back.
    const rec = this.get(daemonId);
    if (!rec?.svidSerials || rec.svidSerials.includes(serial)) return;
    // Never add(): that would lift an eviction that happens while this write is under way.
    await this.#write({ ...rec, svidSerials: [serial, ...rec.svidSerials].slice(0, MAX_SERIALS) });
  }

  /** Drops the daemons whose record is gone from disk, and returns them. */
  sweep(): DaemonRecord[] {
    const gone = [...this.byId.values()].filter((d) => !this.#onDisk(d.daemonId));
    for (const d of gone) this.byId.delete(d.daemonId);
    return gone;
  }

  /**
   * Removes `daemonId`'s record from the registry directory `dir` (what `daemon evict` does, with or without
   * a reconciler running). The record's content, or null when there was none.
   */
  static async evict(dir: string, daemonId: string): Promise<DaemonRecord | null> {
    const file = daemonRecordFile(dir, daemonId);
    if (existsSync(evictionMarker(dir, daemonId))) return null;
    let rec: DaemonRecord;
    try {
      rec = JSON.parse(await readFile(file, 'utf8')) as DaemonRecord;
    } catch {
      return null;
    }
    if (rec.daemonId !== daemonId) return null;
    // The marker first: from then on the daemon is not registered, whatever rewrites its record.
    await writeFileAtomic(
      evictionMarker(dir, daemonId),
      `${JSON.stringify({ ...rec, evictedAt: new Date().toISOString() }, null, 2)}\n`,
      { mode: 0o600 },
    );
    await rm(file, { force: true });
    return rec;
  }
}
