import { isIP } from 'node:net';

/**
 * True for a loopback host: `localhost`, 127.0.0.0/8 (IPv4 literals only) or `::1` (bracketed or not). The one
 * rule for where plain HTTP is allowed: the API's listen address, a Vault/STS endpoint, a drift webhook, the
 * reconciler address ctl talks to.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || (isIP(h) === 4 && h.startsWith('127.'));
}
