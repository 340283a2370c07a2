import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type Authority,
  generateKeyAndCsr,
  initAuthority,
  openAuthority,
} from '../../reconciler/identity/authority.ts';
import { parseCertificatesPem, toPem } from '../../reconciler/identity/x509.ts';
import { svidRotationTime, verifyX509Svid } from '../../reconciler/identity/x509-svid.ts';
import { DAY, fakeClock, HOUR, openssl, tempDir } from '../support/identity-helpers.ts';

const tmp = tempDir();
afterAll(tmp.cleanup);

const T0 = new Date('2030-06-01T00:00:00Z').getTime();
const MINUTE = 60_000;

async function mint(authority: Authority, id: string) {
  const { csrPem } = await generateKeyAndCsr(id);
  return authority.signX509Svid({ csrPem });
}

function caSerials(authority: Authority): string[] {
  return authority.x509Authorities().map((c) => c.serial);
}

function verifiesAt(authority: Authority, chainPem: string, at: number): string {
  return verifyX509Svid(chainPem, new Map([['example.org', authority.x509Authorities()]]), {
    now: new Date(at),
  }).spiffeId;
}

/** openssl verify at a given time, against the bundle as it is published at that time. */
function opensslAt(authority: Authority, chainPem: string, at: number) {
  const leaf = toPem('CERTIFICATE', parseCertificatesPem(chainPem)[0]!.der);
  return openssl(
    ['verify', '-attime', String(Math.floor(at / 1000)), '-CAfile', 'b.pem', '-untrusted', 'c.pem', 'l.pem'],
    { 'b.pem': authority.bundlePem(), 'c.pem': chainPem, 'l.pem': leaf },
  );
}

describe('signing CA rotation with an overlapping bundle (SPIRE schedule, 24h CA)', () => {
  it('prepares, activates and retires; SVIDs of both CAs verify during the overlap', async () => {
    const clock = fakeClock(T0);
    const dir = join(tmp.dir, 'rotation');
    const authority = await initAuthority({ trustDomain: 'example.org', dir, now: clock.now });
    const [rootSerial, caA] = caSerials(authority);
    const keyFileOfA = join(
      dir,
      JSON.parse(readFileSync(join(dir, 'authority.json'), 'utf8')).signingCas[0].keyFile,
    );
    expect(existsSync(keyFileOfA)).toBe(true);

    // Before half-life nothing changes.
    clock.set(T0 + 11 * HOUR);
    await authority.rotate();
    expect(caSerials(authority)).toEqual([rootSerial, caA]);

    // Past notAfter − ttl/2 the next CA is prepared and published, but A still signs.
    clock.set(T0 + 12 * HOUR + MINUTE);
    await authority.rotate();
    const [, , caB] = caSerials(authority);
    expect(caB).toBeDefined();
    expect(authority.status().signingCas.map((s) => s.state)).toEqual(['active', 'prepared']);
    clock.set(T0 + 19 * HOUR + 30 * MINUTE);
    const fromA = await mint(authority, 'spiffe://example.org/a');
    expect(parseCertificatesPem(fromA.chainPem)[1]!.serial).toBe(caA);

    // Past notAfter − ttl/6 B signs; A stays in the bundle.
    clock.set(T0 + 20 * HOUR + MINUTE);
    await authority.rotate();
    expect(authority.status().signingCas.map((s) => s.state)).toEqual(['old', 'active']);
    const fromB = await mint(authority, 'spiffe://example.org/b');
    expect(parseCertificatesPem(fromB.chainPem)[1]!.serial).toBe(caB);
    expect(caSerials(authority)).toEqual([rootSerial, caA, caB]);

    const overlap = T0 + 20 * HOUR + 10 * MINUTE;
    expect(verifiesAt(authority, fromA.chainPem, overlap)).toBe('spiffe://example.org/a');
    expect(verifiesAt(authority, fromB.chainPem, overlap)).toBe('spiffe://example.org/b');
    expect(opensslAt(authority, fromA.chainPem, overlap).out).toBe('l.pem: OK\n');
    expect(opensslAt(authority, fromB.chainPem, overlap).out).toBe('l.pem: OK\n');

    // Another process opening the directory sees the same rotation.
    expect(caSerials(await openAuthority(dir, { now: clock.now }))).toEqual([rootSerial, caA, caB]);

    // Once A has expired (and with it every SVID it signed), it leaves the bundle.
    clock.set(T0 + 24 * HOUR + MINUTE);
    expect(caSerials(authority)).toEqual([rootSerial, caB]);
    await authority.rotate();
    // A is gone; B signs, and B's own successor is already prepared (B is past its half-life).
    expect(authority.status().signingCas.map((s) => s.state)).toEqual(['active', 'prepared']);
    expect(existsSync(keyFileOfA)).toBe(false);
    expect(authority.bundlePem()).not.toContain(
      toPem('CERTIFICATE', parseCertificatesPem(fromA.chainPem)[1]!.der),
    );
    expect(() => verifiesAt(authority, fromA.chainPem, clock.now().getTime())).toThrow(
      /expired|unknown authority/,
    );
    expect(
      verifiesAt(
        authority,
        (await mint(authority, 'spiffe://example.org/c')).chainPem,
        clock.now().getTime(),
      ),
    ).toBe('spiffe://example.org/c');
  });

  it('rotates on its own when signing finds a rotation due (no explicit rotate call)', async () => {
    const clock = fakeClock(T0);
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: join(tmp.dir, 'lazy'),
      now: clock.now,
    });
    clock.set(T0 + 20 * HOUR + MINUTE);
    const svid = await mint(authority, 'spiffe://example.org/a');
    // One step prepares and activates at once when both are due.
    expect(authority.status().signingCas.map((s) => s.state)).toEqual(['old', 'active']);
    const active = authority.x509Authorities().at(-1)!;
    expect(parseCertificatesPem(svid.chainPem)[1]!.serial).toBe(active.serial);
  });

  it('two processes rotating the same directory at once prepare one CA, not two', async () => {
    const clock = fakeClock(T0);
    const dir = join(tmp.dir, 'concurrent');
    await initAuthority({ trustDomain: 'example.org', dir, now: clock.now });
    const [a, b] = await Promise.all([
      openAuthority(dir, { now: clock.now }),
      openAuthority(dir, { now: clock.now }),
    ]);
    clock.set(T0 + 12 * HOUR + MINUTE);
    await Promise.all([a.rotate(), b.rotate()]);
    expect(a.status().signingCas.map((s) => s.state)).toEqual(['active', 'prepared']);
    expect(b.status().signingCas).toEqual(a.status().signingCas);
    expect(caSerials(a)).toEqual(caSerials(b));
  });

  it('recovers after downtime longer than the CA lifetime', async () => {
    const clock = fakeClock(T0);
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: join(tmp.dir, 'downtime'),
      now: clock.now,
    });
    clock.set(T0 + 3 * DAY);
    await authority.rotate();
    expect(authority.status().signingCas.map((s) => s.state)).toEqual(['active']);
    const svid = await mint(authority, 'spiffe://example.org/a');
    expect(verifiesAt(authority, svid.chainPem, clock.now().getTime())).toBe('spiffe://example.org/a');
  });
});

