/**
 * X.509 structure: PEM, certificate and PKCS#10 parsing, certificate and CSR encoding. Node's crypto
 * signs and verifies; the DER is ours (./der.ts). No policy lives here: SVID rules are in x509-svid.ts.
 */
import {
  createHash,
  createPublicKey,
  generateKeyPair as generateKeyPairCb,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { promisify } from 'node:util';
import {
  bitString,
  bool,
  children,
  DerError,
  expectTag,
  explicit,
  type Node,
  nullValue,
  octetString,
  oid,
  readBitString,
  readBoolean,
  readOid,
  readOne,
  readSmallInteger,
  readTime,
  seq,
  set,
  smallInteger,
  TAG,
  time,
  tlv,
  unsignedInteger,
  utf8String,
} from './der.ts';

export const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  nameConstraints: '2.5.29.30',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  extensionRequest: '1.2.840.113549.1.9.14',
  countryName: '2.5.4.6',
  organizationName: '2.5.4.10',
  commonName: '2.5.4.3',
  ecdsaSha256: '1.2.840.10045.4.3.2',
  ecdsaSha384: '1.2.840.10045.4.3.3',
  ecdsaSha512: '1.2.840.10045.4.3.4',
  rsaSha256: '1.2.840.113549.1.1.11',
  rsaSha384: '1.2.840.113549.1.1.12',
  rsaSha512: '1.2.840.113549.1.1.13',
  ed25519: '1.3.101.112',
} as const;

/** Key usage bit positions (RFC 5280 4.2.1.3). */
export const KU = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

export type KeyType = 'ec-p256' | 'rsa-2048';
export const KEY_TYPES: readonly KeyType[] = ['ec-p256', 'rsa-2048'];

export class X509Error extends Error {}

// ---------------------------------------------------------------------------------------------------------
// PEM

export interface PemBlock {
  type: string;
  der: Buffer;
}

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

export function pemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(PEM_RE)) out.push({ type: m[1]!, der: Buffer.from(m[2]!, 'base64') });
  return out;
}

