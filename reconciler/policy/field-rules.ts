/** Field formats that the schemas cannot express: role ARNs, URLs, addresses, CIDRs, lifetimes. */
import { isIP } from 'node:net';
import { parseDuration } from '../common/duration.ts';

const ROLE_ARN = /^arn:aws(-[a-z]+)*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;

export function checkRoleArn(arn: string): string | null {
  if (ROLE_ARN.test(arn)) return null;
  return `"${arn}" is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)`;
}

/** Seconds of a duration the schema has already checked against the grammar (common/duration.ts). */
export function seconds(duration: string): number {
  return parseDuration(duration) ?? Number.NaN;
}

export const STS_MIN_SECONDS = 900;
export const STS_MAX_SECONDS = 43_200;

export function checkHttpUrl(value: string): { error: string | null; plaintext: boolean } {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { error: `"${value}" is not a URL`, plaintext: false };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return { error: `"${value}" must be an http(s) URL, not ${url.protocol}`, plaintext: false };
  }
  if (url.username || url.password) {
    return { error: 'the URL carries credentials; they do not belong in git', plaintext: false };
  }
  if (url.search || url.hash)
    return { error: `"${value}" must not have a query or fragment`, plaintext: false };
  return { error: null, plaintext: url.protocol === 'http:' };
}

const HOSTNAME =
  /^(\*\.)?(?=.{1,253}$)[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?)*\.?$/i;

/** A Service address: a host name (RFC 1123, optionally a wildcard) or an IP address; never a URL. */
export function checkAddress(address: string): string | null {
  if (isIP(address)) return null;
  if (address.includes('://')) return `"${address}" is a URL; give the host name and set "port" separately`;
  if (/:\d+$/.test(address)) return `"${address}" includes a port; set "port" separately`;
  if (HOSTNAME.test(address)) return null;
  return `"${address}" is neither a host name nor an IP address`;
}

export function checkCidr(prefix: string): string | null {
  const [ip, bits, extra] = prefix.split('/');
  const family = ip ? isIP(ip) : 0;
  if (extra !== undefined || !family || bits === undefined || !/^\d+$/.test(bits)) {
    return `"${prefix}" is not a CIDR prefix like 10.0.0.0/8`;
  }
  const max = family === 4 ? 32 : 128;
  if (Number(bits) > max) return `"${prefix}": prefix length must be at most ${max}`;
  return null;
}
