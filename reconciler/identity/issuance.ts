/**
 * X509-SVIDs from CSRs: the checks a request must pass (CSR, key, SPIFFE ID, entitlement, DNS names), the
 * leaf profile, and signing with a signing CA.
 */
import type { KeyObject } from 'node:crypto';
import { type LiveCa, randomSerial } from './ca-certs.ts';
import { oid, seq } from './der.ts';
import { AuthorityError, refused } from './errors.ts';
import { BACKDATE_MS, DEFAULT_X509_SVID_TTL_SECONDS, positiveSeconds } from './settings.ts';
import { parseSpiffeId } from './spiffe-id.ts';
import {
  createCsr,
  encodeName,
  encodeTbs,
  extension,
  generateKey,
  type KeyType,
  KU,
  keyUsageValue,
  OID,
  type ParsedCsr,
  parseCsr,
  pemBlocks,
  privateKeyPem,
  signTbs,
  subjectAltNameValue,
  toPem,
  X509Error,
} from './x509.ts';

export interface SignX509SvidRequest {
  csrPem: string;
  ttlSeconds?: number;
  /**
   * The DNS SANs the identity's x509 settings grant (WorkloadIdentity `spec.svid.x509.dnsNames`): all of them
   * go into the certificate. A DNS name in the CSR that is not among them is refused, never copied: the
   * authority decides the names, the requester does not.
   */
  dnsNames?: string[];
  /**
   * The caller's entitlement, asked about every SAN the certificate would carry: the SPIFFE ID and the DNS
   * names. true to allow, false or a refusal reason to refuse.
   */
  authorize?: (spiffeId: string, sans: { dnsNames: readonly string[] }) => boolean | string;
}

export interface SignedX509Svid {
  certPem: string;
  /** Leaf, signing CA, and any upstream intermediates: what a workload presents in TLS. */
  chainPem: string;
  spiffeId: string;
  serial: string;
  notAfter: Date;
}

/** A request that passed every check, ready to sign. */
export interface CheckedSvidRequest {
  csr: ParsedCsr;
  spiffeId: string;
  dnsNames: string[];
  ttl: number;
}

const DNS_NAME_RE = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

const LEAF_SUBJECT = encodeName([['O', 'SPIFFE']]);
const LEAF_BASIC_CONSTRAINTS = extension(OID.basicConstraints, true, Buffer.from([0x30, 0x00]));
const LEAF_KEY_USAGE_EC = extension(OID.keyUsage, true, keyUsageValue([KU.digitalSignature]));
const LEAF_KEY_USAGE_RSA = extension(
  OID.keyUsage,
  true,
  keyUsageValue([KU.digitalSignature, KU.keyEncipherment]),
);
const LEAF_EXT_KEY_USAGE = extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth)));

/** Checks `req` for an SVID in `trustDomain`; throws AuthorityError on the first rule it breaks. */
export function checkSvidRequest(req: SignX509SvidRequest, trustDomain: string): CheckedSvidRequest {
  const block = pemBlocks(req.csrPem).find((b) => /CERTIFICATE REQUEST$/.test(b.type));
  if (!block)
    throw refused('CSR: no "CERTIFICATE REQUEST" PEM block found: pass a PEM encoded PKCS#10 request');
  let csr: ReturnType<typeof parseCsr>;
  try {
    csr = parseCsr(block.der);
  } catch (err) {
    // A malformed request is refused as given, like every other rule it breaks.
    throw err instanceof X509Error ? refused(err.message) : err;
  }
  if (!csr.signatureValid)
    throw refused(
      'CSR signature does not verify with the public key it carries: the request was altered or signed with another key; generate a new CSR',
    );
  checkCsrKey(csr.publicKey);
  if (csr.uris.length !== 1)
    throw refused(
      `CSR must carry exactly one URI SAN (the SPIFFE ID), found ${csr.uris.length}: put the ID in the request's subjectAltName`,
    );
  const spiffeId = csr.uris[0]!;
  const parsed = parseSpiffeId(spiffeId);
  if (!parsed.ok) throw refused(`CSR SPIFFE ID "${spiffeId}" ${parsed.message}`);
  if (parsed.id.trustDomain !== trustDomain)
    throw refused(
      `CSR SPIFFE ID "${spiffeId}" is outside trust domain "${trustDomain}" of this CA: request an ID under spiffe://${trustDomain}/`,
    );
  if (parsed.id.path === '')
    throw refused(`CSR SPIFFE ID "${spiffeId}" names the trust domain itself: a workload ID needs a path`);
  const dnsNames = req.dnsNames ?? [];
  for (const name of dnsNames)
    if (name.length > 253 || !DNS_NAME_RE.test(name))
      throw refused(
        `DNS SAN "${name}" is not a valid DNS name (letters, digits, hyphens, dots; optional leading *.)`,
      );
  if (csr.otherSans.length)
    throw refused(
      `CSR asks for subjectAltName types an X509-SVID never carries (${[...new Set(csr.otherSans)].map(sanTypeName).join(', ')}): ` +
        'request only the SPIFFE ID; DNS names come from the identity',
    );
  const granted = new Set(dnsNames.map((n) => n.toLowerCase()));
  for (const name of csr.dnsNames)
    if (!granted.has(name.toLowerCase()))
      throw refused(
        `CSR asks for DNS SAN "${name}", which the identity's x509 settings do not grant ` +
          `(granted: ${dnsNames.length ? dnsNames.join(', ') : 'none'}): add it to spec.svid.x509.dnsNames or leave it out of the CSR`,
      );
  if (req.authorize) {
    const verdict = req.authorize(spiffeId, { dnsNames });
    if (verdict !== true)
      throw refused(
        `not entitled to "${spiffeId}"${dnsNames.length ? ` with DNS names ${dnsNames.join(', ')}` : ''}: ${typeof verdict === 'string' && verdict ? verdict : 'the caller is not authorised for this ID'}`,
      );
  }
  let ttl: number;
  try {
    ttl = positiveSeconds(req.ttlSeconds, DEFAULT_X509_SVID_TTL_SECONDS, 'X509-SVID TTL');
  } catch (err) {
    // A TTL is part of the request: refused as given, not a setting of the authority.
    throw err instanceof AuthorityError ? refused(err.message) : err;
  }
  return { csr, spiffeId, dnsNames, ttl };
}

