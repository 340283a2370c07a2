import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import {
  type AwsCredentials,
  awsScopeFromHost,
  type WireRequest as HttpRequest,
  presignTarget,
  resignRequest,
  SigV4Error,
  signHeaders,
} from '../../kernel-module/dataplane/aws-sigv4.ts';
import { vectorPath } from '../support/shared.ts';

interface VectorCase {
  name: string;
  context: {
    credentials: { access_key_id: string; secret_access_key: string; token?: string };
    expiration_in_seconds: number;
    normalize: boolean;
    region: string;
    service: string;
    sign_body: boolean;
    timestamp: string;
    omit_session_token?: boolean;
  };
  request: string;
  header: {
    canonical_request: string;
    string_to_sign: string;
    signature: string;
    authorization: string;
    signed_request: string;
  };
  query: { canonical_request: string; string_to_sign: string; signature: string };
}

const suite = JSON.parse(readFileSync(vectorPath('aws-sigv4-test-suite.json'), 'utf8')) as {
  cases: VectorCase[];
};

/** aws-c-auth's request.txt: request line, header lines (indented lines continue the previous one), body. */
function parseRequest(raw: string): { requestLine: string; request: HttpRequest } {
  const blank = raw.indexOf('\n\n');
  const head = blank < 0 ? raw : raw.slice(0, blank);
  const body = blank < 0 ? '' : raw.slice(blank + 2);
  const [requestLine = '', ...lines] = head.split('\n');
  const headers: Array<[string, string]> = [];
  for (const line of lines) {
    if (line === '') continue;
    const previous = headers[headers.length - 1];
    if (/^[ \t]/.test(line) && previous) previous[1] += '\n' + line;
    else {
      const colon = line.indexOf(':');
      headers.push([line.slice(0, colon), line.slice(colon + 1)]);
    }
  }
  // The target may contain raw spaces (get-space-*): it runs from the first space to the last.
  const method = requestLine.slice(0, requestLine.indexOf(' '));
  const target = requestLine.slice(requestLine.indexOf(' ') + 1, requestLine.lastIndexOf(' '));
  return { requestLine, request: { method, target, headers, body } };
}

function optionsOf(c: VectorCase) {
  const { credentials, ...ctx } = c.context;
  const creds: AwsCredentials = {
    accessKeyId: credentials.access_key_id,
    secretAccessKey: credentials.secret_access_key,
    ...(credentials.token !== undefined && { sessionToken: credentials.token }),
  };
  return {
    credentials: creds,
    region: ctx.region,
    service: ctx.service,
    date: new Date(ctx.timestamp),
    normalizePath: ctx.normalize,
    signBody: ctx.sign_body,
    omitSessionToken: ctx.omit_session_token ?? false,
  };
}

/** Header lines of a signed request, names lower-cased, sorted: wire order and case carry no meaning. */
function headerSet(lines: ReadonlyArray<readonly [string, string]>): string[] {
  return lines.map(([n, v]) => `${n.trim().toLowerCase()}:${v.trim()}`).sort();
}

describe('aws-c-auth SigV4 suite: header signing', () => {
  it('has all 38 cases', () => {
    expect(suite.cases).toHaveLength(38);
  });

  it.each(suite.cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const { request } = parseRequest(c.request);
    const result = await signHeaders(request, optionsOf(c));
    expect(result.signature).toBe(c.header.signature);
    expect(result.authorization).toBe(c.header.authorization);
    const expected = parseRequest(c.header.signed_request).request.headers;
    expect(headerSet([...request.headers, ...result.headers])).toEqual(headerSet(expected));
  });
});

describe('aws-c-auth SigV4 suite: query (presigned URL) signing', () => {
  it.each(suite.cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const { request } = parseRequest(c.request);
    const result = await presignTarget(request, {
      ...optionsOf(c),
      expiresIn: c.context.expiration_in_seconds,
    });
    expect(result.signature).toBe(c.query.signature);
    // Every parameter of the vector's canonical query is on the signed target, and the signature with it.
    const params = new URLSearchParams(result.target.slice(result.target.indexOf('?') + 1));
    const canonical = new URLSearchParams(c.query.canonical_request.split('\n')[2]);
    for (const [name, value] of canonical) expect(params.getAll(name)).toContain(value);
    expect(params.get('X-Amz-Signature')).toBe(c.query.signature);
  });
});

