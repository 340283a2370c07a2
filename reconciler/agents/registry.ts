/**
 * The daemons that joined: daemon ID → group, kept under `<state-dir>/daemons/` (one JSON file each, 0600,
 * atomic). The Sync stream authorises a caller only through this registry: a valid agent SVID whose daemon
 * is not registered (its file removed by an operator) is refused.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../common/atomic-file.ts';

export interface DaemonRecord {
  daemonId: string;
  spiffeId: string;
  daemonGroup: string | null;
  joinedAt: string;
  /** The join token it used (its public id). */
  tokenId: string;
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

  get(daemonId: string): DaemonRecord | undefined {
    return this.byId.get(daemonId);
  }

  all(): DaemonRecord[] {
    return [...this.byId.values()];
  }

  async add(record: DaemonRecord): Promise<void> {
    const file = `${createHash('sha256').update(record.daemonId).digest('hex').slice(0, 16)}.json`;
    await writeFileAtomic(join(this.dir, file), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    this.byId.set(record.daemonId, record);
  }
}
