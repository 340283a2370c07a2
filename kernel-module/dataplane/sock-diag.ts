/**
 * Socket → inode by its 4-tuple through NETLINK_SOCK_DIAG (linux/inet_diag.h), the interface `ss` uses: one
 * exact lookup in the kernel's established table, where reading /proc/net/tcp costs time in proportion to every
 * socket of the namespace (TIME_WAIT included: tens of thousands under load). libc through koffi, as for
 * SO_ORIGINAL_DST; the netlink socket is opened once and never blocks (the kernel answers inside send()).
 */
import { isIPv4 } from 'node:net';
import koffi from 'koffi';

const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1;
const NLMSG_ERROR = 2;
const MSG_DONTWAIT = 0x40;
const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_TCP = 6;

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  send: (fd: number, buf: Buffer, len: number, flags: number) => number;
  recv: (fd: number, buf: Buffer, len: number, flags: number) => number;
}

let libc: Libc | null = null;
let fd = -1;
let seq = 0;
// One request and one reply buffer for every lookup: each lookup is synchronous (send, then recv of the answer
// the kernel queued during send) and every request field is rewritten, so nothing carries over between lookups.
const req = Buffer.alloc(72);
const reply = Buffer.alloc(1024);

function open(): number {
  if (fd >= 0) return fd;
  if (!libc) {
    const lib = koffi.load('libc.so.6');
    libc = {
      socket: lib.func('int socket(int domain, int type, int protocol)'),
      send: lib.func('long send(int fd, const uint8_t *buf, size_t len, int flags)'),
      recv: lib.func('long recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)'),
    };
  }
  fd = libc.socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  return fd;
}

function writeAddress(buf: Buffer, offset: number, address: string): void {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (isIPv4(v4)) {
    for (const [i, part] of v4.split('.').entries()) buf[offset + i] = Number(part);
    return;
  }
  const [head = '', tail = ''] = address.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  for (const [i, g] of groups.entries()) buf.writeUInt16BE(Number.parseInt(g, 16), offset + i * 2);
}

/** The netlink sequence number after `n`: 32 bits, wrapping past 2^32 - 1 to 1 (0 is never sent). */
export function nextSequence(n: number): number {
  return (n + 1) >>> 0 || 1;
}

/**
 * The inode of the TCP socket whose local end is `local` and remote end `remote`, in the caller's network
 * namespace; null when there is none, or when sock_diag is unavailable (then callers fall back to /proc).
 */
export function inodeByTuple(
  local: { address: string; port: number },
  remote: { address: string; port: number },
): number | null | undefined {
  let sock: number;
  try {
    sock = open();
  } catch {
    return undefined;
  }
  if (sock < 0) return undefined;
  const v4 = isIPv4(local.address.replace(/^::ffff:/, '')) && isIPv4(remote.address.replace(/^::ffff:/, ''));
  req.fill(0);
  req.writeUInt32LE(72, 0);
  req.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
  req.writeUInt16LE(NLM_F_REQUEST, 6);
  seq = nextSequence(seq);
  req.writeUInt32LE(seq, 8);
  req[16] = v4 ? AF_INET : AF_INET6;
  req[17] = IPPROTO_TCP;
  req.writeUInt32LE(0xffffffff, 20); // every state
  req.writeUInt16BE(local.port, 24);
  req.writeUInt16BE(remote.port, 26);
  writeAddress(req, 28, local.address);
  writeAddress(req, 44, remote.address);
  req.writeUInt32LE(0xffffffff, 64); // INET_DIAG_NOCOOKIE
  req.writeUInt32LE(0xffffffff, 68);
  if (libc!.send(sock, req, req.length, 0) !== req.length) return undefined;
  const n = libc!.recv(sock, reply, reply.length, MSG_DONTWAIT);
  // Only the answer to this request counts (a reply left queued by an earlier lookup would name another socket).
  if (n < 16 || reply.readUInt32LE(8) !== seq) return undefined;
  if (reply.readUInt16LE(4) === NLMSG_ERROR) return null;
  if (n < 88) return undefined;
  const inode = reply.readUInt32LE(84);
  return inode > 0 ? inode : null;
}
