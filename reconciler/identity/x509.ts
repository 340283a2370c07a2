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
  childrenCount,
  DerError,
  expectTag,
  explicit,
  type Node,
  nullValue,
  octetString,
  oid,
  readBitString,
  readBoolean,
  readIntegerBytes,
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

/** IA5String content of a GeneralName: ASCII only, as RFC 5280 requires and Go checks. */
function ia5(node: Node, what: string): string {
  for (const byte of node.content)
    if (byte > 0x7e || byte < 0x20) throw new X509Error(`${what} holds a byte that is not printable ASCII`);
  return node.content.toString('latin1');
}

function readGeneralNames(node: Node): { uris: string[]; dnsNames: string[]; others: number[] } {
  expectTag(node, TAG.SEQUENCE, 'GeneralNames');
  const uris: string[] = [];
  const dnsNames: string[] = [];
  const others: number[] = [];
  const names = children(node);
  if (names.length === 0) throw new X509Error('subjectAltName is empty');
  for (const name of names) {
    if (name.tag === 0x86) uris.push(ia5(name, 'a URI SAN'));
    else if (name.tag === 0x82) dnsNames.push(ia5(name, 'a DNS SAN'));
    else if ((name.tag & 0xc0) !== 0x80)
      throw new X509Error('subjectAltName holds a name that is not context-tagged');
    else others.push(name.tag & 0x1f);
  }
  return { uris, dnsNames, others };
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

/**
 * RFC 5280 §4.1, read strictly as DER the way Go's crypto/x509 does: exact element counts, a minimal
 * non-negative serial, the inner signature algorithm equal to the outer one, a validity of two well-formed
 * times, extensions only in a v3 certificate and never twice, and nothing after the last field.
 */
function parseCertificateUnchecked(der: Buffer): ParsedCertificate {
  const cert = expectTag(readOne(der), TAG.SEQUENCE, 'Certificate');
  const [tbsNode, algNode, sigNode] = childrenCount(cert, 3, 3, 'Certificate');
  const tbsParts = children(expectTag(tbsNode, TAG.SEQUENCE, 'TBSCertificate'));
  let i = 0;
  let version = 0;
  if (tbsParts[0]?.tag === 0xa0) {
    version = readSmallInteger(childrenCount(tbsParts[i++]!, 1, 1, 'version')[0]!);
    if (version < 0 || version > 2) throw new X509Error(`unknown certificate version ${version + 1}`);
  }
  const serialNode = expectTag(tbsParts[i++], TAG.INTEGER, 'serialNumber');
  const serial = readIntegerBytes(serialNode, 'serialNumber');
  const innerAlg = expectTag(tbsParts[i++], TAG.SEQUENCE, 'signature');
  const outerAlg = expectTag(algNode, TAG.SEQUENCE, 'signatureAlgorithm');
  if (!innerAlg.raw.equals(outerAlg.raw))
    throw new X509Error("inner and outer signature algorithm identifiers don't match");
  const issuer = expectTag(tbsParts[i++], TAG.SEQUENCE, 'issuer');
  const validity = childrenCount(expectTag(tbsParts[i++], TAG.SEQUENCE, 'validity'), 2, 2, 'validity');
  const subject = expectTag(tbsParts[i++], TAG.SEQUENCE, 'subject');
  const spki = expectTag(tbsParts[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo');
  const parsed: ParsedCertificate = {
    der,
    tbs: tbsNode!.raw,
    serial: serial.toString('hex'),
    signatureAlgorithm: readOid(childrenCount(outerAlg, 1, 2, 'signatureAlgorithm')[0]!),
    signature: readBitString(expectTag(sigNode, TAG.BIT_STRING, 'signature')).bytes,
    issuer: issuer.raw,
    subject: subject.raw,
    notBefore: readTime(validity[0]!),
    notAfter: readTime(validity[1]!),
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
  // Optional issuerUniqueID [1], subjectUniqueID [2], extensions [3], in that order, and nothing else.
  let extWrapper: Node | undefined;
  let lastTag = 0;
  for (const node of tbsParts.slice(i)) {
    const n = node.tag & 0x1f;
    if ((node.tag & 0xc0) !== 0x80 || n < 1 || n > 3 || n <= lastTag)
      throw new X509Error('unexpected field after subjectPublicKeyInfo');
    lastTag = n;
    if (n === 3) extWrapper = node;
  }
  if (!extWrapper) return parsed;
  if (version !== 2) throw new X509Error('extensions in a certificate that is not version 3');
  const extList = children(
    expectTag(childrenCount(extWrapper, 1, 1, 'extensions')[0], TAG.SEQUENCE, 'Extensions'),
  );
  if (extList.length === 0) throw new X509Error('empty extensions');
  const seen = new Set<string>();
  for (const ext of extList) {
    const parts = childrenCount(expectTag(ext, TAG.SEQUENCE, 'Extension'), 2, 3, 'Extension');
    const id = readOid(parts[0]!);
    if (seen.has(id)) throw new X509Error(`certificate contains duplicate extension ${id}`);
    seen.add(id);
    const critical = parts.length === 3 ? readBoolean(parts[1]!) : false;
    const value = readOne(expectTag(parts[parts.length - 1], TAG.OCTET_STRING, 'extnValue').content);
    if (critical && !KNOWN_EXTENSIONS.has(id)) parsed.unknownCritical.push(id);
    switch (id) {
      case OID.basicConstraints: {
        const items = childrenCount(
          expectTag(value, TAG.SEQUENCE, 'BasicConstraints'),
          0,
          2,
          'BasicConstraints',
        );
        let k = 0;
        const ca = items[k]?.tag === TAG.BOOLEAN ? readBoolean(items[k++]!) : false;
        const pathLen = items[k]?.tag === TAG.INTEGER ? readSmallInteger(items[k++]!) : null;
        if (k !== items.length) throw new X509Error('BasicConstraints holds an unexpected element');
        if (pathLen !== null && pathLen < 0)
          throw new X509Error('BasicConstraints pathLenConstraint is negative');
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

/** Whether `issuer` may have issued `cert`: name chaining, and key identifiers where both are present. */
export function namesIssuer(cert: ParsedCertificate, issuer: ParsedCertificate): boolean {
  if (!cert.issuer.equals(issuer.subject)) return false;
  return !(cert.authorityKeyId && issuer.subjectKeyId && !cert.authorityKeyId.equals(issuer.subjectKeyId));
}

/**
 * Whether `issuer` signed `cert` (namesIssuer, then the signature). Unbudgeted: for certificates of our own
 * (the bundle); peer chains go through x509-svid.ts, which caps the signature checks per verification.
 */
export function isIssuedBy(cert: ParsedCertificate, issuer: ParsedCertificate): boolean {
  return (
    namesIssuer(cert, issuer) &&
    verifySignature(cert.signatureAlgorithm, cert.tbs, cert.signature, publicKeyOf(issuer))
  );
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
  /** Context tags of the other SAN types requested (1 email, 7 IP address, …). */
  otherSans: number[];
  signatureValid: boolean;
}

/** Parses a PKCS#10 request (RFC 2986) strictly as DER and checks its self-signature. Structural errors throw X509Error. */
export function parseCsr(der: Buffer): ParsedCsr {
  try {
    const parts = childrenCount(
      expectTag(readOne(der), TAG.SEQUENCE, 'CertificationRequest'),
      3,
      3,
      'CertificationRequest',
    );
    const info = expectTag(parts[0], TAG.SEQUENCE, 'CertificationRequestInfo');
    const algorithm = readOid(
      childrenCount(expectTag(parts[1], TAG.SEQUENCE, 'signatureAlgorithm'), 1, 2, 'signatureAlgorithm')[0]!,
    );
    const signature = readBitString(expectTag(parts[2], TAG.BIT_STRING, 'signature')).bytes;
    const infoParts = childrenCount(info, 3, 4, 'CertificationRequestInfo');
    if (readSmallInteger(infoParts[0]!) !== 0) throw new X509Error('unknown CSR version');
    expectTag(infoParts[1], TAG.SEQUENCE, 'subject');
    const spki = expectTag(infoParts[2], TAG.SEQUENCE, 'subjectPKInfo').raw;
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    } catch {
      throw new X509Error('the public key in the CSR cannot be read');
    }
    const names = { uris: [] as string[], dnsNames: [] as string[], others: [] as number[] };
    if (infoParts[3] && infoParts[3].tag !== 0xa0) throw new X509Error('CSR attributes are not [0]-tagged');
    let sawSan = false;
    for (const attribute of infoParts[3] ? children(infoParts[3]) : []) {
      const [type, values] = childrenCount(
        expectTag(attribute, TAG.SEQUENCE, 'Attribute'),
        2,
        2,
        'Attribute',
      );
      if (readOid(type!) !== OID.extensionRequest) continue;
      const requested = childrenCount(
        expectTag(values, TAG.SET, 'extensionRequest values'),
        1,
        1,
        'extensionRequest',
      );
      const seen = new Set<string>();
      for (const ext of children(expectTag(requested[0], TAG.SEQUENCE, 'Extensions'))) {
        const extParts = childrenCount(expectTag(ext, TAG.SEQUENCE, 'Extension'), 2, 3, 'Extension');
        const id = readOid(extParts[0]!);
        if (seen.has(id)) throw new X509Error(`the CSR requests extension ${id} twice`);
        seen.add(id);
        if (extParts.length === 3) readBoolean(extParts[1]!);
        if (id !== OID.subjectAltName) continue;
        if (sawSan) throw new X509Error('the CSR requests subjectAltName twice');
        sawSan = true;
        const value = readOne(
          expectTag(extParts[extParts.length - 1], TAG.OCTET_STRING, 'extnValue').content,
        );
        Object.assign(names, readGeneralNames(value));
      }
    }
    return {
      spki,
      publicKey,
      uris: names.uris,
      dnsNames: names.dnsNames,
      otherSans: names.others,
      signatureValid: verifySignature(algorithm, info.raw, signature, publicKey),
    };
  } catch (err) {
    if (
      err instanceof DerError ||
      err instanceof X509Error ||
      err instanceof TypeError ||
      err instanceof RangeError
    )
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
