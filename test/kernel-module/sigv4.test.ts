import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  type AwsCredentials,
  awsScopeFromHost,
  type HttpRequest,
  presign,
  resignHeaders,
  SigV4Error,
  sign,
} from '../../kernel-module/sigv4.ts';
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

function serialise(
  requestLine: string,
  headers: ReadonlyArray<readonly [string, string]>,
  body: string,
): string {
  return `${requestLine}\n${headers.map(([n, v]) => `${n}:${v}\n`).join('')}\n${body}`;
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

describe('aws-c-auth SigV4 suite: header signing', () => {
  it('has all 38 cases', () => {
    expect(suite.cases).toHaveLength(38);
  });

  it.each(suite.cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const { requestLine, request } = parseRequest(c.request);
    const result = sign(request, optionsOf(c));
    expect(result.canonicalRequest).toBe(c.header.canonical_request);
    expect(result.stringToSign).toBe(c.header.string_to_sign);
    expect(result.signature).toBe(c.header.signature);
    expect(result.authorization).toBe(c.header.authorization);
    expect(serialise(requestLine, [...request.headers, ...result.headers], String(request.body))).toBe(
      c.header.signed_request,
    );
  });
});

describe('aws-c-auth SigV4 suite: query (presigned URL) signing', () => {
  it.each(suite.cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const { request } = parseRequest(c.request);
    const result = presign(request, { ...optionsOf(c), expiresIn: c.context.expiration_in_seconds });
    expect(result.canonicalRequest).toBe(c.query.canonical_request);
    expect(result.stringToSign).toBe(c.query.string_to_sign);
    expect(result.signature).toBe(c.query.signature);
    const canonicalQuery = c.query.canonical_request.split('\n')[2];
    expect(result.target).toContain(`?${canonicalQuery}&X-Amz-Signature=${c.query.signature}`);
  });
});

describe('resignHeaders (the data plane re-signing an application request)', () => {
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

  it("replaces the application's Authorization, X-Amz-Date and X-Amz-Security-Token", () => {
    const out = resignHeaders(appRequest, creds, { date });
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
    expect(resignHeaders(clean, creds, { date })).toEqual(out);
  });

  it('adds X-Amz-Security-Token only for session credentials, and signs it', () => {
    const withToken = sign(appRequest, {
      credentials: creds,
      region: 'eu-central-1',
      service: 'bedrock',
      date,
    });
    expect(withToken.headers.map(([n]) => n)).toEqual([
      'X-Amz-Security-Token',
      'X-Amz-Date',
      'Authorization',
    ]);
    const { sessionToken: _, ...longTerm } = creds;
    const out = resignHeaders(appRequest, longTerm, { date });
    expect(named(out, 'x-amz-security-token')).toEqual([]);
    expect(named(out, 'authorization')[0]).toContain('SignedHeaders=content-type;host;x-amz-date,');
  });

  it('adds x-amz-content-sha256 for S3, and keeps one the application sent', () => {
    const put: HttpRequest = {
      method: 'PUT',
      target: '/my%20key',
      headers: [['Host', 'my-bucket.s3.eu-west-1.amazonaws.com']],
      body,
    };
    const out = resignHeaders(put, creds, { date });
    expect(named(out, 'x-amz-content-sha256')).toEqual([createHash('sha256').update(body).digest('hex')]);
    expect(named(out, 'authorization')[0]).toContain(
      '/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,',
    );
    const unsigned = {
      ...put,
      headers: [...put.headers, ['x-amz-content-sha256', 'UNSIGNED-PAYLOAD'] as const],
    };
    expect(named(resignHeaders(unsigned, creds, { date }), 'x-amz-content-sha256')).toEqual([
      'UNSIGNED-PAYLOAD',
    ]);
  });

  it('signs S3 paths as sent and re-encodes other services’ paths', () => {
    const options = { credentials: creds, region: 'eu-west-1', date };
    const request: HttpRequest = { method: 'GET', target: '/a/./my%20key', headers: [['Host', 'h']] };
    expect(sign(request, { ...options, service: 's3' }).canonicalRequest.split('\n')[1]).toBe(
      '/a/./my%20key',
    );
    expect(sign(request, { ...options, service: 'sts' }).canonicalRequest.split('\n')[1]).toBe(
      '/a/my%2520key',
    );
  });

  it('presigning puts the session token in the signed query, or after the signature when it is omitted', () => {
    const request: HttpRequest = { method: 'GET', target: '/x?b=1', headers: [['Host', 'h']] };
    const token = { ...creds, sessionToken: 'a/b+c=' };
    const options = { credentials: token, region: 'us-east-1', service: 'sts', date, expiresIn: 60 };
    const signed = presign(request, options);
    expect(signed.canonicalRequest).toContain('&X-Amz-Security-Token=a%2Fb%2Bc%3D&');
    expect(signed.target).toBe(
      `/x?${signed.canonicalRequest.split('\n')[2]}&X-Amz-Signature=${signed.signature}`,
    );
    const omitted = presign(request, { ...options, omitSessionToken: true });
    expect(omitted.canonicalRequest).not.toContain('X-Amz-Security-Token');
    expect(omitted.target).toMatch(/&X-Amz-Signature=[0-9a-f]{64}&X-Amz-Security-Token=a%2Fb%2Bc%3D$/);
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

  it('needs no derivation when region and service are given, and refuses a request without Host', () => {
    const custom = { ...appRequest, headers: [['Host', 'vpce-1.example.internal'] as const] };
    expect(() => resignHeaders(custom, creds, { date })).toThrow(/from host "vpce-1.example.internal"/);
    const out = resignHeaders(custom, creds, { date, region: 'eu-central-1', service: 'bedrock' });
    expect(named(out, 'authorization')[0]).toContain('/eu-central-1/bedrock/aws4_request');
    expect(() => resignHeaders({ ...appRequest, headers: [] }, creds, { date })).toThrow(
      'the request has no Host header',
    );
  });
});
