/**
 * AWS Signature Version 4 (AWS4-HMAC-SHA256): the signer the data plane uses to re-sign outbound AWS requests
 * with the workload's temporary credentials, replacing the signature the application made with placeholder
 * keys (riptides.md §11, §8.2). Header signing and presigned-URL (query) signing. Pure: no I/O, node:crypto only.
 */

import { createHash, createHmac } from 'node:crypto';

export class SigV4Error extends Error {}

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** Present for temporary (STS) credentials; sent as X-Amz-Security-Token. */
  sessionToken?: string;
}

/** Header lines in wire order; a name may repeat. */
export type HeaderList = ReadonlyArray<readonly [name: string, value: string]>;

export interface HttpRequest {
  method: string;
  /** The request target as on the wire: path, optionally followed by `?query`. */
  target: string;
  headers: HeaderList;
  body?: string | Uint8Array;
}

export interface SigningOptions {
  credentials: AwsCredentials;
  region: string;
  service: string;
  date: Date;
  /**
   * Remove `.`/`..` and empty segments and encode the path a second time. Off for S3, which signs object keys
   * exactly as sent. Default: on unless the service starts with `s3`.
   */
  normalizePath?: boolean;
  /** Add and sign x-amz-content-sha256 (header signing). Default: on when the service starts with `s3`. */
  signBody?: boolean;
  /** Add X-Amz-Security-Token after signing, outside the signature (a few services require this). */
  omitSessionToken?: boolean;
}

export interface PresignOptions extends SigningOptions {
  /** X-Amz-Expires, in seconds. */
  expiresIn: number;
}

export const ALGORITHM = 'AWS4-HMAC-SHA256';

/** Headers the signer owns: whatever the application sent under these names is replaced. */
const REPLACED_HEADERS = new Set(['authorization', 'x-amz-date', 'x-amz-security-token']);

/** Set or rewritten by HTTP stacks and proxies after signing; the AWS SDKs leave them unsigned too. */
const UNSIGNED_HEADERS = new Set([
  'user-agent',
  'x-amzn-trace-id',
  'expect',
  'connection',
  'transfer-encoding',
]);

const CONTENT_SHA256 = 'x-amz-content-sha256';

function lower(name: string): string {
  return name.trim().toLowerCase();
}

function isSignable([name]: readonly [string, string]): boolean {
  const n = lower(name);
  return !REPLACED_HEADERS.has(n) && !UNSIGNED_HEADERS.has(n);
}

function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: string | Uint8Array, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** `20150830T123600Z`. */
export function amzDate(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

function isUnreserved(byte: number): boolean {
  return (
    (byte >= 0x41 && byte <= 0x5a) ||
    (byte >= 0x61 && byte <= 0x7a) ||
    (byte >= 0x30 && byte <= 0x39) ||
    byte === 0x2d ||
    byte === 0x2e ||
    byte === 0x5f ||
    byte === 0x7e
  );
}

function isHexDigit(byte: number | undefined): boolean {
  return (
    byte !== undefined &&
    ((byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66))
  );
}

function percent(byte: number): string {
  return '%' + byte.toString(16).toUpperCase().padStart(2, '0');
}

/** RFC 3986 encoding of UTF-8 bytes: everything but the unreserved set, hex in upper case. */
export function uriEncode(text: string | Uint8Array): string {
  let out = '';
  for (const byte of typeof text === 'string' ? Buffer.from(text, 'utf8') : text) {
    out += isUnreserved(byte) ? String.fromCharCode(byte) : percent(byte);
  }
  return out;
}

/** Decodes `%XX` escapes only; `+` stays a plus (SigV4 spells a space `%20`), a stray `%` stays literal. */
function percentDecode(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const out: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte === 0x25 && isHexDigit(bytes[i + 1]) && isHexDigit(bytes[i + 2])) {
      out.push(Number.parseInt(String.fromCharCode(bytes[i + 1]!, bytes[i + 2]!), 16));
      i += 2;
    } else {
      out.push(byte);
    }
  }
  return Buffer.from(out);
}

