/**
 * Process events from the kernel's proc connector (NETLINK_CONNECTOR, CN_IDX_PROC; include/uapi/linux/
 * cn_proc.h): fork, exec, uid/gid and comm changes, exit, as they happen. It needs CAP_NET_ADMIN in the initial
 * network and pid namespaces and native calls: Node has no netlink sockets, so libc's socket/bind/send/recv
 * are called through koffi (a prebuilt FFI, no compiler at install).
 *
 * The socket is non-blocking and drained from a timer (about 0.6 µs per empty drain): no thread sits blocked in
 * recv, and an event reaches the Attestor within one drain interval. The receive buffer is raised to 4 MiB; if
 * the kernel still has to drop events (ENOBUFS), or a drain meets more than it is allowed to handle, the batch
 * says `overflow` and the Attestor rescans /proc instead of trusting a partial stream.
 *
 * `openProcEvents` proves the stream works before it is trusted: it starts a child and waits to see its fork.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

export interface ProcEventBatch {
  /** Processes (thread-group leaders) that were born, exec'd, or changed uid, gid or name. */
  changed: Set<number>;
  /** Processes that exited. */
  exited: Set<number>;
  /** Events were lost or too many arrived at once: rescan. */
  overflow: boolean;
}

export interface ProcEventSource {
  drain(): ProcEventBatch;
  close(): void;
}

const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_CONNECTOR = 11;
const CN_IDX_PROC = 1;
const CN_VAL_PROC = 1;
const NLMSG_DONE = 3;
const PROC_CN_MCAST_LISTEN = 1;
const PROC_CN_MCAST_IGNORE = 2;
const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_RCVBUFFORCE = 33;
const MSG_DONTWAIT = 0x40;
const ENOBUFS = 105;

const PROC_EVENT_FORK = 0x1;
const PROC_EVENT_EXEC = 0x2;
const PROC_EVENT_UID = 0x4;
const PROC_EVENT_GID = 0x40;
const PROC_EVENT_COMM = 0x200;
const PROC_EVENT_EXIT = 0x80000000;

/** nlmsghdr (16 bytes) + cn_msg (20 bytes): where struct proc_event starts; its union starts 16 bytes later. */
const EVENT_OFFSET = 36;
const DATA_OFFSET = EVENT_OFFSET + 16;

/** Datagrams one drain handles before it calls it an overflow (a fork storm): a rescan is cheaper then. */
const MAX_MESSAGES_PER_DRAIN = 20_000;
/** Distinct changed processes one drain handles before it calls it an overflow. */
const MAX_CHANGED_PER_DRAIN = 4_096;

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  send(fd: number, buf: Buffer, len: number, flags: number): number | bigint;
  recv(fd: number, buf: Buffer, len: number, flags: number): number | bigint;
  setsockopt(fd: number, level: number, name: number, value: Buffer, len: number): number;
  close(fd: number): number;
  errno(): number;
}

let libc: Libc | null | undefined;

function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const lib = koffi.load('libc.so.6');
    libc = {
      socket: lib.func('int socket(int, int, int)'),
      bind: lib.func('int bind(int, const void *, uint32_t)'),
      send: lib.func('intptr_t send(int, const void *, size_t, int)'),
      recv: lib.func('intptr_t recv(int, _Out_ void *, size_t, int)'),
      setsockopt: lib.func('int setsockopt(int, int, int, const void *, uint32_t)'),
      close: lib.func('int close(int)'),
      errno: () => koffi.errno(),
    };
  } catch {
    libc = null;
  }
  return libc;
}

function listenMessage(op: number): Buffer {
  const msg = Buffer.alloc(EVENT_OFFSET + 4);
  msg.writeUInt32LE(msg.length, 0); // nlmsg_len
  msg.writeUInt16LE(NLMSG_DONE, 4); // nlmsg_type
  msg.writeUInt32LE(process.pid, 12); // nlmsg_pid
  msg.writeUInt32LE(CN_IDX_PROC, 16); // cn_msg.id.idx
  msg.writeUInt32LE(CN_VAL_PROC, 20); // cn_msg.id.val
  msg.writeUInt16LE(4, 32); // cn_msg.len
  msg.writeUInt32LE(op, EVENT_OFFSET);
  return msg;
}

class ProcConnector implements ProcEventSource {
  readonly #buf = Buffer.alloc(64 * 1024);
  #fd: number;

  constructor(
    private readonly c: Libc,
    fd: number,
  ) {
    this.#fd = fd;
  }

