import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Authority,
  generateKeyAndCsr,
  initAuthority,
  openAuthority,
} from '../../reconciler/identity/authority.ts';
import { oid, seq, tlv } from '../../reconciler/identity/der.ts';
import {
  createCsr,
  encodeName,
  encodeTbs,
  extension,
  KU,
  keyUsageValue,
  OID,
  parseCertificatesPem,
  signerFor,
  signTbs,
  spkiOf,
  toPem,
} from '../../reconciler/identity/x509.ts';
import {
  parseBundlePem,
  verifyX509Svid,
  x509AuthoritiesFromSpiffeBundle,
} from '../../reconciler/identity/x509-svid.ts';
import { fakeClock, HOUR, openssl, tempDir } from '../support/identity-helpers.ts';
import { vectorPath } from '../support/shared.ts';

const tmp = tempDir();
afterAll(tmp.cleanup);

function bundlesOf(authority: Authority) {
  return new Map([[authority.trustDomain, authority.x509Authorities()]]);
}

/** `openssl verify` of a chain (leaf first) against the CA's bundle. */
function opensslVerify(authority: Authority, chainPem: string, extra: string[] = []) {
  const leafPem = toPem('CERTIFICATE', parseCertificatesPem(chainPem)[0]!.der);
  return openssl(['verify', ...extra, '-CAfile', 'bundle.pem', '-untrusted', 'chain.pem', 'leaf.pem'], {
    'bundle.pem': authority.bundlePem(),
    'chain.pem': chainPem,
    'leaf.pem': leafPem,
  });
}

describe.each(['ec-p256', 'rsa-2048'] as const)('a %s authority', (keyType) => {
  let authority: Authority;
  const dir = join(tmp.dir, keyType);

  beforeAll(async () => {
    authority = await initAuthority({ trustDomain: 'example.org', dir, keyType });
  });

  it('writes every private key 0600 and no key material into authority.json', () => {
    const keys = readdirSync(join(dir, 'keys'));
    expect(keys.length).toBe(3); // root, signing CA, JWT key
    for (const file of keys) expect(statSync(join(dir, 'keys', file)).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'authority.json'), 'utf8')).not.toMatch(/PRIVATE KEY/);
  });

  it.each(['ec-p256', 'rsa-2048'] as const)(
    'issues a %s SVID that openssl verifies, with the SVID extensions',
    async (leafType) => {
      const { csrPem } = await generateKeyAndCsr('spiffe://example.org/ns/web', leafType);
      const svid = await authority.signX509Svid({ csrPem, dnsNames: ['web.example.org'] });
      expect(svid.spiffeId).toBe('spiffe://example.org/ns/web');
      expect(svid.serial).toMatch(/^[4-7][0-9a-f]{31}$/);
      expect(opensslVerify(authority, svid.chainPem)).toEqual({ status: 0, out: 'leaf.pem: OK\n' });

      const text = openssl(['x509', '-in', 'leaf.pem', '-noout', '-text'], { 'leaf.pem': svid.certPem }).out;
      expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
      const usage = leafType === 'rsa-2048' ? 'Digital Signature, Key Encipherment' : 'Digital Signature';
      expect(text).toMatch(new RegExp(`X509v3 Key Usage: critical\\s+${usage}\\n`));
      expect(text).toMatch(
        /Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/,
      );
      expect(text).toMatch(
        /Subject Alternative Name:\s+URI:spiffe:\/\/example.org\/ns\/web, DNS:web.example.org\n/,
      );
      expect(text.match(/URI:/g)).toHaveLength(1);
      expect(text).toContain(
        `Signature Algorithm: ${keyType === 'rsa-2048' ? 'sha256WithRSAEncryption' : 'ecdsa-with-SHA256'}`,
      );

      const verified = verifyX509Svid(svid.chainPem, bundlesOf(authority));
      expect(verified.spiffeId).toBe('spiffe://example.org/ns/web');
    },
  );

  it('defaults the SVID TTL to 1h', async () => {
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/a');
    const before = Date.now();
    const svid = await authority.signX509Svid({ csrPem });
    const ttl = svid.notAfter.getTime() - before;
    expect(ttl).toBeGreaterThan(HOUR - 5_000);
    expect(ttl).toBeLessThanOrEqual(HOUR + 10_000);
  });

  it('publishes the root and signing CA in the bundle, both CA=true with keyCertSign, SPIFFE ID without path', () => {
    const text = openssl(['crl2pkcs7', '-nocrl', '-certfile', 'b.pem'], {
      'b.pem': authority.bundlePem(),
    }).out;
    const printed = openssl(['pkcs7', '-print_certs', '-text', '-noout', '-in', 'p7.pem'], {
      'p7.pem': text,
    }).out;
    expect(printed.match(/CA:TRUE/g)).toHaveLength(2);
    expect(printed.match(/Key Usage: critical\s+Certificate Sign, CRL Sign/g)).toHaveLength(2);
    expect(printed.match(/URI:spiffe:\/\/example.org\n/g)).toHaveLength(2);
  });
});