function splitTarget(target: string): { path: string; query: string } {
  const q = target.indexOf('?');
  return q < 0 ? { path: target, query: '' } : { path: target.slice(0, q), query: target.slice(q + 1) };
}

/**
 * The canonical URI. Normalised (every service but S3): dot segments resolved, empty segments merged, and each
 * segment of the wire path encoded again (the "double encoding": `%20` becomes `%2520`). Not normalised (S3):
 * the path as sent, only bytes a URI may not carry raw (a space, UTF-8) encoded; existing escapes are kept.
 */
export function canonicalUri(path: string, normalize: boolean): string {
  if (path === '') return '/';
  if (!normalize) {
    const bytes = Buffer.from(path, 'utf8');
    let out = '';
    for (let i = 0; i < bytes.length; i++) {
      const byte = bytes[i]!;
      const keep =
        isUnreserved(byte) ||
        byte === 0x2f ||
        (byte === 0x25 && isHexDigit(bytes[i + 1]) && isHexDigit(bytes[i + 2]));
      out += keep ? String.fromCharCode(byte) : percent(byte);
    }
    return out;
  }
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const trailing = segments.length > 0 && path.endsWith('/') ? '/' : '';
  return '/' + segments.map((s) => uriEncode(s)).join('/') + trailing;
}

/**
 * The canonical query string: each parameter decoded then re-encoded (so `ሴ` and `%E1%88%B4` agree), a
 * missing value signed as empty, sorted by encoded name then encoded value. `extra` holds unencoded pairs
 * (the presigning parameters).
 */
