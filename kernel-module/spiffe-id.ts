/**
 * SPIFFE IDs exactly as the SPIFFE ID standard and go-spiffe v2 define them: the one implementation that
 * the policy language, the CA and the data plane share. Pure: no I/O, no dependencies.
 */

export type SpiffeIdErrorReason =
  | 'empty'
  | 'scheme'
  | 'missing_td'
  | 'bad_td'
  | 'bad_path'
  | 'no_lead'
  | 'empty_seg'
  | 'dot'
  | 'trailing'
  | 'too_long';

/** go-spiffe's wording (spiffeid/errors.go), so operators see the messages they know from SPIRE. */
export const SPIFFE_ID_ERROR_MESSAGES: Record<SpiffeIdErrorReason, string> = {
  empty: 'cannot be empty',
  scheme: 'scheme is missing or invalid',
  missing_td: 'trust domain is missing',
  bad_td: 'trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores',
  bad_path: 'path segment characters are limited to letters, numbers, dots, dashes, and underscores',
  no_lead: 'path must have a leading slash',
  empty_seg: 'path cannot contain empty segments',
  dot: 'path cannot contain dot segments',
  trailing: 'path cannot have a trailing slash',
  too_long: 'is longer than the SPIFFE limits (trust domain 255 bytes, whole ID 2048 bytes)',
};

export interface SpiffeId {
  trustDomain: string;
  /** Empty for the trust domain's own ID, otherwise starts with "/". */
  path: string;
}

export type SpiffeIdResult =
  | { ok: true; id: SpiffeId }
  | { ok: false; reason: SpiffeIdErrorReason; message: string };

const SCHEME_PREFIX = 'spiffe://';
const MAX_TRUST_DOMAIN_BYTES = 255;
const MAX_ID_BYTES = 2048;

function fail(reason: SpiffeIdErrorReason): { ok: false; reason: SpiffeIdErrorReason; message: string } {
  return { ok: false, reason, message: SPIFFE_ID_ERROR_MESSAGES[reason] };
}

export function isTrustDomainChar(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x30 && code <= 0x39) ||
    code === 0x2e ||
    code === 0x2d ||
    code === 0x5f
  );
}

export function isPathSegmentChar(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x30 && code <= 0x39) ||
    code === 0x2e ||
    code === 0x2d ||
    code === 0x5f
  );
}

/** Validates a path as go-spiffe's ValidatePath does: "" or "/seg(/seg)*" without empty or dot segments. */
export function validatePath(path: string): SpiffeIdErrorReason | null {
  if (path === '') return null;
  if (path.charCodeAt(0) !== 0x2f) return 'no_lead';
  let segStart = 0;
  for (let i = 0; i < path.length; i++) {
    const code = path.charCodeAt(i);
    if (code === 0x2f) {
      const segment = path.slice(segStart, i);
      if (segment === '/') return 'empty_seg';
      if (segment === '/.' || segment === '/..') return 'dot';
      segStart = i;
      continue;
    }
    if (!isPathSegmentChar(code)) return 'bad_path';
  }
  const last = path.slice(segStart);
  if (last === '/') return 'trailing';
  if (last === '/.' || last === '/..') return 'dot';
  return null;
}

/** Parses `spiffe://<trust-domain>[/<path>]`. The scheme is matched case-sensitively, as go-spiffe does. */
export function parseSpiffeId(input: string): SpiffeIdResult {
  if (input === '') return fail('empty');
  if (!input.startsWith(SCHEME_PREFIX)) return fail('scheme');
  const rest = input.slice(SCHEME_PREFIX.length);
  let i = 0;
  for (; i < rest.length; i++) {
    const code = rest.charCodeAt(i);
    if (code === 0x2f) break;
    if (!isTrustDomainChar(code)) return fail('bad_td');
  }
  if (i === 0) return fail('missing_td');
  const trustDomain = rest.slice(0, i);
  const path = rest.slice(i);
  const pathError = validatePath(path);
  if (pathError) return fail(pathError);
  // Only ASCII survives the checks above, so string length equals byte length.
  if (trustDomain.length > MAX_TRUST_DOMAIN_BYTES || input.length > MAX_ID_BYTES) return fail('too_long');
  return { ok: true, id: { trustDomain, path } };
}

/** A trust domain name, or the trust domain of a full SPIFFE ID (as go-spiffe's TrustDomainFromString). */
export function parseTrustDomain(input: string): { ok: true; trustDomain: string } | ReturnType<typeof fail> {
  if (input === '') return fail('missing_td');
  if (input.includes(':/')) {
    const parsed = parseSpiffeId(input);
    return parsed.ok ? { ok: true, trustDomain: parsed.id.trustDomain } : parsed;
  }
  for (let i = 0; i < input.length; i++) {
    if (!isTrustDomainChar(input.charCodeAt(i))) return fail('bad_td');
  }
  if (input.length > MAX_TRUST_DOMAIN_BYTES) return fail('too_long');
  return { ok: true, trustDomain: input };
}

/** The SPIFFE ID of a workload: `spiffe://<trust-domain>/<workloadID>`. */
export function workloadSpiffeId(trustDomain: string, workloadID: string): SpiffeIdResult {
  return parseSpiffeId(`${SCHEME_PREFIX}${trustDomain}/${workloadID}`);
}