describe('CSR checks', () => {
  let authority: Authority;
  beforeAll(async () => {
    authority = await initAuthority({ trustDomain: 'example.org', dir: join(tmp.dir, 'csr') });
  });

  it('refuses a CSR for an ID outside the caller entitlement, with the hook reason', async () => {
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/payments');
    const entitled = new Set(['spiffe://example.org/web']);
    const authorize = (id: string) =>
      entitled.has(id) || `agent node-1 may not obtain ${id} (scope daemonGroup web)`;
    await expect(authority.signX509Svid({ csrPem, authorize })).rejects.toThrow(
      'not entitled to "spiffe://example.org/payments": agent node-1 may not obtain spiffe://example.org/payments (scope daemonGroup web)',
    );
    await expect(authority.signX509Svid({ csrPem, authorize: () => false })).rejects.toThrow(/not entitled/);
    const allowed = await generateKeyAndCsr('spiffe://example.org/web');
    await expect(authority.signX509Svid({ csrPem: allowed.csrPem, authorize })).resolves.toMatchObject({
      spiffeId: 'spiffe://example.org/web',
    });
  });

  it('refuses a CSR whose signature does not verify', async () => {
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/web');
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5]! ^= 0x01; // inside the signature BIT STRING
    await expect(authority.signX509Svid({ csrPem: toPem('CERTIFICATE REQUEST', der) })).rejects.toThrow(
      /CSR signature does not verify/,
    );
    // And the real tool agrees (OpenSSL 3.0 reports it in its output, with exit status 0).
    const check = openssl(['req', '-in', 'c.pem', '-verify', '-noout'], {
      'c.pem': toPem('CERTIFICATE REQUEST', der),
    });
    expect(check.out).toContain('self-signature verify failure');
  });

  it('refuses a CSR for another trust domain, the trust domain itself, or without a SPIFFE ID', async () => {
    const other = await generateKeyAndCsr('spiffe://other.org/web');
    await expect(authority.signX509Svid({ csrPem: other.csrPem })).rejects.toThrow(
      /outside trust domain "example.org"/,
    );
    const root = await generateKeyAndCsr('spiffe://example.org');
    await expect(authority.signX509Svid({ csrPem: root.csrPem })).rejects.toThrow(/needs a path/);
    const bad = await generateKeyAndCsr('spiffe://example.org/a/../b');
    await expect(authority.signX509Svid({ csrPem: bad.csrPem })).rejects.toThrow(/dot segments/);
    await expect(authority.signX509Svid({ csrPem: 'not a csr' })).rejects.toThrow(
      /no "CERTIFICATE REQUEST" PEM block/,
    );
  });

  it('refuses weak keys and invalid DNS names', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const weak = toPem('CERTIFICATE REQUEST', createCsr(privateKey, 'spiffe://example.org/web'));
    await expect(authority.signX509Svid({ csrPem: weak })).rejects.toThrow(/RSA ≥ 2048/);
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/web');
    await expect(authority.signX509Svid({ csrPem, dnsNames: ['bad name'] })).rejects.toThrow(
      /not a valid DNS name/,
    );
  });

  it('checks every SAN against the entitlement: DNS names only as the identity grants them', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    const withDns = toPem(
      'CERTIFICATE REQUEST',
      createCsr(key, 'spiffe://example.org/web', ['web.example.org', 'admin.example.org']),
    );
    // The CSR alone never grants a DNS name.
    await expect(authority.signX509Svid({ csrPem: withDns })).rejects.toThrow(
      'CSR asks for DNS SAN "web.example.org", which the identity\'s x509 settings do not grant (granted: none)',
    );
    await expect(authority.signX509Svid({ csrPem: withDns, dnsNames: ['web.example.org'] })).rejects.toThrow(
      /CSR asks for DNS SAN "admin.example.org".*\(granted: web.example.org\)/,
    );
    // The hook sees the DNS names too, and can refuse them.
    const seen: Array<readonly string[]> = [];
    const authorize = (_id: string, sans: { dnsNames: readonly string[] }) => {
      seen.push(sans.dnsNames);
      return !sans.dnsNames.includes('admin.example.org') || 'admin.example.org belongs to another team';
    };
    const granted = ['web.example.org', 'admin.example.org'];
    await expect(authority.signX509Svid({ csrPem: withDns, dnsNames: granted, authorize })).rejects.toThrow(
      'not entitled to "spiffe://example.org/web" with DNS names web.example.org, admin.example.org: admin.example.org belongs to another team',
    );
    expect(seen).toEqual([granted]);
    const svid = await authority.signX509Svid({ csrPem: withDns, dnsNames: granted });
    expect(parseCertificatesPem(svid.certPem)[0]!.dnsNames).toEqual(granted);
  });

  it('refuses a CSR asking for SAN types an SVID never carries (IP address, email)', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    const s = signerFor(key);
    const sanValue = seq(
      tlv(0x86, Buffer.from('spiffe://example.org/web')),
      tlv(0x87, Buffer.from([127, 0, 0, 1])),
      tlv(0x81, Buffer.from('ops@example.org')),
    );
    const attribute = seq(
      oid(OID.extensionRequest),
      tlv(0x31, seq(extension(OID.subjectAltName, false, sanValue))),
    );
    const info = seq(tlv(0x02, Buffer.from([0])), seq(), spkiOf(key), tlv(0xa0, attribute));
    const csrPem = toPem(
      'CERTIFICATE REQUEST',
      seq(info, s.algorithm, tlv(0x03, Buffer.concat([Buffer.from([0]), sign(s.hash, info, key)]))),
    );
    await expect(authority.signX509Svid({ csrPem })).rejects.toThrow(
      'CSR asks for subjectAltName types an X509-SVID never carries (IP address, email)',
    );
  });

  it('never issues beyond the signing CA notAfter', async () => {
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/web');
    const svid = await authority.signX509Svid({ csrPem, ttlSeconds: 10 * 24 * 3600 });
    const ca = parseCertificatesPem(svid.chainPem)[1]!;
    expect(svid.notAfter.getTime()).toBe(ca.notAfter.getTime());
  });

  it('uses random 16-byte positive serials', async () => {
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/web');
    const serials = new Set<string>();
    for (let i = 0; i < 50; i++) serials.add((await authority.signX509Svid({ csrPem })).serial);
    expect(serials.size).toBe(50);
    for (const s of serials) expect(Buffer.from(s, 'hex')[0]! & 0x80).toBe(0);
  });
});