describe('root rotation', () => {
  it('publishes the next root early; chains under the old and the new root both verify in the overlap', async () => {
    const clock = fakeClock(T0);
    // A 60-day root: the next one is prepared 30 days before its end and takes over 7 days before.
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: join(tmp.dir, 'root'),
      now: clock.now,
      rootTtlSeconds: 60 * 86_400,
    });
    const [r1] = caSerials(authority);
    clock.set(T0 + 53 * DAY - 30 * MINUTE);
    await authority.rotate();
    expect(authority.status().roots.map((r) => r.state)).toEqual(['active', 'prepared']);
    clock.set(T0 + 53 * DAY + MINUTE);
    await authority.rotate();
    expect(authority.status().roots.map((r) => r.state)).toEqual(['old', 'active']);
    const r2 = authority.x509Authorities()[1]!.serial;

    // The signing CA made before the switch (under the old root) keeps signing until its own rotation.
    clock.set(T0 + 53 * DAY + 19 * HOUR);
    const underOld = await mint(authority, 'spiffe://example.org/old');
    // What a join token pins follows the root SVIDs are issued under, not the newest root in the bundle.
    expect(authority.signingAnchor().serial).toBe(r1);
    clock.set(T0 + 53 * DAY + 19 * HOUR + 45 * MINUTE);
    await authority.rotate();
    const underNew = await mint(authority, 'spiffe://example.org/new');
    expect(authority.signingAnchor().serial).toBe(r2);
    const rootOf = (chainPem: string) => {
      const ca = parseCertificatesPem(chainPem)[1]!;
      return authority.x509Authorities().find((c) => c.subject.equals(ca.issuer))!.serial;
    };
    expect([rootOf(underOld.chainPem), rootOf(underNew.chainPem)]).toEqual([r1, r2]);
    const overlap = T0 + 53 * DAY + 19 * HOUR + 50 * MINUTE;
    for (const svid of [underOld, underNew]) {
      expect(verifiesAt(authority, svid.chainPem, overlap)).toBe(svid.spiffeId);
      expect(opensslAt(authority, svid.chainPem, overlap).out).toBe('l.pem: OK\n');
    }

    clock.set(T0 + 60 * DAY + MINUTE);
    await authority.rotate();
    expect(authority.status().roots.map((r) => r.state)).toEqual(['active']);
    expect(caSerials(authority)).not.toContain(r1);
  });
});

