import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  SignJWT,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Authority, initAuthority } from '../../reconciler/identity/authority.ts';
import { JwtSvidError, verifyJwtSvid } from '../../reconciler/identity/jwt-svid.ts';
import { createOidcDiscoveryHandler } from '../../reconciler/identity/oidc-discovery.ts';
import { tempDir } from '../support/identity-helpers.ts';

const tmp = tempDir();
afterAll(tmp.cleanup);

/** Reserves a loopback port so the issuer URL (which must be known at CA init) can name it. */
async function freePort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

describe('JWT-SVIDs verified by jose through OIDC discovery on a real HTTP server', () => {
  let authority: Authority;
  let server: Server;
  let issuer: string;

  beforeAll(async () => {
    const port = await freePort();
    issuer = `http://127.0.0.1:${port}/oidc`;
    authority = await initAuthority({ trustDomain: 'example.org', dir: join(tmp.dir, 'ca'), issuer });
    const handle = createOidcDiscoveryHandler(authority.jwt);
    server = createServer((req, res) => {
      handle(req, res).then((handled) => {
        if (!handled) res.writeHead(404).end('not ours');
      });
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
  });
  afterAll(() => server.close());

  async function discover() {
    const res = await fetch(`${issuer}/.well-known/openid-configuration`, {
      signal: AbortSignal.timeout(5_000),
    });
    expect(res.status).toBe(200);
    return (await res.json()) as Record<string, unknown>;
  }

  it('serves the discovery document AWS STS and Vault expect, under the issuer path', async () => {
    const doc = await discover();
    expect(doc).toMatchObject({
      issuer,
      jwks_uri: `${issuer}/keys`,
      id_token_signing_alg_values_implemented: ['ES256'],
      id_token_signing_alg_values_supported: ['ES256'],
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
    });
    expect(new URL(doc.jwks_uri as string).protocol).toBe('http:');
  });

  it('mints a token that jose verifies with the JWKS URL read from the discovery document', async () => {
    const jwks = createRemoteJWKSet(new URL((await discover()).jwks_uri as string), {
      timeoutDuration: 5_000,
    });
    const token = await authority.jwt.mint({
      spiffeId: 'spiffe://example.org/ns/billing',
      audience: ['sts.amazonaws.com'],
      claims: { 'https://aws.amazon.com/tags': { principal_tags: { team: ['billing'] } } },
    });
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer,
      audience: 'sts.amazonaws.com',
      algorithms: ['ES256'],
    });
    expect(protectedHeader.alg).toBe('ES256');
    expect(protectedHeader.kid).toEqual(expect.any(String));
    expect(payload.sub).toBe('spiffe://example.org/ns/billing');
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(payload.jti).toEqual(expect.any(String));
    expect(payload['https://aws.amazon.com/tags']).toEqual({ principal_tags: { team: ['billing'] } });
    await expect(jwtVerify(token, jwks, { issuer, audience: 'vault' })).rejects.toBeInstanceOf(
      errors.JWTClaimValidationFailed,
    );
  });

  it('answers only its own paths and GET/HEAD', async () => {
    expect(
      (await fetch(`http://127.0.0.1:${new URL(issuer).port}/.well-known/openid-configuration`)).status,
    ).toBe(404);
    expect((await fetch(`${issuer}/keys`, { method: 'POST' })).status).toBe(405);
    const keys = (await (await fetch(`${issuer}/keys`)).json()) as { keys: Record<string, unknown>[] };
    expect(keys.keys.every((k) => k.kid && k.alg === 'ES256' && k.kty === 'EC' && !('d' in k))).toBe(true);
  });

  it('requires an audience, a SPIFFE ID of its trust domain, and refuses to override reserved claims', async () => {
    const mint = authority.jwt.mint.bind(authority.jwt);
    await expect(mint({ spiffeId: 'spiffe://example.org/a', audience: [] })).rejects.toThrow(
      /at least one non-empty audience/,
    );
    await expect(mint({ spiffeId: 'spiffe://other.org/a', audience: ['x'] })).rejects.toThrow(
      /outside trust domain/,
    );
    await expect(mint({ spiffeId: 'spiffe://example.org', audience: ['x'] })).rejects.toThrow(
      /non-root path/,
    );
    for (const claim of ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti'])
      await expect(
        mint({ spiffeId: 'spiffe://example.org/a', audience: ['x'], claims: { [claim]: 'evil' } }),
      ).rejects.toThrow(`reserved claim(s) ${claim}`);
  });

  it('honours a custom TTL and several audiences', async () => {
    const token = await authority.jwt.mint({
      spiffeId: 'spiffe://example.org/a',
      audience: ['a', 'b'],
      ttlSeconds: 60,
    });
    const jwks = createRemoteJWKSet(new URL(`${issuer}/keys`));
    const { payload } = await jwtVerify(token, jwks, { audience: 'b' });
    expect(payload.aud).toEqual(['a', 'b']);
    expect(payload.exp! - payload.iat!).toBe(60);
    expect(Object.keys(decodeProtectedHeader(token)).sort()).toEqual(['alg', 'kid', 'typ']);
  });
});

describe('JWT-SVID validation (x509-svid-rules.md section E)', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const jwks = createLocalJWKSet({
    keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256' }],
  });
  const now = new Date('2030-01-01T00:00:00Z');
  const iat = Math.floor(now.getTime() / 1000);

  function token(
    opts: { header?: Record<string, unknown>; claims?: Record<string, unknown>; drop?: string[] } = {},
  ) {
    const claims: Record<string, unknown> = {
      sub: 'spiffe://example.org/a',
      aud: 'vault',
      exp: iat + 300,
      iat,
      ...opts.claims,
    };
    for (const c of opts.drop ?? []) delete claims[c];
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: 'k1', ...opts.header })
      .sign(privateKey);
  }
  const check = async (t: string | Promise<string>, audience = 'vault') =>
    verifyJwtSvid(await t, jwks, { audience, trustDomain: 'example.org', now });

  it('accepts a well-formed JWT-SVID', async () => {
    await expect(check(token({ header: { typ: 'JWT' } }))).resolves.toMatchObject({
      spiffeId: 'spiffe://example.org/a',
    });
  });

  it('E1 rejects alg none, HMAC, other typ values and extra JOSE headers', async () => {
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const unsecured = `${b64({ alg: 'none' })}.${b64({ sub: 'spiffe://example.org/a', aud: 'vault', exp: iat + 60 })}.`;
    await expect(check(unsecured)).rejects.toThrow(JwtSvidError);
    const hmac = await new SignJWT({ sub: 'spiffe://example.org/a', aud: 'vault', exp: iat + 60 })
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(new TextEncoder().encode('a shared secret of enough length!'));
    await expect(check(hmac)).rejects.toThrow(/JWT-SVID rejected/);
    await expect(check(token({ header: { typ: 'at+jwt' } }))).rejects.toThrow(/typ must be JWT or JOSE/);
    await expect(check(token({ header: { jku: 'https://evil.example/keys' } }))).rejects.toThrow(
      /JOSE headers it must not: jku/,
    );
  });

  it('E2 requires sub to be a workload SPIFFE ID, aud to contain the audience, exp present and not past', async () => {
    await expect(check(token({ claims: { sub: 'alice' } }))).rejects.toThrow(/not a workload SPIFFE ID/);
    await expect(check(token({ claims: { sub: 'spiffe://other.org/a' } }))).rejects.toThrow(
      /outside trust domain/,
    );
    await expect(check(token(), 'aws')).rejects.toThrow(/aud/);
    await expect(check(token({ drop: ['aud'] }))).rejects.toThrow(/aud/);
    await expect(check(token({ drop: ['exp'] }))).rejects.toThrow(/exp/);
    await expect(check(token({ claims: { exp: iat - 120 } }))).rejects.toThrow(/exp/);
    // Within the 60 s leeway: accepted, and what the caller gets is the token's workload and its claims.
    await expect(check(token({ claims: { exp: iat - 30 } }))).resolves.toMatchObject({
      spiffeId: 'spiffe://example.org/a',
      claims: { sub: 'spiffe://example.org/a', aud: 'vault', exp: iat - 30 },
    });
    // One second past the leeway: refused.
    await expect(check(token({ claims: { exp: iat - 61 } }))).rejects.toThrow(
      /"exp" claim timestamp check failed/,
    );
  });

  it('E3 the SPIFFE bundle publishes jwt-svid keys with kid', async () => {
    const dir = join(tmp.dir, 'e3');
    const authority = await initAuthority({ trustDomain: 'example.org', dir });
    const jwt = (await authority.bundleJwks()).keys.filter((k) => k.use === 'jwt-svid');
    expect(jwt.length).toBeGreaterThan(0);
    for (const k of jwt) expect(k.kid).toEqual(expect.any(String));
    const minted = await authority.jwt.mint({ spiffeId: 'spiffe://example.org/a', audience: ['vault'] });
    const local = createLocalJWKSet(await authority.jwt.jwks());
    await expect(
      verifyJwtSvid(minted, local, { audience: 'vault', trustDomain: 'example.org' }),
    ).resolves.toMatchObject({
      spiffeId: 'spiffe://example.org/a',
    });
  });
});