describe('opening, upstream CAs and errors', () => {
  it('reopens a CA directory with the same bundle and keeps issuing', async () => {
    const dir = join(tmp.dir, 'reopen');
    const first = await initAuthority({ trustDomain: 'example.org', dir });
    const again = await openAuthority(dir);
    expect(again.bundlePem()).toBe(first.bundlePem());
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/x');
    const svid = await again.signX509Svid({ csrPem });
    expect(verifyX509Svid(svid.chainPem, bundlesOf(first)).spiffeId).toBe('spiffe://example.org/x');
    await expect(initAuthority({ trustDomain: 'example.org', dir })).rejects.toThrow(
      /a CA already lives here/,
    );
  });

  it('names the directory and the fix when there is no CA', async () => {
    await expect(openAuthority(join(tmp.dir, 'missing'))).rejects.toThrow(
      /no authority.json here: create the CA first with `riptides-cli ca init/,
    );
  });

  it('rejects a bad trust domain, key type and issuer', async () => {
    await expect(initAuthority({ trustDomain: 'Example.org', dir: join(tmp.dir, 'x1') })).rejects.toThrow(
      /trust domain characters/,
    );
    await expect(
      initAuthority({ trustDomain: 'a.org', dir: join(tmp.dir, 'x2'), keyType: 'dsa' as 'ec-p256' }),
    ).rejects.toThrow(/not supported/);
    await expect(
      initAuthority({ trustDomain: 'a.org', dir: join(tmp.dir, 'x3'), issuer: 'ftp://x' }),
    ).rejects.toThrow(/https URL/);
  });

  it('signs under an imported upstream CA: the bundle holds the upstream root, chains verify with openssl', async () => {
    const upstreamDir = join(tmp.dir, 'upstream-src');
    // Use a self-made CA as the "existing" upstream: its root cert and key files.
    await initAuthority({ trustDomain: 'corp.example', dir: upstreamDir });
    const state = JSON.parse(readFileSync(join(upstreamDir, 'authority.json'), 'utf8'));
    const root = state.roots[0];
    const upstreamCertPem = root.certPem as string;
    const upstreamKeyPem = readFileSync(join(upstreamDir, root.keyFile), 'utf8');
    const dir = join(tmp.dir, 'upstream');
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir,
      upstreamCertPem,
      upstreamKeyPem,
    });
    const bundle = parseBundlePem(authority.bundlePem());
    expect(bundle[0]!.der.equals(parseCertificatesPem(upstreamCertPem)[0]!.der)).toBe(true);
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/web');
    const svid = await authority.signX509Svid({ csrPem });
    expect(opensslVerify(authority, svid.chainPem).status).toBe(0);
    // Only the upstream root in the bundle is enough: the signing CA is in the presented chain.
    expect(verifyX509Svid(svid.chainPem, new Map([['example.org', [bundle[0]!]]])).spiffeId).toBe(
      'spiffe://example.org/web',
    );
    await expect(
      initAuthority({
        trustDomain: 'example.org',
        dir: join(tmp.dir, 'up2'),
        upstreamCertPem,
        upstreamKeyPem: generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
          .privateKey.export({ type: 'pkcs8', format: 'pem' })
          .toString(),
      }),
    ).rejects.toThrow(/upstream key does not match the upstream certificate/);
  });

  it('refuses an upstream CA whose pathLenConstraint is 0, saying why, and writes no CA', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const signer = signerFor(privateKey);
    const name = encodeName([['CN', 'Corp Issuing CA']]);
    const tbs = encodeTbs(
      {
        serial: randomBytes(16),
        issuer: name,
        subject: name,
        notBefore: new Date(Date.now() - HOUR),
        notAfter: new Date(Date.now() + 400 * 24 * HOUR),
        spki: spkiOf(privateKey),
        extensions: [
          extension(
            OID.basicConstraints,
            true,
            Buffer.from([0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00]),
          ),
          extension(OID.keyUsage, true, keyUsageValue([KU.keyCertSign, KU.cRLSign])),
        ],
      },
      signer,
    );
    const dir = join(tmp.dir, 'upstream-pathlen0');
    await expect(
      initAuthority({
        trustDomain: 'example.org',
        dir,
        upstreamCertPem: toPem('CERTIFICATE', signTbs(tbs, signer)),
        upstreamKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      }),
    ).rejects.toThrow(
      'upstream certificate has pathLenConstraint 0: it allows 0 CA certificate(s) below it, but the authority needs 1 (its own signing CA), so every SVID would fail path validation',
    );
    expect(existsSync(join(dir, 'authority.json'))).toBe(false);
  });

  it('chains to an upstream CA whose key identifier is not 20 bytes (as some PKIs make them)', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const signer = signerFor(privateKey);
    const name = encodeName([['CN', 'Corp Root']]);
    const ski = randomBytes(8);
    const tbs = encodeTbs(
      {
        serial: randomBytes(16),
        issuer: name,
        subject: name,
        notBefore: new Date(Date.now() - HOUR),
        notAfter: new Date(Date.now() + 400 * 24 * HOUR),
        spki: spkiOf(privateKey),
        extensions: [
          extension(OID.basicConstraints, true, Buffer.from([0x30, 0x03, 0x01, 0x01, 0xff])),
          extension(OID.keyUsage, true, keyUsageValue([KU.keyCertSign, KU.cRLSign])),
          extension(OID.subjectKeyIdentifier, false, Buffer.concat([Buffer.from([0x04, ski.length]), ski])),
        ],
      },
      signer,
    );
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: join(tmp.dir, 'upstream-ski'),
      upstreamCertPem: toPem('CERTIFICATE', signTbs(tbs, signer)),
      upstreamKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    });
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/web');
    const svid = await authority.signX509Svid({ csrPem });
    expect(opensslVerify(authority, svid.chainPem).out).toBe('leaf.pem: OK\n');
    expect(parseCertificatesPem(svid.chainPem)[1]!.authorityKeyId).toEqual(ski);
  });

  it('keeps key material out of error messages', async () => {
    const dir = join(tmp.dir, 'nokeys');
    const authority = await initAuthority({ trustDomain: 'example.org', dir });
    const keyPem = readFileSync(join(dir, 'keys', readdirSync(join(dir, 'keys'))[0]!), 'utf8');
    const broken = keyPem.replace(/\n[A-Za-z0-9+/]{10}/, '\n!!!!!!!!!!');
    const err = await initAuthority({
      trustDomain: 'x.org',
      dir: join(tmp.dir, 'nokeys2'),
      upstreamCertPem: authority.bundlePem(),
      upstreamKeyPem: broken,
    }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const body = keyPem.split('\n')[1]!;
    expect((err as Error).message).not.toContain(body.slice(0, 16));
    expect((err as Error).message).toMatch(/upstream key: not a readable PEM private key/);
  });

  it('lets a fixed clock drive issuance times', async () => {
    const clock = fakeClock('2030-01-01T00:00:00Z');
    const authority = await initAuthority({
      trustDomain: 'example.org',
      dir: join(tmp.dir, 'clock'),
      now: clock.now,
    });
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/web');
    const svid = await authority.signX509Svid({ csrPem, ttlSeconds: 600 });
    expect(svid.notAfter.toISOString()).toBe('2030-01-01T00:10:00.000Z');
    expect(() =>
      verifyX509Svid(svid.chainPem, bundlesOf(authority), { now: new Date('2030-01-01T00:10:01Z') }),
    ).toThrow(/has expired/);
  });
});

describe('SPIFFE bundle (JWKS form), X509-SVID section 6', () => {
  it('D1 publishes one x509-svid entry per CA with exactly one x5c and no kid; D2 consumes it back', async () => {
    const authority = await initAuthority({ trustDomain: 'example.org', dir: join(tmp.dir, 'jwks-bundle') });
    const bundle = await authority.bundleJwks();
    const x509 = bundle.keys.filter((k) => k.use === 'x509-svid');
    expect(x509).toHaveLength(authority.x509Authorities().length);
    for (const k of x509) {
      expect(k).not.toHaveProperty('kid');
      expect(k.x5c).toHaveLength(1);
    }
    const authorities = x509AuthoritiesFromSpiffeBundle(bundle);
    expect(authorities.map((c) => c.serial)).toEqual(authority.x509Authorities().map((c) => c.serial));
    const { csrPem } = await generateKeyAndCsr('spiffe://example.org/web');
    const svid = await authority.signX509Svid({ csrPem });
    expect(verifyX509Svid(svid.chainPem, new Map([['example.org', authorities]])).spiffeId).toBe(
      'spiffe://example.org/web',
    );
  });

  it('D2 ignores x509-svid entries without x5c and all but the first x5c value', () => {
    const [a, b] = parseCertificatesPem(
      readFileSync(vectorPath('x509svid-go-spiffe', 'good-leaf-and-intermediate.pem'), 'utf8'),
    );
    const der = (c: typeof a) => c!.der.toString('base64');
    const parsed = x509AuthoritiesFromSpiffeBundle({
      keys: [
        { use: 'x509-svid', kty: 'EC' },
        { use: 'x509-svid', kty: 'EC', x5c: [] },
        { use: 'x509-svid', kty: 'EC', x5c: [der(b), der(a)] },
        { use: 'jwt-svid', kty: 'EC', kid: 'k', x5c: [der(a)] },
      ],
    });
    expect(parsed.map((c) => c.serial)).toEqual([b!.serial]);
  });
});