describe('an imported upstream CA near its end', () => {
  it('caps signing CAs at the upstream notAfter without churning, then says what to do', async () => {
    const clock = fakeClock(T0);
    const src = join(tmp.dir, 'upstream-src');
    await initAuthority({
      trustDomain: 'corp.example',
      dir: src,
      now: clock.now,
      rootTtlSeconds: 2 * 86_400,
    });
    const root = JSON.parse(readFileSync(join(src, 'authority.json'), 'utf8')).roots[0];
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: join(tmp.dir, 'upstream'),
      now: clock.now,
      upstreamCertPem: root.certPem,
      upstreamKeyPem: readFileSync(join(src, root.keyFile), 'utf8'),
    });
    const upstreamEnd = Date.parse(authority.status().roots[0]!.notAfter.toISOString());
    clock.set(upstreamEnd - 10 * HOUR);
    await authority.rotate();
    const cas = authority.status().signingCas;
    expect(cas.at(-1)!.notAfter.getTime()).toBe(upstreamEnd);
    // The capped CA cannot be outlived by a successor: repeated steps add nothing.
    clock.set(upstreamEnd - HOUR);
    await authority.rotate();
    await authority.rotate();
    expect(authority.status().signingCas).toHaveLength(1);
    const svid = await mint(authority, 'spiffe://example.org/a');
    expect(svid.notAfter.getTime()).toBe(upstreamEnd);
    clock.set(upstreamEnd + MINUTE);
    await expect(authority.rotate()).rejects.toThrow(
      /upstream CA certificate has expired: initialise a new CA directory/,
    );
  });
});

describe('JWT signing key rotation', () => {
  it('keeps the old key in the JWKS until its tokens have expired', async () => {
    const clock = fakeClock(T0);
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: join(tmp.dir, 'jwt'),
      now: clock.now,
    });
    clock.set(T0 + 20 * HOUR - MINUTE);
    const oldToken = await authority.jwt.mint({ spiffeId: 'spiffe://example.org/a', audience: ['x'] });
    clock.set(T0 + 20 * HOUR + MINUTE);
    await authority.rotate();
    const newToken = await authority.jwt.mint({ spiffeId: 'spiffe://example.org/a', audience: ['x'] });
    expect(decodeProtectedHeader(newToken).kid).not.toBe(decodeProtectedHeader(oldToken).kid);

    const jwks = createLocalJWKSet(await authority.jwt.jwks());
    const currentDate = new Date(T0 + 20 * HOUR + 2 * MINUTE);
    // Both verify, each with its own key: the old key is still published for the tokens it signed.
    for (const [token, kid] of [
      [oldToken, decodeProtectedHeader(oldToken).kid],
      [newToken, decodeProtectedHeader(newToken).kid],
    ] as const) {
      const verified = await jwtVerify(token, jwks, { audience: 'x', currentDate });
      expect(verified.payload.sub).toBe('spiffe://example.org/a');
      expect(verified.protectedHeader.kid).toBe(kid);
    }

    clock.set(T0 + 24 * HOUR + MINUTE);
    await authority.rotate();
    const kids = (await authority.jwt.jwks()).keys.map((k) => k.kid);
    expect(kids).not.toContain(decodeProtectedHeader(oldToken).kid);
    expect(kids).toContain(decodeProtectedHeader(newToken).kid);
  });

  it('caps a token at its key end of life', async () => {
    const clock = fakeClock(T0);
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: join(tmp.dir, 'jwtcap'),
      now: clock.now,
    });
    const token = await authority.jwt.mint({
      spiffeId: 'spiffe://example.org/a',
      audience: ['x'],
      ttlSeconds: 7 * 86_400,
    });
    const { payload } = await jwtVerify(token, createLocalJWKSet(await authority.jwt.jwks()), {
      currentDate: clock.now(),
    });
    expect(payload.exp).toBe(
      Math.floor(Date.parse(authority.status().jwtKeys[0]!.notAfter.toISOString()) / 1000),
    );
  });
});

describe('SVID rotation helper', () => {
  const notBefore = new Date(T0);
  const notAfter = new Date(T0 + HOUR);
  it('rotates at half-life, ±10% of it', () => {
    expect(svidRotationTime(notBefore, notAfter, () => 0.5).getTime()).toBe(T0 + 30 * MINUTE);
    expect(svidRotationTime(notBefore, notAfter, () => 0).getTime()).toBe(T0 + 27 * MINUTE);
    expect(svidRotationTime(notBefore, notAfter, () => 1).getTime()).toBe(T0 + 33 * MINUTE);
  });
  it('spreads a fleet over the jitter window', () => {
    const times = Array.from({ length: 200 }, () => svidRotationTime(notBefore, notAfter).getTime());
    expect(Math.min(...times)).toBeGreaterThanOrEqual(T0 + 27 * MINUTE);
    expect(Math.max(...times)).toBeLessThanOrEqual(T0 + 33 * MINUTE);
    expect(new Set(times).size).toBeGreaterThan(150);
  });
});
