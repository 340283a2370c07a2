/**
 * SO_ORIGINAL_DST: the destination a connection had before an nftables/iptables `redirect` rewrote it to the
 * data plane's transparent port (linux/netfilter_ipv4.h, netfilter_ipv6/ip6_tables.h). Node has no binding
 * for it, so libc's getsockopt is called through koffi (a prebuilt FFI; ≈ 2 µs a call, platform.md).
 */
import { isIPv6, type Socket } from 'node:net';
import koffi from 'koffi';

const SOL_IP = 0;
const SOL_IPV6 = 41;
const SO_ORIGINAL_DST = 80;

let getsockopt: ((fd: number, level: number, name: number, value: Buffer, len: Buffer) => number) | null =
  null;

function libc() {
  getsockopt ??= koffi
    .load('libc.so.6')
    .func(
      'int getsockopt(int sockfd, int level, int optname, _Inout_ uint8_t *optval, _Inout_ uint32_t *optlen)',
    );
  return getsockopt!;
}

export interface OriginalDestination {
  address: string;
  port: number;
}

/** The pre-NAT destination of an accepted TCP socket, or null when the kernel has none (no conntrack entry). */
export function originalDestination(socket: Socket): OriginalDestination | null {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return null;
  const v6 = isIPv6(socket.localAddress ?? '') && !(socket.localAddress ?? '').startsWith('::ffff:');
  const value = Buffer.alloc(v6 ? 28 : 16);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(value.length);
  if (libc()(fd, v6 ? SOL_IPV6 : SOL_IP, SO_ORIGINAL_DST, value, len) !== 0) return null;
  const port = value.readUInt16BE(2);
  if (!v6) return { address: [...value.subarray(4, 8)].join('.'), port };
  const words: string[] = [];
  for (let i = 0; i < 8; i++) words.push(value.readUInt16BE(8 + i * 2).toString(16));
  return { address: words.join(':').replace(/\b(?:0+:){2,}/, ':'), port };
}
