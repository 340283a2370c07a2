import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { oid, seq } from '../../reconciler/identity/der.ts';
import {
  createCsr,
  encodeName,
  encodeTbs,
  extension,
  KU,
  keyUsageValue,
  OID,
  type ParsedCertificate,
  parseCertificate,
  parseCsr,
  signerFor,
  signTbs,
  spkiOf,
  subjectAltNameValue,
  subjectKeyIdExtension,
  X509Error,
} from '../../reconciler/identity/x509.ts';
import { verifyX509Svid, X509SvidError } from '../../reconciler/identity/x509-svid.ts';
import { openssl } from '../support/identity-helpers.ts';

const NOW = new Date('2031-01-01T00:00:00Z');
const key = (): KeyObject => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;

interface Spec {
  subject?: string;
  uris?: string[];
  sanCritical?: boolean;
  ca?: boolean | null;
  pathLen?: number;
  usage?: number[] | null;
  eku?: string[] | null;
  extra?: Buffer[];
}

/** Builds a certificate with exactly the extensions a rule needs, signed by `issuer` (or itself). */
function cert(spec: Spec, subjectKey: KeyObject, issuer?: { cert: ParsedCertificate; key: KeyObject }) {
  const spki = spkiOf(subjectKey);
  const name = encodeName(spec.subject === '' ? [] : [['CN', spec.subject ?? 'test']]);
  const exts: Buffer[] = [];
  if (spec.ca !== null) {
    const ca = spec.ca ?? false;
    const body = ca ? Buffer.from([0x01, 0x01, 0xff]) : Buffer.alloc(0);
    const pathLen = spec.pathLen === undefined ? Buffer.alloc(0) : Buffer.from([0x02, 0x01, spec.pathLen]);
    exts.push(
      extension(
        OID.basicConstraints,
        true,
        Buffer.concat([Buffer.from([0x30, body.length + pathLen.length]), body, pathLen]),
      ),
    );
  }
  const usage =
    spec.usage === undefined ? (spec.ca ? [KU.keyCertSign, KU.cRLSign] : [KU.digitalSignature]) : spec.usage;
  if (usage) exts.push(extension(OID.keyUsage, true, keyUsageValue(usage)));
  const eku = spec.eku === undefined ? (spec.ca ? null : [OID.serverAuth, OID.clientAuth]) : spec.eku;
  if (eku) exts.push(extension(OID.extKeyUsage, false, seq(...eku.map((o) => oid(o)))));
  if (spec.uris?.length)
    exts.push(extension(OID.subjectAltName, spec.sanCritical ?? false, subjectAltNameValue(spec.uris, [])));
  exts.push(subjectKeyIdExtension(spki));
  exts.push(...(spec.extra ?? []));
  const signer = signerFor(issuer?.key ?? subjectKey);
  const tbs = encodeTbs(
    {
      serial: randomBytes(16),
      issuer: issuer?.cert.subject ?? name,
      subject: name,
      notBefore: new Date('2030-01-01T00:00:00Z'),
      notAfter: new Date('2032-01-01T00:00:00Z'),
      spki,
      extensions: exts,
    },
    signer,
  );
  return parseCertificate(signTbs(tbs, signer));
}

const rootKey = key();
const root = cert({ subject: 'root', ca: true, uris: ['spiffe://example.org'] }, rootKey);
const interKey = key();
const inter = cert({ subject: 'inter', ca: true, pathLen: 0, uris: ['spiffe://example.org'] }, interKey, {
  cert: root,
  key: rootKey,
});
const bundles = new Map([['example.org', [root]]]);

function leaf(spec: Spec) {
  return cert({ uris: ['spiffe://example.org/w'], ...spec }, key(), { cert: inter, key: interKey });
}

function code(chain: ParsedCertificate[], b = bundles): string {
  try {
    verifyX509Svid(chain, b, { now: NOW });
    return 'ok';
  } catch (err) {
    if (err instanceof X509SvidError) return err.code;
    throw err;
  }
}