const SAN_TYPES: Record<number, string> = {
  0: 'otherName',
  1: 'email',
  3: 'x400Address',
  4: 'directoryName',
  5: 'ediPartyName',
  7: 'IP address',
  8: 'registeredID',
};

function sanTypeName(tag: number): string {
  return SAN_TYPES[tag] ?? `[${tag}]`;
}

function checkCsrKey(key: KeyObject): void {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1' || curve === 'secp384r1') return;
    throw refused(`CSR key uses EC curve ${curve ?? 'unknown'}: generate a P-256 or P-384 key`);
  }
  if (key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) return;
  throw refused(
    `CSR key type ${key.asymmetricKeyType ?? 'unknown'} is not accepted: use EC P-256 or RSA ≥ 2048 bits`,
  );
}

/** The leaf for a checked request, signed by `ca`; it never outlives the CA. */
export function issueX509Svid(ca: LiveCa, request: CheckedSvidRequest, nowMs: number): SignedX509Svid {
  const { csr, spiffeId, dnsNames, ttl } = request;
  const notAfter = new Date(Math.min(nowMs + ttl * 1000, ca.cert.notAfter.getTime()));
  const serial = randomSerial();
  const usage =
    csr.publicKey.asymmetricKeyType === 'rsa'
      ? [KU.digitalSignature, KU.keyEncipherment]
      : [KU.digitalSignature];
  const tbs = encodeTbs(
    {
      serial,
      issuer: ca.issuerName,
      subject: LEAF_SUBJECT,
      notBefore: new Date(nowMs - BACKDATE_MS),
      notAfter,
      spki: csr.spki,
      extensions: [
        LEAF_BASIC_CONSTRAINTS,
        usage.length === 1 ? LEAF_KEY_USAGE_EC : LEAF_KEY_USAGE_RSA,
        LEAF_EXT_KEY_USAGE,
        extension(OID.subjectAltName, false, subjectAltNameValue([spiffeId], dnsNames)),
        ca.akiExtension,
      ],
    },
    ca.signer,
  );
  const certPem = toPem('CERTIFICATE', signTbs(tbs, ca.signer));
  return {
    certPem,
    chainPem: certPem + ca.chainTailPem,
    spiffeId,
    serial: serial.toString('hex'),
    notAfter,
  };
}

/** A key and a CSR for `spiffeId`, as an agent would make them (the CLI's `svid mint`, tests, benchmarks). */
export async function generateKeyAndCsr(
  spiffeId: string,
  keyType: KeyType = 'ec-p256',
): Promise<{ keyPem: string; csrPem: string }> {
  const key = await generateKey(keyType);
  return { keyPem: privateKeyPem(key), csrPem: toPem('CERTIFICATE REQUEST', createCsr(key, spiffeId)) };
}
