/**
 * Whether a destination is one of the data plane's own interception listeners (the proxy, the transparent
 * port): a connection there would be intercepted again, and again (a loop). `own` holds the listeners as bound
 * (`host:port`). Two checks use it: before dialing, on the destination as the application spelled it (the
 * IPv4-mapped, unspecified and loopback spellings of a listener's address), and after, on the address the
 * connection reached (`127.1`, a name that resolves to this host), since only the connected socket knows it.
 */
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { isLoopbackHost } from '../loopback.ts';

const UNSPECIFIED = new Set(['0.0.0.0', '::']);

/**
 * `host` in one spelling: an address as WHATWG URL canonicalises it (IPv4 shorthands such as `127.1`, `0`, `0x7f.1`
 * or `2130706433` as dotted quads, IPv6 compressed), an IPv4-mapped IPv6 address as its IPv4 one; a name as it is.
 */
function plain(host: string): string {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  let canonical = h;
  try {
    canonical = new URL(`http://${h.includes(':') ? `[${h}]` : h}/`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return h;
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (!mapped) return canonical;
  const [hi, lo] = [Number.parseInt(mapped[1]!, 16), Number.parseInt(mapped[2]!, 16)];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/**
 * The listeners on `port`, their hosts in one spelling. Every plain dial asks (reachesOwnListener): a listener on
 * another port is skipped before its host is parsed.
 */
function listeners(own: ReadonlySet<string>, port: number): string[] {
  const hosts: string[] = [];
  for (const a of own) {
    const at = a.lastIndexOf(':');
    if (Number(a.slice(at + 1)) === port) hosts.push(plain(a.slice(0, at)));
  }
  return hosts;
}

/**
 * A destination as given (CONNECT authority, absolute-form URL): self when it names a listener's address in any
 * spelling, or the unspecified address (which connects to this host) toward a listener on loopback or on all
 * addresses. Another address on the same port (`127.0.0.2`, a workload bound there) is another socket.
 */
export function namesOwnListener(own: ReadonlySet<string>, host: string, port: number): boolean {
  const on = listeners(own, port);
  if (!on.length) return false;
  const h = plain(host);
  return on.some(
    (l) =>
      l === h ||
      (UNSPECIFIED.has(h) && (isLoopbackHost(l) || UNSPECIFIED.has(l))) ||
      (UNSPECIFIED.has(l) && isLocalAddress(h)),
  );
}

/** A connected socket's remote endpoint: self when it is a listener, or any address of this host for one bound to all. */
export function reachesOwnListener(own: ReadonlySet<string>, address: string, port: number): boolean {
  const on = listeners(own, port);
  if (!on.length) return false;
  const a = plain(address);
  return on.some((l) => l === a || (UNSPECIFIED.has(l) && isLocalAddress(a)));
}

function isLocalAddress(a: string): boolean {
  if (isLoopbackHost(a) || UNSPECIFIED.has(a)) return true;
  if (!isIP(a)) return false;
  return Object.values(networkInterfaces()).some((list) => list?.some((i) => plain(i.address) === a));
}
