/**
 * Process attribution: the client end of an accepted loopback/namespace-local TCP connection → its socket inode
 * (/proc/self/net/tcp and tcp6, the table of the data plane's own network namespace) → the process holding that
 * inode (/proc/<pid>/fd/* → `socket:[inode]`). Attested pids are searched first, then recently seen owners,
 * then every process. Synchronous /proc reads: a full scan of a few thousand descriptors costs a few ms, less
 * than the libuv thread-pool round trips of doing it asynchronously.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { join } from 'node:path';
import { inodeByTuple } from './sock-diag.ts';

/** `127.0.0.1:8080` as /proc/net/tcp spells it (`0100007F:1F90`); IPv6 as four host-order words. */
export function procNetAddress(address: string, port: number): string | null {
  const p = port.toString(16).toUpperCase().padStart(4, '0');
  const v4 = address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
  if (isIPv4(v4)) {
    const b = v4.split('.').map(Number);
    const hex = Buffer.from(b).readUInt32LE(0).toString(16).toUpperCase().padStart(8, '0');
    return `${hex}:${p}`;
  }
  if (!isIPv6(address)) return null;
  const [head = '', tail = ''] = address.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].map((g) => Number.parseInt(g, 16));
  const buf = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) buf.writeUInt16BE(g, i * 2);
  let hex = '';
  for (let i = 0; i < 16; i += 4) hex += buf.readUInt32LE(i).toString(16).toUpperCase().padStart(8, '0');
  return `${hex}:${p}`;
}

/** The inode of the socket whose local end is address:port, from the data plane's namespace tables. */
export function socketInode(address: string, port: number, procRoot = '/proc'): number | null {
  const wanted = procNetAddress(address, port);
  if (!wanted) return null;
  const v6 = wanted.length > 13;
  const files = v6 ? ['tcp6'] : ['tcp', 'tcp6'];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(join(procRoot, 'self', 'net', file), 'latin1');
    } catch {
      continue;
    }
    // IPv4 clients of an IPv6 listener appear in tcp6 as ::ffff:a.b.c.d.
    const needle = file === 'tcp6' && !v6 ? `0000000000000000FFFF0000${wanted}` : wanted;
    // `  sl: local rem st tx:rx tr:when retrnsmt uid timeout inode …`: the local address follows "sl: ".
    const key = `: ${needle} `;
    const at = text.indexOf(key);
    if (at >= 0) {
      const fields = text
        .slice(at + 2, text.indexOf('\n', at))
        .trim()
        .split(/\s+/);
      const inode = Number(fields[8]);
      if (inode > 0) return inode;
    }
  }
  return null;
}

function holds(pid: number, link: string, procRoot: string): boolean {
  let fds: string[];
  try {
    fds = readdirSync(join(procRoot, String(pid), 'fd'));
  } catch {
    return false;
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(join(procRoot, String(pid), 'fd', fd)) === link) return true;
    } catch {
      // closed meanwhile
    }
  }
  return false;
}

export class Attributor {
  private readonly recent: number[] = [];

  constructor(private readonly procRoot = '/proc') {}

  /**
   * The pid holding the client end (`address:port`) of a connection whose other end (as the client sees it:
   * the data plane's address, or the original destination of a redirected connection) is `remote`, or null.
   */
  owner(
    address: string,
    port: number,
    attested: Iterable<number>,
    remote?: { address: string; port: number },
  ): { pid: number; inode: number } | null {
    const exact = remote && this.procRoot === '/proc' ? inodeByTuple({ address, port }, remote) : undefined;
    const inode = exact === undefined ? socketInode(address, port, this.procRoot) : exact;
    if (inode === null) return null;
    const link = `socket:[${inode}]`;
    const tried = new Set<number>([process.pid]);
    const attempt = (pid: number) => {
      if (tried.has(pid)) return false;
      tried.add(pid);
      return holds(pid, link, this.procRoot);
    };
    for (const pid of attested) if (attempt(pid)) return this.seen(pid, inode);
    for (const pid of this.recent) if (attempt(pid)) return this.seen(pid, inode);
    let entries: string[];
    try {
      entries = readdirSync(this.procRoot);
    } catch {
      return null;
    }
    // Newest processes first: a client that just started (curl, psql) has one of the highest pids.
    const pids = entries.map(Number).filter((pid) => Number.isInteger(pid) && pid > 0);
    pids.sort((a, b) => b - a);
    for (const pid of pids) if (attempt(pid)) return this.seen(pid, inode);
    return null;
  }

  private seen(pid: number, inode: number) {
    const i = this.recent.indexOf(pid);
    if (i >= 0) this.recent.splice(i, 1);
    this.recent.unshift(pid);
    if (this.recent.length > 64) this.recent.pop();
    return { pid, inode };
  }
}