export function toPem(type: string, der: Buffer): string {
  const b64 = der.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${type}-----\n${lines.join('\n')}\n-----END ${type}-----\n`;
}

// ---------------------------------------------------------------------------------------------------------
// Certificate parsing

export interface ParsedCertificate {
  der: Buffer;
  tbs: Buffer;
  /** Lowercase hex of the serial's content octets. */
  serial: string;
  signatureAlgorithm: string;
  signature: Buffer;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  basicConstraints: { ca: boolean; pathLen: number | null } | null;
  keyUsage: { critical: boolean; bits: Set<number> } | null;
  extKeyUsage: string[] | null;
  uris: string[];
  dnsNames: string[];
  sanCritical: boolean;
  subjectKeyId: Buffer | null;
  authorityKeyId: Buffer | null;
  /** Critical extensions this code does not understand: RFC 5280 says such a certificate must be rejected. */
  unknownCritical: string[];
}

const KNOWN_EXTENSIONS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
  OID.nameConstraints,
]);

function readBits(node: Node): Set<number> {
  const { bytes } = readBitString(node);
  const bits = new Set<number>();
  for (let i = 0; i < bytes.length * 8; i++) if ((bytes[i >> 3]! >> (7 - (i & 7))) & 1) bits.add(i);
  return bits;
}

function readGeneralNames(node: Node): { uris: string[]; dnsNames: string[] } {
  expectTag(node, TAG.SEQUENCE, 'GeneralNames');
  const uris: string[] = [];
  const dnsNames: string[] = [];
  for (const name of children(node)) {
    if (name.tag === 0x86) uris.push(name.content.toString('latin1'));
    else if (name.tag === 0x82) dnsNames.push(name.content.toString('latin1'));
  }
  return { uris, dnsNames };
}

export function parseCertificate(der: Buffer): ParsedCertificate {
  try {
    return parseCertificateUnchecked(der);
  } catch (err) {
    // Peer input: a structure the reader did not expect surfaces as a TypeError/RangeError; same verdict.
    if (
      err instanceof DerError ||
      err instanceof X509Error ||
      err instanceof TypeError ||
      err instanceof RangeError
    )
      throw new X509Error(err.message);
    throw err;
  }
}

function parseCertificateUnchecked(der: Buffer): ParsedCertificate {
  const cert = expectTag(readOne(der), TAG.SEQUENCE, 'Certificate');
  const [tbsNode, algNode, sigNode] = children(cert);
  const tbsParts = children(expectTag(tbsNode, TAG.SEQUENCE, 'TBSCertificate'));
  let i = 0;
  if (tbsParts[0]?.tag === 0xa0) i++;
  const serialNode = expectTag(tbsParts[i++], TAG.INTEGER, 'serialNumber');
  i++; // the inner signature AlgorithmIdentifier; the outer one is what is verified
  const issuer = expectTag(tbsParts[i++], TAG.SEQUENCE, 'issuer');
  const validity = children(expectTag(tbsParts[i++], TAG.SEQUENCE, 'validity'));
  const subject = expectTag(tbsParts[i++], TAG.SEQUENCE, 'subject');
  const spki = expectTag(tbsParts[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo');
  if (!validity[0] || !validity[1]) throw new X509Error('certificate validity is incomplete');
  const parsed: ParsedCertificate = {
    der,
    tbs: tbsNode!.raw,
    serial: serialNode.content.toString('hex'),
    signatureAlgorithm: readOid(children(expectTag(algNode, TAG.SEQUENCE, 'signatureAlgorithm'))[0]!),
    signature: readBitString(expectTag(sigNode, TAG.BIT_STRING, 'signature')).bytes,
    issuer: issuer.raw,
    subject: subject.raw,
    notBefore: readTime(validity[0]),
    notAfter: readTime(validity[1]),
    spki: spki.raw,
    basicConstraints: null,
    keyUsage: null,
    extKeyUsage: null,
    uris: [],
    dnsNames: [],
    sanCritical: false,
    subjectKeyId: null,
    authorityKeyId: null,
    unknownCritical: [],
  };
  const extWrapper = tbsParts.slice(i).find((n) => n.tag === 0xa3);
  if (!extWrapper) return parsed;
  const extList = children(expectTag(children(extWrapper)[0], TAG.SEQUENCE, 'Extensions'));
  for (const ext of extList) {
    const parts = children(expectTag(ext, TAG.SEQUENCE, 'Extension'));
    const id = readOid(parts[0]!);
    const critical = parts.length === 3 ? readBoolean(parts[1]!) : false;
    const value = readOne(expectTag(parts[parts.length - 1], TAG.OCTET_STRING, 'extnValue').content);
    if (critical && !KNOWN_EXTENSIONS.has(id)) parsed.unknownCritical.push(id);
    switch (id) {
      case OID.basicConstraints: {
        const items = children(expectTag(value, TAG.SEQUENCE, 'BasicConstraints'));
        let k = 0;
        const ca = items[k]?.tag === TAG.BOOLEAN ? readBoolean(items[k++]!) : false;
        const pathLen = items[k]?.tag === TAG.INTEGER ? readSmallInteger(items[k]!) : null;
        parsed.basicConstraints = { ca, pathLen };
        break;
      }
      case OID.keyUsage:
        parsed.keyUsage = { critical, bits: readBits(value) };
        break;
      case OID.extKeyUsage:
        parsed.extKeyUsage = children(expectTag(value, TAG.SEQUENCE, 'ExtKeyUsage')).map(readOid);
        break;
      case OID.subjectAltName: {
        const names = readGeneralNames(value);
        parsed.uris = names.uris;
        parsed.dnsNames = names.dnsNames;
        parsed.sanCritical = critical;
        break;
      }
      case OID.subjectKeyIdentifier:
        parsed.subjectKeyId = expectTag(value, TAG.OCTET_STRING, 'SubjectKeyIdentifier').content;
        break;
      case OID.authorityKeyIdentifier: {
        const keyId = children(expectTag(value, TAG.SEQUENCE, 'AuthorityKeyIdentifier')).find(
          (n) => n.tag === 0x80,
        );
        parsed.authorityKeyId = keyId ? keyId.content : null;
        break;
      }
    }
  }
  return parsed;
}

export function parseCertificatesPem(pem: string): ParsedCertificate[] {
  return pemBlocks(pem)
    .filter((b) => b.type === 'CERTIFICATE')
    .map((b) => parseCertificate(b.der));
}

const HASH_BY_ALGORITHM: Record<string, string | null> = {
  [OID.ecdsaSha256]: 'sha256',
  [OID.ecdsaSha384]: 'sha384',
  [OID.ecdsaSha512]: 'sha512',
  [OID.rsaSha256]: 'sha256',
  [OID.rsaSha384]: 'sha384',
  [OID.rsaSha512]: 'sha512',
  [OID.ed25519]: null,
};

/** Verifies `signature` over `data` made with the key of `spki` under `algorithm`; false on any mismatch. */
export function verifySignature(algorithm: string, data: Buffer, signature: Buffer, key: KeyObject): boolean {
  const hash = HASH_BY_ALGORITHM[algorithm];
  if (hash === undefined) return false;
  try {
    return verify(hash, data, key, signature);
  } catch {
    return false;
  }
}

const publicKeyCache = new WeakMap<Buffer, KeyObject>();

export function publicKeyOf(cert: ParsedCertificate): KeyObject {
  let key = publicKeyCache.get(cert.spki);
  if (!key) {
    key = createPublicKey({ key: cert.spki, format: 'der', type: 'spki' });
    publicKeyCache.set(cert.spki, key);
  }
  return key;
}

/** Whether `issuer` signed `cert` (name chaining, key identifiers where both are present, signature). */
export function isIssuedBy(cert: ParsedCertificate, issuer: ParsedCertificate): boolean {
  if (!cert.issuer.equals(issuer.subject)) return false;
  if (cert.authorityKeyId && issuer.subjectKeyId && !cert.authorityKeyId.equals(issuer.subjectKeyId))
    return false;
  return verifySignature(cert.signatureAlgorithm, cert.tbs, cert.signature, publicKeyOf(issuer));
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

export type NameAttribute = ['C' | 'O' | 'CN', string];

export function encodeName(attributes: NameAttribute[]): Buffer {
  return seq(
    ...attributes.map(([kind, value]) => {
      const type = kind === 'C' ? OID.countryName : kind === 'O' ? OID.organizationName : OID.commonName;
      const encoded =
        kind === 'C' ? tlv(TAG.PRINTABLE_STRING, Buffer.from(value, 'ascii')) : utf8String(value);
      return set(seq(oid(type), encoded));
    }),
  );
}

export function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), bool(true), octetString(value)) : seq(oid(id), octetString(value));
}

/** A KEY USAGE BIT STRING with minimal (DER) trailing-bit trimming. */
export function keyUsageValue(bits: number[]): Buffer {
  const max = Math.max(...bits);
  const bytes = Buffer.alloc((max >> 3) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return bitString(bytes, 7 - (max & 7));
}

export function subjectAltNameValue(uris: string[], dnsNames: string[]): Buffer {
  return seq(
    ...uris.map((u) => tlv(0x86, Buffer.from(u, 'ascii'))),
    ...dnsNames.map((d) => tlv(0x82, Buffer.from(d, 'ascii'))),
  );
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Buffer): Buffer {
  const parts = children(readOne(spki));
  const { bytes } = readBitString(parts[1]!);
  return createHash('sha1').update(bytes).digest();
}

export function subjectKeyIdExtension(spki: Buffer): Buffer {
  return extension(OID.subjectKeyIdentifier, false, octetString(keyIdentifier(spki)));
}

/** The issuer's key identifier, whatever its length (upstream CAs do not all use SHA-1's 20 bytes). */
export function authorityKeyIdExtension(keyId: Buffer): Buffer {
  return extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, keyId)));
}

export interface Signer {
  key: KeyObject;
  /** The DER AlgorithmIdentifier placed in the TBS and the certificate. */
  algorithm: Buffer;
  hash: string | null;
}

export function signerFor(key: KeyObject): Signer {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { key, algorithm: seq(oid(OID.ecdsaSha256)), hash: 'sha256' };
    if (curve === 'secp384r1') return { key, algorithm: seq(oid(OID.ecdsaSha384)), hash: 'sha384' };
    throw new X509Error(`unsupported EC curve ${curve ?? '(unknown)'}: use P-256 or P-384`);
  }
  if (key.asymmetricKeyType === 'rsa')
    return { key, algorithm: seq(oid(OID.rsaSha256), nullValue()), hash: 'sha256' };
  throw new X509Error(`unsupported key type ${key.asymmetricKeyType ?? '(unknown)'}: use EC or RSA`);
}

export interface CertificateFields {
  serial: Buffer;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  extensions: Buffer[];
}

export function encodeTbs(fields: CertificateFields, signer: Signer): Buffer {
  return seq(
    explicit(0, smallInteger(2)),
    unsignedInteger(fields.serial),
    signer.algorithm,
    fields.issuer,
    seq(time(fields.notBefore), time(fields.notAfter)),
    fields.subject,
    fields.spki,
    explicit(3, seq(...fields.extensions)),
  );
}

export function signTbs(tbs: Buffer, signer: Signer): Buffer {
  return seq(tbs, signer.algorithm, bitString(sign(signer.hash, tbs, signer.key)));
}

// ---------------------------------------------------------------------------------------------------------
// Keys

export async function generateKey(keyType: KeyType): Promise<KeyObject> {
  const generate = promisify(generateKeyPairCb);
  const pair =
    keyType === 'rsa-2048'
      ? await generate('rsa', { modulusLength: 2048 })
      : await generate('ec', { namedCurve: 'prime256v1' });
  return pair.privateKey;
}

export function spkiOf(key: KeyObject): Buffer {
  return createPublicKey(key).export({ type: 'spki', format: 'der' });
}

export function privateKeyPem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}

// ---------------------------------------------------------------------------------------------------------
// PKCS#10

export interface ParsedCsr {
  spki: Buffer;
  publicKey: KeyObject;
  uris: string[];
  dnsNames: string[];
  signatureValid: boolean;
}

/** Parses a PKCS#10 request and checks its self-signature. Structural errors throw X509Error. */
export function parseCsr(der: Buffer): ParsedCsr {
  try {
    const parts = children(expectTag(readOne(der), TAG.SEQUENCE, 'CertificationRequest'));
    const info = expectTag(parts[0], TAG.SEQUENCE, 'CertificationRequestInfo');
    const algorithm = readOid(children(expectTag(parts[1], TAG.SEQUENCE, 'signatureAlgorithm'))[0]!);
    const signature = readBitString(expectTag(parts[2], TAG.BIT_STRING, 'signature')).bytes;
    const infoParts = children(info);
    const spki = expectTag(infoParts[2], TAG.SEQUENCE, 'subjectPKInfo').raw;
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    } catch {
      throw new X509Error('the public key in the CSR cannot be read');
    }
    const names = { uris: [] as string[], dnsNames: [] as string[] };
    const attributes = infoParts[3]?.tag === 0xa0 ? children(infoParts[3]) : [];
    for (const attribute of attributes) {
      const [type, values] = children(attribute);
      if (readOid(type!) !== OID.extensionRequest) continue;
      for (const ext of children(children(values!)[0]!)) {
        const extParts = children(ext);
        if (readOid(extParts[0]!) !== OID.subjectAltName) continue;
        const value = readOne(extParts[extParts.length - 1]!.content);
        Object.assign(names, readGeneralNames(value));
      }
    }
    return {
      spki,
      publicKey,
      ...names,
      signatureValid: verifySignature(algorithm, info.raw, signature, publicKey),
    };
  } catch (err) {
    if (err instanceof DerError || err instanceof TypeError || err instanceof RangeError)
      throw new X509Error(`the CSR is not a valid PKCS#10 request: ${err.message}`);
    throw err;
  }
}

/** A PKCS#10 request carrying a SPIFFE ID (and optional DNS names) in its SAN, signed with `key`. */
export function createCsr(key: KeyObject, uri: string, dnsNames: string[] = []): Buffer {
  const signer = signerFor(key);
  const san = extension(OID.subjectAltName, false, subjectAltNameValue([uri], dnsNames));
  const attribute = seq(oid(OID.extensionRequest), set(seq(san)));
  const info = seq(smallInteger(0), seq(), spkiOf(key), tlv(0xa0, attribute));
  return seq(info, signer.algorithm, bitString(sign(signer.hash, info, key)));
}
