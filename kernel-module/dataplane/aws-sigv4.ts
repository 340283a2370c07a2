/**
 * AWS Signature Version 4 re-signing for credential injection: an application's request, signed with
 * placeholder keys, is signed again with the workload's temporary credentials (riptides.md §6.3, §11). The
 * signature itself is AWS's maintained signer, @smithy/signature-v4 (the one the AWS SDK for JavaScript
 * ships); this module maps wire requests to it and back, derives region and service from the host, and
 * covers the two behaviours the library lacks: X-Amz-Security-Token added after signing (`omitSessionToken`)
 * and raw bytes in an S3 path. Checked against the aws-c-auth suite in ../shared/vectors/.
 */
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';

export class SigV4Error extends Error {}

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** Present for temporary (STS) credentials; sent as X-Amz-Security-Token. */
  sessionToken?: string;
}

/** Header lines in wire order; a name may repeat. */
export type HeaderList = ReadonlyArray<readonly [name: string, value: string]>;

export interface WireRequest {
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
  /** Resolve dot segments and encode the path again (every service but S3). Default: not for `s3*`. */
  normalizePath?: boolean;
  /** Add and sign x-amz-content-sha256. Default: for `s3*`. */
  signBody?: boolean;
  /** Add X-Amz-Security-Token after signing, outside the signature (a few services require this). */
  omitSessionToken?: boolean;
}

/** Headers the signer owns: whatever the application sent under these names is replaced. */
const REPLACED = new Set(['authorization', 'x-amz-date', 'x-amz-security-token']);
const QUERY_AUTH = new Set([
  'x-amz-algorithm',
  'x-amz-credential',
  'x-amz-date',
  'x-amz-signedheaders',
  'x-amz-signature',
  'x-amz-security-token',
]);

const sha256 = Hash.bind(null, 'sha256') as unknown as ConstructorParameters<typeof SignatureV4>[0]['sha256'];

function isS3(service: string): boolean {
  return service.startsWith('s3');
}

function isUnreserved(c: string): boolean {
  return /^[A-Za-z0-9\-._~]$/.test(c);
}

