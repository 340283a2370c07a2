/**
 * The daemons that joined: daemon ID → group, kept under `<state-dir>/daemons/` (one JSON file each, 0600,
 * atomic, named by a hash of the daemon ID). The Sync stream authorises a caller only through this registry:
 * a valid agent SVID whose daemon is not registered is refused. Evicting a daemon is removing its record
 * (`riptides-cli daemon evict ID`, or by hand): a running reconciler checks the record on every new stream
 * and ends a live one when the record goes (AgentServer watches the directory).
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

/** The record file of `daemonId` in a registry directory. */
export function daemonRecordFile(dir: string, daemonId: string): string {
  return join(dir, `${createHash('sha256').update(daemonId).digest('hex').slice(0, 16)}.json`);
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
        r.byId.set(rec.daemonId, rec);
      } catch {
        // A record an operator truncated by hand: that daemon must join again.
      }
    }
    return r;
  }

  /** The daemon's record, if it is still on disk (one stat: an operator may have removed it). */
  get(daemonId: string): DaemonRecord | undefined {
    const rec = this.byId.get(daemonId);
    if (rec && !existsSync(daemonRecordFile(this.dir, daemonId))) {
      this.byId.delete(daemonId);
      return undefined;
    }
    return rec;
  }

  all(): DaemonRecord[] {
    return [...this.byId.values()];
  }

  async add(record: DaemonRecord): Promise<void> {
    const file = daemonRecordFile(this.dir, record.daemonId);
    await writeFileAtomic(file, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    this.byId.set(record.daemonId, record);
  }

  /** Records a renewed agent SVID of `daemonId` (it may present it from now on). */
  async addSerial(daemonId: string, serial: string): Promise<void> {
    const rec = this.byId.get(daemonId);
    if (!rec?.svidSerials || rec.svidSerials.includes(serial)) return;
    await this.add({ ...rec, svidSerials: [serial, ...rec.svidSerials].slice(0, MAX_SERIALS) });
  }

  /** Drops the daemons whose record is gone from disk, and returns them. */
  sweep(): DaemonRecord[] {
    const gone = [...this.byId.values()].filter((d) => !existsSync(daemonRecordFile(this.dir, d.daemonId)));
    for (const d of gone) this.byId.delete(d.daemonId);
    return gone;
  }

  /**
   * Removes `daemonId`'s record from the registry directory `dir` (what `daemon evict` does, with or without
   * a reconciler running). The record's content, or null when there was none.
   */
  static async evict(dir: string, daemonId: string): Promise<DaemonRecord | null> {
    const file = daemonRecordFile(dir, daemonId);
    let rec: DaemonRecord;
    try {
      rec = JSON.parse(await readFile(file, 'utf8')) as DaemonRecord;
    } catch {
      return null;
    }
    if (rec.daemonId !== daemonId) return null;
    await rm(file, { force: true });
    return rec;
  }
}
