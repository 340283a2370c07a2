/**
 * The `connections` table: one JSON object per live connection (riptides.md §7's /proc/riptides/connections
 * fields, plus pid and the injected credential's binding name, never its value), kept in memory and, when a
 * path is given, mirrored to that file (one object a line, replaced atomically, at most every `flushMs`).
 */
import type { ConnectionRecord as ControlConnectionRecord } from '../control/abi.ts';
import { writeFileAtomic } from '../control/atomic.ts';

/** The control interface's connection line, plus what the data plane knows besides. */
export interface ConnectionRecord extends ControlConnectionRecord {
  id: number;
  direction: 'outbound' | 'inbound';
  /** passthrough | mtls | intercept | tls | plain | permissive-plain (mtls also when carried by a session) */
  mode: string;
  src: string;
  src_port: number;
  dst: string;
  dst_port: number;
  /** TLS toward the application (intercept, inbound SIMPLE) as the real module spells it (`TLS1.3`), or NONE. */
  tls_version: string;
  /** TLS of the managed leg between data planes (`TLS1.3`), or NONE. */
  mtls_version: string;
  /** Why a connection passed through untouched. */
  reason?: string;
  /**
   * The pooled mTLS session (one HTTP/2 connection between two data planes) that carries this connection as a
   * CONNECT stream; absent when it has an mTLS connection of its own (a peer speaking only `riptides`).
   */
  session?: number;
  since: string;
}

export class ConnectionTable {
  private readonly live = new Map<number, ConnectionRecord>();
  private nextId = 1;
  private timer: NodeJS.Timeout | null = null;
  /** Writes in call order, so a later snapshot never loses to an earlier one that finishes last. */
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly path: string | null,
    private readonly flushMs = 100,
  ) {}

  open(fields: Omit<ConnectionRecord, 'id' | 'since'>): ConnectionRecord {
    const record: ConnectionRecord = { id: this.nextId++, ...fields, since: new Date().toISOString() };
    this.live.set(record.id, record);
    this.dirty();
    return record;
  }

  update(record: ConnectionRecord, fields: Partial<ConnectionRecord>): void {
    if (!this.live.has(record.id)) return;
    Object.assign(record, fields);
    this.dirty();
  }

  close(record: ConnectionRecord): void {
    if (this.live.delete(record.id)) this.dirty();
  }

  list(): ConnectionRecord[] {
    return [...this.live.values()];
  }

  /**
   * Writes the file now (and stops the pending timer) through the one atomic writer; resolves once this
   * snapshot is on disk. A failed write is left for the next flush to repair: the table is a live view.
   */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const path = this.path;
    if (!path) return Promise.resolve();
    const text = this.list()
      .map((r) => `${JSON.stringify(r)}\n`)
      .join('');
    this.writing = this.writing.then(() => writeFileAtomic(path, text, 0o644).catch(() => undefined));
    return this.writing;
  }

  private dirty(): void {
    if (!this.path || this.timer) return;
    this.timer = setTimeout(() => void this.flush(), this.flushMs);
    this.timer.unref();
  }
}

/** `TLSv1.3` (node) → `TLS1.3` (the real module's connections table). */
export function tlsName(protocol: string | null | undefined): string {
  return protocol ? protocol.replace(/^TLSv/, 'TLS') : 'NONE';
}
