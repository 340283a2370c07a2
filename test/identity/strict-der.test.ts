/**
 * Peer-supplied DER is read strictly, as Go's crypto/x509 reads it: each case is a certificate (or DER
 * value) that a lenient reader accepts, built to break exactly one rule. The verifier's path search is
 * bounded by a signature-check budget, as Go's is.
 */
import { generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bitString,
  DerError,
  explicit,
  oid,
  readBoolean,
  readNode,
  readOid,
  readOne,
  readTime,
  seq,
  TAG,
  time,
  tlv,
  unsignedInteger,
} from '../../reconciler/identity/der.ts';
import {
  encodeName,
  extension,
  KU,
  keyUsageValue,
  OID,
  parseCertificate,
  parseCsr,
  signerFor,
  spkiOf,
  subjectAltNameValue,
  X509Error,
} from '../../reconciler/identity/x509.ts';
import { MAX_SIGNATURE_CHECKS } from '../../reconciler/identity/x509-svid.ts';
import { runTsBounded } from '../support/bounded.ts';

const key: KeyObject = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
const signer = signerFor(key);
const name = encodeName([['CN', 'strict']]);
const leafExts = [
  extension(OID.keyUsage, true, keyUsageValue([KU.digitalSignature])),
  extension(OID.subjectAltName, false, subjectAltNameValue(['spiffe://example.org/w'], [])),
];

interface Parts {
  version?: Buffer | null;
  serial?: Buffer;
  innerAlg?: Buffer;
  validity?: Buffer;
  extensions?: Buffer[];
  trailing?: Buffer[];
}

/** A signed certificate assembled field by field, so a test can replace exactly one field. */
function certificate(p: Parts = {}): Buffer {
  const tbs = seq(
    ...(p.version === null ? [] : [p.version ?? explicit(0, unsignedInteger(Buffer.from([2])))]),
    p.serial ?? unsignedInteger(randomBytes(16)),
    p.innerAlg ?? signer.algorithm,
    name,
    p.validity ?? seq(time(new Date('2030-01-01T00:00:00Z')), time(new Date('2032-01-01T00:00:00Z'))),
    name,
    spkiOf(key),
    explicit(3, seq(...(p.extensions ?? leafExts))),
    ...(p.trailing ?? []),
  );
  return seq(tbs, signer.algorithm, bitString(sign(signer.hash, tbs, key)));
}

function refusal(der: Buffer): string {
  try {
    parseCertificate(der);
  } catch (err) {
    expect(err).toBeInstanceOf(X509Error);
    return (err as Error).message;
  }
  return 'accepted';
}

describe('certificates are parsed strictly as DER', () => {
  it('accepts the well-formed certificate the cases start from', () => {
    expect(parseCertificate(certificate()).uris).toEqual(['spiffe://example.org/w']);
  });

  it.each<[string, Parts, RegExp]>([
    [
      'a BOOLEAN that is neither 0x00 nor 0xFF',
      {
        extensions: [
          seq(
            oid(OID.keyUsage),
            tlv(TAG.BOOLEAN, Buffer.from([0x01])),
            tlv(TAG.OCTET_STRING, keyUsageValue([0])),
          ),
        ],
      },
      /BOOLEAN must be one byte, 0x00 or 0xFF/,
    ],
    [
      'a truncated last OID arc',
      {
        extensions: [
          seq(tlv(TAG.OID, Buffer.from([0x55, 0x1d, 0x8f])), tlv(TAG.OCTET_STRING, keyUsageValue([0]))),
        ],
      },
      /truncated OBJECT IDENTIFIER arc/,
    ],
    [
      'a date that does not exist (30 February)',
      {
        validity: seq(
          tlv(TAG.UTC_TIME, Buffer.from('300230000000Z')),
          time(new Date('2032-01-01T00:00:00Z')),
        ),
      },
      /invalid certificate time "300230000000Z": a field is out of range/,
    ],
    [
      'hour 24',
      {
        validity: seq(
          time(new Date('2030-01-01T00:00:00Z')),
          tlv(TAG.UTC_TIME, Buffer.from('311231240000Z')),
        ),
      },
      /out of range/,
    ],
    [
      'a time without seconds',
      {
        validity: seq(tlv(TAG.UTC_TIME, Buffer.from('3001010000Z')), time(new Date('2032-01-01T00:00:00Z'))),
      },
      /invalid certificate time "3001010000Z"/,
    ],
    [
      'inner and outer signature algorithms that differ',
      { innerAlg: seq(oid(OID.ecdsaSha384)) },
      /inner and outer signature algorithm identifiers don't match/,
    ],
    [
      'a duplicate extension',
      {
        extensions: [
          ...leafExts,
          extension(OID.subjectAltName, false, subjectAltNameValue(['spiffe://example.org/evil'], [])),
        ],
      },
      /duplicate extension 2\.5\.29\.17/,
    ],
    [
      'a negative serial',
      { serial: tlv(TAG.INTEGER, Buffer.from([0x80, 0x01])) },
      /serialNumber is negative/,
    ],
    [
      'a serial with a redundant leading zero',
      { serial: tlv(TAG.INTEGER, Buffer.from([0x00, 0x01])) },
      /serialNumber is not a minimal INTEGER/,
    ],
    ['extensions in a version 1 certificate', { version: null }, /not version 3/],
    ['data after the extensions', { trailing: [tlv(0x84, Buffer.from([1]))] }, /unexpected field/],
    [
      'an empty subjectAltName',
      { extensions: [extension(OID.subjectAltName, false, seq())] },
      /subjectAltName is empty/,
    ],
  ])('refuses %s', (_what, parts, reason) => {
    expect(refusal(certificate(parts))).toMatch(reason);
  });

  it('refuses a long-form length with a leading zero byte', () => {
    const good = certificate();
    // The outer SEQUENCE: 30 82 HH LL → 30 83 00 HH LL (same length, one more byte).
    expect(good[1]).toBe(0x82);
    const bad = Buffer.concat([Buffer.from([0x30, 0x83, 0x00]), good.subarray(2)]);
    expect(refusal(bad)).toMatch(/non-minimal length \(leading zero byte\)/);
  });
});