describe('X509-SVID verification rules (x509-svid-rules.md), on certificates built for each rule', () => {
  it('accepts a well-formed leaf + intermediate, and openssl agrees at the same time', () => {
    const good = leaf({});
    expect(code([good, inter])).toBe('ok');
    const pem = (c: ParsedCertificate) =>
      `-----BEGIN CERTIFICATE-----\n${c.der.toString('base64')}\n-----END CERTIFICATE-----\n`;
    const at = String(Math.floor(NOW.getTime() / 1000));
    const r = openssl(['verify', '-attime', at, '-CAfile', 'r.pem', '-untrusted', 'i.pem', 'l.pem'], {
      'r.pem': pem(root),
      'i.pem': pem(inter),
      'l.pem': pem(good),
    });
    expect(r.out).toBe('l.pem: OK\n');
  });

  it('accepts a leaf alone when its signing CA is in the bundle', () => {
    expect(code([leaf({})], new Map([['example.org', [root, inter]]]))).toBe('ok');
  });

  it.each<[string, Spec, string]>([
    ['A1 no URI SAN', { uris: [] }, 'no_uri_san'],
    ['A2 two URI SANs', { uris: ['spiffe://example.org/a', 'spiffe://example.org/b'] }, 'multiple_uri_san'],
    ['A4 scheme other than spiffe', { uris: ['https://example.org/a'] }, 'bad_spiffe_id'],
    ['A4 malformed ID', { uris: ['spiffe://example.org/a//b'] }, 'bad_spiffe_id'],
    ['A5 root path on a leaf', { uris: ['spiffe://example.org'] }, 'leaf_root_path'],
    ['A6 empty subject without critical SAN', { subject: '' }, 'san_not_critical'],
    ['B1 leaf with CA=true', { ca: true, usage: [KU.digitalSignature] }, 'leaf_ca'],
    ['B3 key usage missing', { usage: null }, 'leaf_no_digital_signature'],
    ['B4 no digitalSignature', { usage: [KU.keyEncipherment] }, 'leaf_no_digital_signature'],
    ['B4 keyCertSign on a leaf', { usage: [KU.digitalSignature, KU.keyCertSign] }, 'leaf_key_cert_sign'],
    ['B4 cRLSign on a leaf', { usage: [KU.digitalSignature, KU.cRLSign] }, 'leaf_crl_sign'],
    ['B5 EKU without clientAuth', { eku: [OID.serverAuth] }, 'leaf_eku'],
    [
      'RFC 5280 unknown critical extension',
      { extra: [extension('1.2.3.4', true, Buffer.from([0x05, 0x00]))] },
      'unknown_critical_extension',
    ],
  ])('%s', (_rule, spec, expected) => {
    expect(code([leaf(spec), inter])).toBe(expected);
  });

  it('A6 accepts an empty subject when the SAN is critical', () => {
    expect(code([leaf({ subject: '', sanCritical: true }), inter])).toBe('ok');
  });

  it('B7 never accepts a CA certificate as the peer', () => {
    expect(code([inter])).toBe('leaf_root_path');
    const caWithWorkloadId = cert({ ca: true, uris: ['spiffe://example.org/w'] }, key(), {
      cert: inter,
      key: interKey,
    });
    expect(code([caWithWorkloadId, inter])).toBe('leaf_ca');
  });

  it('B2 rejects an intermediate without CA=true or without keyCertSign', () => {
    const k = key();
    const notCa = cert({ subject: 'i2', ca: false, usage: [KU.keyCertSign] }, k, {
      cert: root,
      key: rootKey,
    });
    const l1 = cert({ uris: ['spiffe://example.org/w'] }, key(), { cert: notCa, key: k });
    expect(code([l1, notCa])).toBe('signing_not_ca');
    const k2 = key();
    const noSign = cert({ subject: 'i3', ca: true, usage: [KU.cRLSign] }, k2, { cert: root, key: rootKey });
    const l2 = cert({ uris: ['spiffe://example.org/w'] }, key(), { cert: noSign, key: k2 });
    expect(code([l2, noSign])).toBe('signing_no_key_cert_sign');
  });

  it('B6 rejects a signing certificate whose SPIFFE ID has a path', () => {
    const k = key();
    const pathCa = cert({ subject: 'i4', ca: true, uris: ['spiffe://example.org/ca'] }, k, {
      cert: root,
      key: rootKey,
    });
    expect(code([cert({ uris: ['spiffe://example.org/w'] }, key(), { cert: pathCa, key: k }), pathCa])).toBe(
      'signing_id_path',
    );
  });

  it('enforces pathLenConstraint', () => {
    const k = key();
    const below = cert({ subject: 'i5', ca: true }, k, { cert: inter, key: interKey });
    expect(
      code([cert({ uris: ['spiffe://example.org/w'] }, key(), { cert: below, key: k }), below, inter]),
    ).toBe('path_length');
  });

  it('C1 rejects a forged signature and a chain that does not reach the bundle', () => {
    const good = leaf({});
    const forged = parseCertificate(Buffer.from(good.der));
    forged.signature[forged.signature.length - 1]! ^= 1;
    expect(code([forged, inter])).toBe('unknown_authority');
    expect(code([good])).toBe('unknown_authority');
    expect(code([])).toBe('no_certificates');
  });
});

describe('malformed peer input', () => {
  /** Deterministic PRNG so a failure reproduces. */
  function prng(seed: number) {
    return () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x80000000;
    };
  }

  it.each([
    ['certificate', leaf({}).der, parseCertificate],
    ['CSR', createCsr(key(), 'spiffe://example.org/w'), parseCsr],
  ] as const)(
    'a mutated or truncated %s is rejected with X509Error, never another exception',
    (_kind, der, parse) => {
      const random = prng(42);
      let rejected = 0;
      for (let i = 0; i < 3000; i++) {
        const m = Buffer.from(der);
        for (let k = 0; k <= i % 3; k++) m[Math.floor(random() * m.length)] = Math.floor(random() * 256);
        const input = i % 5 === 0 ? m.subarray(0, Math.floor(random() * m.length)) : m;
        try {
          parse(input);
        } catch (err) {
          expect(err).toBeInstanceOf(X509Error);
          rejected++;
        }
      }
      expect(rejected).toBeGreaterThan(500);
    },
  );
});