export function canonicalQuery(query: string, extra: ReadonlyArray<readonly [string, string]> = []): string {
  const pairs: Array<[string, string]> = [];
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    pairs.push([uriEncode(percentDecode(name)), uriEncode(percentDecode(value))]);
  }
  for (const [name, value] of extra) pairs.push([uriEncode(name), uriEncode(value)]);
  // Encoded text is ASCII, so UTF-16 order is byte order.
  pairs.sort(([an, av], [bn, bv]) => (an < bn ? -1 : an > bn ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  return pairs.map(([name, value]) => `${name}=${value}`).join('&');
}

/** Trimmed, with every run of whitespace (folded continuation lines included) collapsed to one space. */
export function canonicalHeaderValue(value: string): string {
  return value.replace(/[ \t\r\n]+/g, ' ').trim();
}

/**
 * Canonical header block and SignedHeaders of exactly the given headers: names lower-cased and sorted,
 * values of a repeated name joined with commas in wire order.
 */
export function canonicalHeaders(headers: HeaderList): { canonical: string; signedHeaders: string } {
  const byName = new Map<string, string[]>();
  for (const [rawName, value] of headers) {
    const name = lower(rawName);
    const values = byName.get(name) ?? [];
    values.push(canonicalHeaderValue(value));
    byName.set(name, values);
  }
  const names = [...byName.keys()].sort();
  return {
    canonical: names.map((n) => `${n}:${byName.get(n)!.join(',')}\n`).join(''),
    signedHeaders: names.join(';'),
  };
}

export interface CanonicalRequestInput {
  method: string;
  target: string;
  /** Exactly the headers to sign. */
  headers: HeaderList;
  payloadHash: string;
  normalizePath: boolean;
  /** Unencoded query parameters added by the signer (presigning). */
  extraQuery?: ReadonlyArray<readonly [string, string]>;
}

export function canonicalRequest(input: CanonicalRequestInput): {
  canonicalRequest: string;
  signedHeaders: string;
} {
  const { path, query } = splitTarget(input.target);
  const { canonical, signedHeaders } = canonicalHeaders(input.headers);
  return {
    canonicalRequest: [
      input.method.toUpperCase(),
      canonicalUri(path, input.normalizePath),
      canonicalQuery(query, input.extraQuery),
      canonical,
      signedHeaders,
      input.payloadHash,
    ].join('\n'),
    signedHeaders,
  };
}

/** `20150830/us-east-1/service/aws4_request`. */
export function credentialScope(date: Date, region: string, service: string): string {
  return `${amzDate(date).slice(0, 8)}/${region}/${service}/aws4_request`;
}

export function stringToSign(date: Date, scope: string, canonical: string): string {
  return [ALGORITHM, amzDate(date), scope, sha256Hex(canonical)].join('\n');
}

export function signingKey(secretAccessKey: string, date: Date, region: string, service: string): Buffer {
  const kDate = hmac(`AWS4${secretAccessKey}`, amzDate(date).slice(0, 8));
  return hmac(hmac(hmac(kDate, region), service), 'aws4_request');
}

export function signature(key: Uint8Array, toSign: string): string {
  return hmac(key, toSign).toString('hex');
}

function isS3(service: string): boolean {
  return service.startsWith('s3');
}

function headerValue(headers: HeaderList, name: string): string | undefined {
  return headers.find(([n]) => lower(n) === name)?.[1];
}

export interface SignResult {
  canonicalRequest: string;
  stringToSign: string;
  signature: string;
  authorization: string;
  /** The headers to set on the request, replacing any of the same name. */
  headers: Array<[string, string]>;
}

/** Header signing: everything the signature needs, plus the headers that carry it. */
export function sign(request: HttpRequest, options: SigningOptions): SignResult {
  const { credentials, region, service, date } = options;
  if (headerValue(request.headers, 'host') === undefined)
    throw new SigV4Error('the request has no Host header');
  const token = credentials.sessionToken;
  const signTokenIn = token !== undefined && !options.omitSessionToken;

  const signed: Array<readonly [string, string]> = request.headers.filter(isSignable);
  const added: Array<[string, string]> = [];
  if (token !== undefined) added.push(['X-Amz-Security-Token', token]);
  added.push(['X-Amz-Date', amzDate(date)]);
  // The application's own payload hash stays: it may be UNSIGNED-PAYLOAD for a body we never buffered.
  let payloadHash = headerValue(request.headers, CONTENT_SHA256);
  if (payloadHash === undefined) {
    payloadHash = sha256Hex(request.body ?? '');
    if (options.signBody ?? isS3(service)) added.push([CONTENT_SHA256, payloadHash]);
  }
  signed.push(...added.filter(([n]) => signTokenIn || lower(n) !== 'x-amz-security-token'));

  const scope = credentialScope(date, region, service);
  const canonical = canonicalRequest({
    method: request.method,
    target: request.target,
    headers: signed,
    payloadHash,
    normalizePath: options.normalizePath ?? !isS3(service),
  });
  const toSign = stringToSign(date, scope, canonical.canonicalRequest);
  const sig = signature(signingKey(credentials.secretAccessKey, date, region, service), toSign);
  const authorization = `${ALGORITHM} Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${canonical.signedHeaders}, Signature=${sig}`;
  return {
    canonicalRequest: canonical.canonicalRequest,
    stringToSign: toSign,
    signature: sig,
    authorization,
    headers: [...added, ['Authorization', authorization]],
  };
}

export interface PresignResult {
  canonicalRequest: string;
  stringToSign: string;
  signature: string;
  /** The signed request target: path, canonical query with the X-Amz-* parameters, X-Amz-Signature last. */
  target: string;
}

/** Query (presigned URL) signing: the signature travels in X-Amz-* query parameters, not in headers. */
export function presign(request: HttpRequest, options: PresignOptions): PresignResult {
  const { credentials, region, service, date } = options;
  const scope = credentialScope(date, region, service);
  const headers = request.headers.filter(isSignable);
  const { signedHeaders } = canonicalHeaders(headers);
  const token = credentials.sessionToken;
  const params: Array<[string, string]> = [
    ['X-Amz-Algorithm', ALGORITHM],
    ['X-Amz-Credential', `${credentials.accessKeyId}/${scope}`],
    ['X-Amz-Date', amzDate(date)],
    ['X-Amz-Expires', String(options.expiresIn)],
    ['X-Amz-SignedHeaders', signedHeaders],
  ];
  if (token !== undefined && !options.omitSessionToken) params.push(['X-Amz-Security-Token', token]);

  const canonical = canonicalRequest({
    method: request.method,
    target: request.target,
    headers,
    payloadHash: sha256Hex(request.body ?? ''),
    normalizePath: options.normalizePath ?? !isS3(service),
    extraQuery: params,
  });
  const toSign = stringToSign(date, scope, canonical.canonicalRequest);
  const sig = signature(signingKey(credentials.secretAccessKey, date, region, service), toSign);
  const { path, query } = splitTarget(request.target);
  let signedQuery = `${canonicalQuery(query, params)}&X-Amz-Signature=${sig}`;
  if (token !== undefined && options.omitSessionToken)
    signedQuery += `&X-Amz-Security-Token=${uriEncode(token)}`;
  return {
    canonicalRequest: canonical.canonicalRequest,
    stringToSign: toSign,
    signature: sig,
    target: `${path}?${signedQuery}`,
  };
}

/** Endpoint prefixes whose signing name differs (the `signingName` of the AWS SDK service models). */
const SIGNING_NAMES: Record<string, string> = {
  'bedrock-runtime': 'bedrock',
  'bedrock-agent': 'bedrock',
  'bedrock-agent-runtime': 'bedrock',
};

const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;

/**
 * Region and signing name from an AWS endpoint host: `[<prefix>.]<service>.<region>.amazonaws.com[.cn]`
 * (virtual-hosted S3 buckets and API Gateway ids are the prefix), or a global `<service>.amazonaws.com`,
 * which signs for us-east-1.
 */
export function awsScopeFromHost(host: string): { region: string; service: string } {
  const name = host.trim().toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
  const suffix = ['.amazonaws.com', '.amazonaws.com.cn'].find((s) => name.endsWith(s));
  const labels = suffix ? name.slice(0, -suffix.length).split('.') : [];
  const last = labels[labels.length - 1];
  const beforeLast = labels[labels.length - 2];
  let scope: { region: string; service: string } | undefined;
  if (last !== undefined && beforeLast !== undefined && REGION.test(last))
    scope = { region: last, service: beforeLast };
  else if (labels.length === 1 && last && suffix === '.amazonaws.com')
    scope = { region: 'us-east-1', service: last };
  if (!scope || scope.service === '')
    throw new SigV4Error(
      `cannot derive the AWS region and service from host "${host}": expected <service>.<region>.amazonaws.com; pass region and service explicitly`,
    );
  return { region: scope.region, service: SIGNING_NAMES[scope.service] ?? scope.service };
}

export interface ResignOptions {
  date: Date;
  /** Derived from the Host header when absent. */
  region?: string;
  service?: string;
  normalizePath?: boolean;
  signBody?: boolean;
}

/**
 * The data plane's entry point: the request's headers with the application's placeholder signature
 * (Authorization, X-Amz-Date, X-Amz-Security-Token) replaced by a signature made with `credentials`.
 */
export function resignHeaders(
  request: HttpRequest,
  credentials: AwsCredentials,
  options: ResignOptions,
): Array<[string, string]> {
  let { region, service } = options;
  if (region === undefined || service === undefined) {
    const host = headerValue(request.headers, 'host');
    if (host === undefined) throw new SigV4Error('the request has no Host header');
    const derived = awsScopeFromHost(host);
    region ??= derived.region;
    service ??= derived.service;
  }
  const { headers } = sign(request, { ...options, credentials, region, service });
  const replaced = new Set([...REPLACED_HEADERS, ...headers.map(([n]) => lower(n))]);
  return [
    ...request.headers.filter(([n]) => !replaced.has(lower(n))).map(([n, v]): [string, string] => [n, v]),
    ...headers,
  ];
}