describe('DER primitives', () => {
  it('reads minimal lengths and refuses the non-minimal ones', () => {
    expect(readNode(Buffer.from([0x04, 0x01, 0xaa])).content).toEqual(Buffer.from([0xaa]));
    expect(() => readNode(Buffer.from([0x04, 0x81, 0x01, 0xaa]))).toThrow(/non-minimal length/);
    expect(() => readNode(Buffer.from([0x04, 0x80, 0xaa, 0x00, 0x00]))).toThrow(/indefinite/);
  });

  it('reads OIDs with multi-byte first and later arcs, and refuses padded or cut ones', () => {
    expect(readOid(readOne(oid('1.2.840.113549.1.9.14')))).toBe('1.2.840.113549.1.9.14');
    expect(readOid(readOne(oid('2.999.3')))).toBe('2.999.3');
    expect(() => readOid(readOne(tlv(TAG.OID, Buffer.from([0x2a, 0x80, 0x01]))))).toThrow(DerError);
    expect(() => readOid(readOne(tlv(TAG.OID, Buffer.from([0x2a, 0x86]))))).toThrow(/truncated/);
  });

  it('reads BOOLEAN 0x00 and 0xFF only', () => {
    expect(readBoolean(readOne(Buffer.from([0x01, 0x01, 0xff])))).toBe(true);
    expect(readBoolean(readOne(Buffer.from([0x01, 0x01, 0x00])))).toBe(false);
    expect(() => readBoolean(readOne(Buffer.from([0x01, 0x01, 0x7f])))).toThrow(DerError);
    expect(() => readBoolean(readOne(Buffer.from([0x01, 0x02, 0x00, 0xff])))).toThrow(DerError);
  });

  it('reads both time forms, with leap days only in leap years', () => {
    const t = (tag: number, s: string) => readTime(readOne(tlv(tag, Buffer.from(s))));
    expect(t(TAG.UTC_TIME, '490101000000Z').toISOString()).toBe('2049-01-01T00:00:00.000Z');
    expect(t(TAG.UTC_TIME, '500101000000Z').toISOString()).toBe('1950-01-01T00:00:00.000Z');
    expect(t(TAG.GENERALIZED_TIME, '20520229120000Z').toISOString()).toBe('2052-02-29T12:00:00.000Z');
    expect(() => t(TAG.GENERALIZED_TIME, '20510229120000Z')).toThrow(/out of range/);
    expect(() => t(TAG.GENERALIZED_TIME, '20510101120000.5Z')).toThrow(DerError);
  });
});

describe('CSRs from agents are parsed strictly too', () => {
  it('refuses a CSR whose SAN extension appears twice', () => {
    const san = extension(OID.subjectAltName, false, subjectAltNameValue(['spiffe://example.org/a'], []));
    const attribute = seq(oid(OID.extensionRequest), tlv(TAG.SET, seq(san, san)));
    const info = seq(unsignedInteger(Buffer.from([0])), seq(), spkiOf(key), tlv(0xa0, attribute));
    const csr = seq(info, signer.algorithm, bitString(sign(signer.hash, info, key)));
    expect(() => parseCsr(csr)).toThrow(/requests extension 2\.5\.29\.17 twice/);
  });
});

describe('the chain verifier is bounded as Go crypto/x509 is', () => {
  it(`gives up after ${MAX_SIGNATURE_CHECKS} signature checks on ten self-issued CAs sharing one key`, async () => {
    const run = await runTsBounded(join(import.meta.dirname, 'children', 'many-self-issued.ts'), ['10'], {
      timeoutMs: 25_000,
    });
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({
      code: 'unknown_authority',
      message: `x509svid: could not verify leaf certificate for "spiffe://example.org/w": gave up building a path after ${MAX_SIGNATURE_CHECKS} signature checks (the peer presented too many candidate CA certificates)`,
    });
  });
});