describe('resignRequest (the data plane re-signing an application request)', () => {
  const date = new Date('2015-08-30T12:36:00Z');
  const creds: AwsCredentials = {
    accessKeyId: 'ASIATEMPORARY',
    secretAccessKey: 'temporary-secret',
    sessionToken: 'real-session-token',
  };
  const body = '{"inputText":"hello"}';
  const appRequest: HttpRequest = {
    method: 'POST',
    target: '/agents/A1/agentAliases/B2/sessions/s-1/text',
    headers: [
      ['Host', 'bedrock-agent-runtime.eu-central-1.amazonaws.com'],
      ['Content-Type', 'application/json'],
      ['User-Agent', 'aws-sdk-js/3'],
      ['X-Amz-Date', '20240101T000000Z'],
      ['X-Amz-Security-Token', 'placeholder-token'],
      [
        'Authorization',
        'AWS4-HMAC-SHA256 Credential=PLACEHOLDER/20240101/eu-central-1/bedrock/aws4_request, SignedHeaders=host, Signature=00',
      ],
    ],
    body,
  };
  const named = (headers: ReadonlyArray<readonly [string, string]>, name: string) =>
    headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
  const resign = async (r: HttpRequest, c: AwsCredentials, o: Parameters<typeof resignRequest>[2]) =>
    (await resignRequest(r, c, o)).headers;

  it("replaces the application's Authorization, X-Amz-Date and X-Amz-Security-Token", async () => {
    const out = await resign(appRequest, creds, { date });
    expect(named(out, 'authorization')).toHaveLength(1);
    expect(named(out, 'authorization')[0]).toMatch(
      /^AWS4-HMAC-SHA256 Credential=ASIATEMPORARY\/20150830\/eu-central-1\/bedrock\/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=[0-9a-f]{64}$/,
    );
    expect(named(out, 'x-amz-date')).toEqual(['20150830T123600Z']);
    expect(named(out, 'x-amz-security-token')).toEqual(['real-session-token']);
    expect(named(out, 'user-agent')).toEqual(['aws-sdk-js/3']);
    expect(named(out, 'content-type')).toEqual(['application/json']);
    // The placeholders do not reach the signature: the same request sent without them signs identically.
    const clean = { ...appRequest, headers: appRequest.headers.slice(0, 3) };
    expect(await resign(clean, creds, { date })).toEqual(out);
  });

  it('adds X-Amz-Security-Token only for session credentials, and signs it', async () => {
    const { sessionToken: _, ...longTerm } = creds;
    const out = await resign(appRequest, longTerm, { date });
    expect(named(out, 'x-amz-security-token')).toEqual([]);
    expect(named(out, 'authorization')[0]).toContain('SignedHeaders=content-type;host;x-amz-date,');
  });

  it('adds x-amz-content-sha256 for S3, and keeps one the application sent', async () => {
    const put: HttpRequest = {
      method: 'PUT',
      target: '/my%20key',
      headers: [['Host', 'my-bucket.s3.eu-west-1.amazonaws.com']],
      body,
    };
    const out = await resign(put, creds, { date });
    expect(named(out, 'x-amz-content-sha256')).toEqual([createHash('sha256').update(body).digest('hex')]);
    expect(named(out, 'authorization')[0]).toContain(
      '/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,',
    );
    const unsigned = {
      ...put,
      headers: [...put.headers, ['x-amz-content-sha256', 'UNSIGNED-PAYLOAD'] as const],
    };
    expect(named(await resign(unsigned, creds, { date }), 'x-amz-content-sha256')).toEqual([
      'UNSIGNED-PAYLOAD',
    ]);
  });

  it('re-signs a presigned URL in its query, keeping its lifetime, and drops any Authorization', async () => {
    const request: HttpRequest = {
      method: 'GET',
      target:
        '/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=PLACEHOLDER%2F20240101%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=00',
      headers: [
        ['Host', 'sts.us-east-1.amazonaws.com'],
        ['Authorization', 'Bearer app'],
      ],
    };
    const out = await resignRequest(request, creds, { date });
    const params = new URLSearchParams(out.target.slice(2));
    expect(params.get('X-Amz-Credential')).toBe('ASIATEMPORARY/20150830/us-east-1/sts/aws4_request');
    expect(params.get('X-Amz-Expires')).toBe('300');
    expect(params.get('X-Amz-Security-Token')).toBe('real-session-token');
    expect(params.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/);
    expect(params.get('X-Amz-Signature')).not.toBe('00');
    expect(params.getAll('X-Amz-Signature')).toHaveLength(1);
    expect(params.get('Action')).toBe('GetCallerIdentity');
    expect(named(out.headers, 'authorization')).toEqual([]);
  });

  it('presigning puts the session token in the signed query, or after the signature when it is omitted', async () => {
    const request: HttpRequest = { method: 'GET', target: '/x?b=1', headers: [['Host', 'h']] };
    const token = { ...creds, sessionToken: 'a/b+c=' };
    const options = { credentials: token, region: 'us-east-1', service: 'sts', date, expiresIn: 60 };
    const signed = await presignTarget(request, options);
    const omitted = await presignTarget(request, { ...options, omitSessionToken: true });
    expect(signed.target).toContain('X-Amz-Security-Token=a%2Fb%2Bc%3D');
    expect(omitted.target).toContain('X-Amz-Security-Token=a%2Fb%2Bc%3D');
    // Signed in, the token changes the signature; added after, it does not.
    const { sessionToken: _, ...longTerm } = token;
    const bare = await presignTarget(request, { ...options, credentials: longTerm });
    expect(omitted.signature).toBe(bare.signature);
    expect(signed.signature).not.toBe(bare.signature);
  });

  it('keeps query parameters named like properties every object has, signed and on the wire as sent', async () => {
    const query = 'constructor=a&toString=b&__proto__=c&valueOf=d&hasOwnProperty=e';
    const names = ['constructor', 'toString', '__proto__', 'valueOf', 'hasOwnProperty'];
    // Presigned: the signed target carries each parameter once, with its own value.
    const presigned = `/?${query}&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=PLACEHOLDER%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=00`;
    const host = 'my-bucket.s3.us-east-1.amazonaws.com';
    const out = await resignRequest({ method: 'GET', target: presigned, headers: [['Host', host]] }, creds, {
      date,
    });
    const params = new URLSearchParams(out.target.slice(2));
    expect(names.map((n) => params.getAll(n))).toEqual([['a'], ['b'], ['c'], ['d'], ['e']]);
    expect(out.target).not.toContain('native');
    // Header-signed: the signature is the one AWS's signer computes for the query as sent.
    const signed = await signHeaders(
      { method: 'GET', target: `/?${query}`, headers: [['Host', host]] },
      { credentials: creds, region: 'us-east-1', service: 's3', date },
    );
    const reference = await new SignatureV4({
      credentials: creds,
      region: 'us-east-1',
      service: 's3',
      sha256: Hash.bind(null, 'sha256') as never,
      uriEscapePath: false,
    }).sign(
      {
        method: 'GET',
        protocol: 'https:',
        hostname: host,
        path: '/',
        query: Object.fromEntries(new URLSearchParams(query)),
        headers: { host },
        body: '',
      },
      { signingDate: date },
    );
    expect(signed.authorization).toBe(reference.headers.authorization);
  });

  it('signs headers named like properties every object has with the values sent', async () => {
    const host = 'sts.us-east-1.amazonaws.com';
    const sent: Array<[string, string]> = [
      ['Host', host],
      ['Constructor', 'a'],
      ['__proto__', 'b'],
      ['toString', 'c'],
    ];
    const signed = await signHeaders(
      { method: 'GET', target: '/', headers: sent },
      { credentials: creds, region: 'us-east-1', service: 'sts', date },
    );
    expect(signed.authorization).toContain('SignedHeaders=__proto__;constructor;host;tostring;x-amz-date;');
    const reference = await new SignatureV4({
      credentials: creds,
      region: 'us-east-1',
      service: 'sts',
      sha256: Hash.bind(null, 'sha256') as never,
      applyChecksum: false,
    }).sign(
      {
        method: 'GET',
        protocol: 'https:',
        hostname: host,
        path: '/',
        query: {},
        headers: Object.fromEntries(sent.map(([n, v]) => [n.toLowerCase(), v])),
        body: '',
      },
      { signingDate: date },
    );
    expect(signed.authorization).toBe(reference.headers.authorization);
  });

  it.each([
    ['sts.us-east-1.amazonaws.com', 'us-east-1', 'sts'],
    ['bedrock-agent-runtime.eu-central-1.amazonaws.com', 'eu-central-1', 'bedrock'],
    ['bedrock-runtime.us-west-2.amazonaws.com:443', 'us-west-2', 'bedrock'],
    ['dynamodb.eu-west-1.amazonaws.com', 'eu-west-1', 'dynamodb'],
    ['my-bucket.s3.eu-west-1.amazonaws.com', 'eu-west-1', 's3'],
    ['abc123.execute-api.ap-southeast-2.amazonaws.com', 'ap-southeast-2', 'execute-api'],
    ['sts.us-gov-west-1.amazonaws.com', 'us-gov-west-1', 'sts'],
    ['dynamodb.cn-north-1.amazonaws.com.cn', 'cn-north-1', 'dynamodb'],
    ['IAM.amazonaws.com', 'us-east-1', 'iam'],
    // Named like properties every object has: the name itself, never one of Object's members.
    ['constructor.us-east-1.amazonaws.com', 'us-east-1', 'constructor'],
    ['__proto__.eu-west-1.amazonaws.com', 'eu-west-1', '__proto__'],
  ])('derives the scope of %s', (host, region, service) => {
    expect(awsScopeFromHost(host)).toEqual({ region, service });
  });

  it.each([
    'api.github.com',
    'amazonaws.com',
    'sts.us-east-1.amazonaws.com.attacker.example',
    'a.b.amazonaws.com',
  ])('refuses to guess the scope of %s', (host) => {
    expect(() => awsScopeFromHost(host)).toThrow(SigV4Error);
    expect(() => awsScopeFromHost(host)).toThrow(
      `cannot derive the AWS region and service from host "${host}": expected <service>.<region>.amazonaws.com`,
    );
  });

  it('needs no derivation when region and service are given, and refuses a request without Host', async () => {
    const custom = { ...appRequest, headers: [['Host', 'vpce-1.example.internal'] as const] };
    await expect(resign(custom, creds, { date })).rejects.toThrow(/from host "vpce-1.example.internal"/);
    const out = await resign(custom, creds, { date, region: 'eu-central-1', service: 'bedrock' });
    expect(named(out, 'authorization')[0]).toContain('/eu-central-1/bedrock/aws4_request');
    await expect(
      resign({ ...appRequest, headers: [] }, creds, { date, region: 'r', service: 's' }),
    ).rejects.toThrow('the request has no Host header');
  });
});