  drain(): ProcEventBatch {
    const batch: ProcEventBatch = { changed: new Set(), exited: new Set(), overflow: false };
    if (this.#fd < 0) return batch;
    for (let messages = 0; ; messages++) {
      if (messages >= MAX_MESSAGES_PER_DRAIN || batch.changed.size >= MAX_CHANGED_PER_DRAIN) {
        batch.overflow = true;
        // Empty the queue: what is in it is stale once a rescan is due.
        while (Number(this.c.recv(this.#fd, this.#buf, this.#buf.length, MSG_DONTWAIT)) > 0);
        return batch;
      }
      const n = Number(this.c.recv(this.#fd, this.#buf, this.#buf.length, MSG_DONTWAIT));
      if (n < 0) {
        const errno = this.c.errno();
        if (errno === ENOBUFS) {
          batch.overflow = true;
          continue;
        }
        return batch; // EAGAIN: drained (or another error: the next rescan covers it)
      }
      if (n === 0) return batch;
      this.#parse(n, batch);
    }
  }

  #parse(length: number, batch: ProcEventBatch): void {
    const b = this.#buf;
    let off = 0;
    while (off + DATA_OFFSET + 8 <= length) {
      const len = b.readUInt32LE(off);
      if (len < 16 || off + len > length) return;
      const idx = b.readUInt32LE(off + 16);
      const val = b.readUInt32LE(off + 20);
      if (idx === CN_IDX_PROC && val === CN_VAL_PROC && len >= DATA_OFFSET + 8) {
        const what = b.readUInt32LE(off + EVENT_OFFSET);
        const d = off + DATA_OFFSET;
        if (what === PROC_EVENT_FORK && len >= DATA_OFFSET + 16) {
          const childPid = b.readUInt32LE(d + 8);
          const childTgid = b.readUInt32LE(d + 12);
          if (childPid === childTgid) batch.changed.add(childTgid); // a new process, not a new thread
        } else if (what === PROC_EVENT_EXIT) {
          const pid = b.readUInt32LE(d);
          const tgid = b.readUInt32LE(d + 4);
          if (pid === tgid) batch.exited.add(tgid);
        } else if (
          what === PROC_EVENT_EXEC ||
          what === PROC_EVENT_UID ||
          what === PROC_EVENT_GID ||
          what === PROC_EVENT_COMM
        ) {
          batch.changed.add(b.readUInt32LE(d + 4));
        }
      }
      off += (len + 3) & ~3;
    }
  }

  close(): void {
    if (this.#fd < 0) return;
    this.c.send(this.#fd, listenMessage(PROC_CN_MCAST_IGNORE), EVENT_OFFSET + 4, 0);
    this.c.close(this.#fd);
    this.#fd = -1;
  }
}

/** Subscribes to the proc connector and checks that events arrive; says why not when they cannot. */
export function openProcEvents(): { ok: true; source: ProcEventSource } | { ok: false; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'not Linux' };
  const c = loadLibc();
  if (!c) return { ok: false, reason: 'koffi could not load libc' };
  const fd = c.socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  if (fd < 0) return { ok: false, reason: `netlink connector socket: errno ${c.errno()}` };
  const fail = (what: string) => {
    const errno = c.errno();
    c.close(fd);
    return {
      ok: false as const,
      reason: `${what}: errno ${errno}${errno === 1 ? ' (needs CAP_NET_ADMIN in the initial namespaces)' : ''}`,
    };
  };
  const size = Buffer.alloc(4);
  size.writeInt32LE(4 * 1024 * 1024);
  if (c.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4) !== 0)
    c.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, size, 4);
  const addr = Buffer.alloc(12);
  addr.writeUInt16LE(AF_NETLINK, 0);
  addr.writeUInt32LE(CN_IDX_PROC, 8); // nl_groups
  if (c.bind(fd, addr, addr.length) !== 0) return fail('bind to the proc connector group');
  if (Number(c.send(fd, listenMessage(PROC_CN_MCAST_LISTEN), EVENT_OFFSET + 4, 0)) < 0)
    return fail('subscribe to proc events');
  const source = new ProcConnector(c, fd);
  // Proof: a child's fork must show up.
  const child = spawnSync('/bin/sh', ['-c', 'exit 0'], { stdio: 'ignore' });
  const batch = source.drain();
  if (!child.pid || !(batch.changed.has(child.pid) || batch.exited.has(child.pid) || batch.overflow)) {
    source.close();
    return {
      ok: false,
      reason:
        'subscribed, but no event arrived for a child started to check (not the initial pid namespace?)',
    };
  }
  return { ok: true, source };
}
