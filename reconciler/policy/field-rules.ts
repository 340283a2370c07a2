/** Field formats that the schemas cannot express: role ARNs, URLs, addresses, CIDRs, lifetimes. */
import { isIP } from 'node:net';
import { parseDuration } from '../common/duration.ts';

/** An IAM role ARN; also carried into the JSON Schema (as `pattern`, ECMA-262 syntax like this). */
export const ROLE_ARN = /^arn:aws(-[a-z]+)*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;

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

/**
 * An alternation matching exactly the decimal integers min..max (no leading zeros), for JSON Schema patterns on
 * duration strings, where a numeric range cannot be said: each run of equal-length numbers is split on its
 * first digit into a partial low end, a full middle and a partial high end, recursively.
 */
export function integerRangePattern(min: number, max: number): string {
  const sameLength = (a: string, b: string): string[] => {
    if (a === b) return [a];
    if (a.length === 1) return [`[${a}-${b}]`];
    const n = a.length - 1;
    const [ha, ta, hb, tb] = [a[0]!, a.slice(1), b[0]!, b.slice(1)];
    const group = (alts: string[]) => (alts.length === 1 ? alts[0]! : `(?:${alts.join('|')})`);
    if (ha === hb) return [ha + group(sameLength(ta, tb))];
    const out: string[] = [];
    let low = Number(ha);
    let high = Number(hb);
    if (ta !== '0'.repeat(n)) {
      out.push(ha + group(sameLength(ta, '9'.repeat(n))));
      low++;
    }
    if (tb !== '9'.repeat(n)) {
      out.push(hb + group(sameLength('0'.repeat(n), tb)));
      high--;
    }
    if (low <= high) out.push(`${low === high ? low : `[${low}-${high}]`}\\d{${n}}`);
    return out;
  };
  const alts: string[] = [];
  for (let len = String(min).length; len <= String(max).length; len++) {
    const lo = Math.max(min, len === 1 ? 0 : 10 ** (len - 1));
    const hi = Math.min(max, 10 ** len - 1);
    if (lo <= hi) alts.push(...sameLength(String(lo), String(hi)));
  }
  return alts.join('|');
}

/** An STS credential lifetime as the schema writes it ("3600s"), within what STS grants. */
export const STS_LIFETIME_PATTERN = `^0*(?:${integerRangePattern(STS_MIN_SECONDS, STS_MAX_SECONDS)})s$`;

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