/** A path as S3 signs it: bytes a URI cannot carry raw (space, UTF-8) escaped, existing escapes kept. */
function escapeRaw(path: string): string {
  let out = '';
  const bytes = Buffer.from(path, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    const ch = String.fromCharCode(bytes[i]!);
    const escaped =
      ch === '%' && /^[0-9A-Fa-f]{2}$/.test(String.fromCharCode(bytes[i + 1] ?? 0, bytes[i + 2] ?? 0));
    out +=
      isUnreserved(ch) || ch === '/' || escaped
        ? ch
        : `%${bytes[i]!.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new SigV4Error(`malformed percent-encoding in the query: ${JSON.stringify(text.slice(0, 64))}`);
  }
}

function parseTarget(target: string): { path: string; query: Record<string, string | string[]> } {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  // No prototype: a parameter named `constructor` or `__proto__` is a parameter, not one of Object's.
  const query: Record<string, string | string[]> = Object.create(null);
  for (const part of q < 0 ? [] : target.slice(q + 1).split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = decode(eq < 0 ? part : part.slice(0, eq));
    const value = eq < 0 ? '' : decode(part.slice(eq + 1));
    const seen = query[name];
    query[name] = seen === undefined ? value : [...(Array.isArray(seen) ? seen : [seen]), value];
  }
  return { path: path === '' ? '/' : path, query };
}

/** RFC 3986 encoding, as SigV4 and the SDKs put a query on the wire. */
function encode(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function formatQuery(query: Record<string, string | string[] | null | undefined>): string {
  const pairs: string[] = [];
  for (const [name, value] of Object.entries(query)) {
    if (value === undefined || value === null) continue;
    for (const v of Array.isArray(value) ? value : [value]) pairs.push(`${encode(name)}=${encode(v)}`);
  }
  return pairs.join('&');
}

/** Signers by credentials and scope: a SignatureV4 caches its derived signing key, so reusing one saves HMACs. */
const signers = new Map<string, SignatureV4>();

function signer(options: SigningOptions, withToken: boolean): SignatureV4 {
  const { sessionToken, ...longTerm } = options.credentials;
  const normalize = options.normalizePath ?? !isS3(options.service);
  const checksum = options.signBody ?? isS3(options.service);
  const key = [
    longTerm.accessKeyId,
    longTerm.secretAccessKey,
    withToken ? (sessionToken ?? '') : '',
    options.region,
    options.service,
    normalize,
    checksum,
  ].join('\0');
  const hit = signers.get(key);
  if (hit) return hit;
  if (signers.size >= 256) signers.delete(signers.keys().next().value!);
  const made = new SignatureV4({
    credentials: withToken && sessionToken !== undefined ? { ...longTerm, sessionToken } : longTerm,
    region: options.region,
    service: options.service,
    sha256,
    uriEscapePath: normalize,
    applyChecksum: checksum,
  });
  signers.set(key, made);
  return made;
}

function smithyRequest(request: WireRequest, normalize: boolean, headers: Record<string, string>) {
  const { path, query } = parseTarget(request.target);
  return {
    method: request.method.toUpperCase(),
    protocol: 'https:',
    hostname: headers.host ?? '',
    path: normalize ? path : escapeRaw(path),
    query,
    headers,
    body: request.body ?? '',
  };
}

/** Header lines → one value per lower-case name (repeats joined with commas, as SigV4 canonicalises them). */
function headerRecord(headers: HeaderList, drop: ReadonlySet<string>): Record<string, string> {
  // No prototype: a header named `constructor` or `__proto__` is a header, not one of Object's members.
  const out: Record<string, string> = Object.create(null);
  for (const [rawName, value] of headers) {
    const name = rawName.trim().toLowerCase();
    if (drop.has(name)) continue;
    const v = value.replace(/[ \t\r\n]+/g, ' ').trim();
    out[name] = out[name] === undefined ? v : `${out[name]},${v}`;
  }
  return out;
}

export interface SignResult {
  authorization: string;
  signature: string;
  /** The headers to set on the request, replacing any of the same name (lower-case names). */
  headers: Array<[string, string]>;
}

/** Header signing of a request with `options.credentials`. */
export async function signHeaders(request: WireRequest, options: SigningOptions): Promise<SignResult> {
  const record = headerRecord(request.headers, REPLACED);
  if (record.host === undefined) throw new SigV4Error('the request has no Host header');
  const normalize = options.normalizePath ?? !isS3(options.service);
  const omit = options.omitSessionToken === true;
  const signed = await signer(options, !omit).sign(smithyRequest(request, normalize, record), {
    signingDate: options.date,
  });
  const out = signed.headers as Record<string, string>;
  const authorization = out.authorization!;
  const added: Array<[string, string]> = Object.entries(out).filter(([name]) => record[name] === undefined);
  if (omit && options.credentials.sessionToken !== undefined)
    added.push(['x-amz-security-token', options.credentials.sessionToken]);
  return {
    authorization,
    signature: authorization.slice(authorization.lastIndexOf('=') + 1),
    headers: added,
  };
}

export interface PresignResult {
  signature: string;
  /** The signed request target: path and query with the X-Amz-* parameters. */
  target: string;
}

/** Query (presigned URL) signing: the signature travels in X-Amz-* query parameters. */
export async function presignTarget(
  request: WireRequest,
  options: SigningOptions & { expiresIn: number },
): Promise<PresignResult> {
  const record = headerRecord(request.headers, REPLACED);
  const normalize = options.normalizePath ?? !isS3(options.service);
  const omit = options.omitSessionToken === true;
  const req = smithyRequest(request, normalize, record);
  for (const name of Object.keys(req.query)) if (QUERY_AUTH.has(name.toLowerCase())) delete req.query[name];
  const presigned = await signer({ ...options, signBody: false }, !omit).presign(req, {
    signingDate: options.date,
    expiresIn: options.expiresIn,
  });
  const query = { ...(presigned.query as Record<string, string | string[]>) };
  const signature = String(query['X-Amz-Signature']);
  if (omit && options.credentials.sessionToken !== undefined)
    query['X-Amz-Security-Token'] = options.credentials.sessionToken;
  const { path } = parseTarget(request.target);
  return { signature, target: `${path}?${formatQuery(query)}` };
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
  // Own names only: a `constructor.<region>.amazonaws.com` signs for `constructor`, not for Object's function.
  const signingName = Object.hasOwn(SIGNING_NAMES, scope.service) ? SIGNING_NAMES[scope.service] : undefined;
  return { region: scope.region, service: signingName ?? scope.service };
}

export interface ResignOptions {
  date: Date;
  /** Derived from `scopeHost` (else the Host header) when absent. */
  region?: string;
  service?: string;
  /** The name region and service are derived from: the destination the request was decided for. */
  scopeHost?: string;
}

/** SigV4 caps a presigned URL's validity at seven days; a longer X-Amz-Expires is the application's error. */
export const MAX_PRESIGN_EXPIRES = 604_800;

/**
 * The data plane's entry point: the request with the application's placeholder signature replaced by one made
 * with `credentials`: Authorization, X-Amz-Date and X-Amz-Security-Token for header-signed requests, or the
 * X-Amz-* query parameters (same X-Amz-Expires) for a presigned URL. Returns the new target and header lines.
 */
export async function resignRequest(
  request: WireRequest,
  credentials: AwsCredentials,
  options: ResignOptions,
): Promise<{ target: string; headers: Array<[string, string]> }> {
  let { region, service } = options;
  if (region === undefined || service === undefined) {
    const host = options.scopeHost ?? request.headers.find(([n]) => n.toLowerCase() === 'host')?.[1];
    if (host === undefined) throw new SigV4Error('the request has no Host header');
    const derived = awsScopeFromHost(host);
    region ??= derived.region;
    service ??= derived.service;
  }
  const query = parseTarget(request.target).query;
  const presigned = Object.keys(query).find((k) => k.toLowerCase() === 'x-amz-signature');
  if (presigned) {
    const expires = Number(
      query[Object.keys(query).find((k) => k.toLowerCase() === 'x-amz-expires') ?? ''] ?? 900,
    );
    // The signer throws a plain Error past seven days; refused here as the application's malformed request.
    if (Number.isFinite(expires) && expires > MAX_PRESIGN_EXPIRES)
      throw new SigV4Error(`X-Amz-Expires ${expires} is over the ${MAX_PRESIGN_EXPIRES} s SigV4 allows`);
    const signed = await presignTarget(request, {
      credentials,
      region,
      service,
      date: options.date,
      expiresIn: Number.isInteger(expires) && expires > 0 ? expires : 900,
    });
    return {
      target: signed.target,
      headers: request.headers.filter(([n]) => n.toLowerCase() !== 'authorization').map(([n, v]) => [n, v]),
    };
  }
  const { headers } = await signHeaders(request, { credentials, region, service, date: options.date });
  const replaced = new Set([...REPLACED, ...headers.map(([n]) => n)]);
  return {
    target: request.target,
    headers: [
      ...request.headers
        .filter(([n]) => !replaced.has(n.toLowerCase()))
        .map(([n, v]): [string, string] => [n, v]),
      ...headers,
    ],
  };
}
