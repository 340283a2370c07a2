/**
 * X509-SVID rules (../shared/vectors/x509-svid-rules.md): structural parsing of an SVID with its key, as
 * go-spiffe's x509svid.Parse does, and verification of a presented chain against the bundle of the leaf's
 * trust domain (RFC 5280 path validation, with an injectable clock). Messages keep go-spiffe's wording so
 * that operators recognise them, followed by what to do.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { parseSpiffeId } from './spiffe-id.ts';
import {
  KU,
  namesIssuer,
  OID,
  type ParsedCertificate,
  parseCertificate,
  pemBlocks,
  publicKeyOf,
  spkiOf,
  verifySignature,
  X509Error,
} from './x509.ts';

export type X509SvidErrorCode =
  | 'cert_pem'
  | 'key_pem'
  | 'no_certificates'
  | 'no_private_key'
  | 'key_mismatch'
  | 'no_uri_san'
  | 'multiple_uri_san'
  | 'bad_spiffe_id'
  | 'leaf_root_path'
  | 'leaf_ca'
  | 'key_usage_missing'
  | 'key_usage_not_critical'
  | 'leaf_no_digital_signature'
  | 'leaf_key_cert_sign'
  | 'leaf_crl_sign'
  | 'leaf_eku'
  | 'san_not_critical'
  | 'signing_not_ca'
  | 'signing_no_key_cert_sign'
  | 'signing_id_path'
  | 'unknown_critical_extension'
  | 'no_bundle'
  | 'unknown_authority'
  | 'expired'
  | 'not_yet_valid'
  | 'path_length';

export class X509SvidError extends Error {
  constructor(
    readonly code: X509SvidErrorCode,
    message: string,
  ) {
    super(`x509svid: ${message}`);
  }
}

const EMPTY_NAME = Buffer.from([0x30, 0x00]);

/** The SPIFFE ID of a leaf SVID after checking the leaf rules (A1–A6, B1, B3–B5). */
export function leafSpiffeId(leaf: ParsedCertificate): string {
  if (leaf.uris.length === 0) throw new X509SvidError('no_uri_san', 'certificate contains no URI SAN');
  if (leaf.uris.length > 1)
    throw new X509SvidError('multiple_uri_san', 'certificate contains more than one URI SAN');
  const uri = leaf.uris[0]!;
  const parsed = parseSpiffeId(uri);
  if (!parsed.ok)
    throw new X509SvidError(
      'bad_spiffe_id',
      `cannot get leaf certificate SPIFFE ID: "${uri}" ${parsed.message}`,
    );
  if (parsed.id.path === '')
    throw new X509SvidError(
      'leaf_root_path',
      `leaf certificate SPIFFE ID "${uri}" must have a non-root path`,
    );
  if (leaf.subject.equals(EMPTY_NAME) && !leaf.sanCritical)
    throw new X509SvidError(
      'san_not_critical',
      'leaf certificate has an empty subject, so its URI SAN extension must be critical',
    );
  if (leaf.basicConstraints?.ca)
    throw new X509SvidError('leaf_ca', 'leaf certificate must not have CA flag set to true');
  const bits = leaf.keyUsage?.bits;
  if (!bits?.has(KU.digitalSignature))
    throw new X509SvidError(
      'leaf_no_digital_signature',
      "leaf certificate must have 'digitalSignature' set as key usage",
    );
  if (bits.has(KU.keyCertSign))
    throw new X509SvidError(
      'leaf_key_cert_sign',
      "leaf certificate must not have 'keyCertSign' set as key usage",
    );
  if (bits.has(KU.cRLSign))
    throw new X509SvidError('leaf_crl_sign', "leaf certificate must not have 'cRLSign' set as key usage");
  if (!leaf.keyUsage!.critical)
    throw new X509SvidError(
      'key_usage_not_critical',
      'leaf certificate key usage extension must be critical',
    );
  const eku = leaf.extKeyUsage;
  if (eku && !(eku.includes(OID.serverAuth) && eku.includes(OID.clientAuth)))
    throw new X509SvidError(
      'leaf_eku',
      'leaf certificate extended key usage must include both serverAuth and clientAuth',
    );
  return uri;
}

/** Signing certificate rules (B2, B3, B6). */
export function checkSigningCertificate(cert: ParsedCertificate): void {
  if (!cert.basicConstraints?.ca)
    throw new X509SvidError('signing_not_ca', 'signing certificate must have CA flag set to true');
  if (!cert.keyUsage?.bits.has(KU.keyCertSign))
    throw new X509SvidError(
      'signing_no_key_cert_sign',
      "signing certificate must have 'keyCertSign' set as key usage",
    );
  if (!cert.keyUsage.critical)
    throw new X509SvidError(
      'key_usage_not_critical',
      'signing certificate key usage extension must be critical',
    );
  for (const uri of cert.uris) {
    const parsed = parseSpiffeId(uri);
    if (parsed.ok && parsed.id.path !== '')
      throw new X509SvidError(
        'signing_id_path',
        `signing certificate SPIFFE ID "${uri}" must not have a path`,
      );
  }
}

function parseCertificates(certsPem: string): ParsedCertificate[] {
  const blocks = pemBlocks(certsPem);
  if (blocks.length === 0)
    throw new X509SvidError('cert_pem', 'cannot parse PEM encoded certificate: no PEM blocks found');
  try {
    return blocks.filter((b) => b.type === 'CERTIFICATE').map((b) => parseCertificate(b.der));
  } catch (err) {
    if (err instanceof X509Error)
      throw new X509SvidError('cert_pem', `cannot parse PEM encoded certificate: ${err.message}`);
    throw err;
  }
}

function parsePrivateKey(keyPem: string): KeyObject | null {
  const blocks = pemBlocks(keyPem);
  if (blocks.length === 0)
    throw new X509SvidError('key_pem', 'cannot parse PEM encoded private key: no PEM blocks found');
  const block = blocks.find((b) => /PRIVATE KEY$/.test(b.type));
  if (!block) return null;
  try {
    const type = block.type === 'PRIVATE KEY' ? 'pkcs8' : block.type === 'RSA PRIVATE KEY' ? 'pkcs1' : 'sec1';
    return createPrivateKey({ key: block.der, format: 'der', type });
  } catch {
    // The parser's message may quote key bytes; the reason class is enough.
    throw new X509SvidError(
      'key_pem',
      `cannot parse PEM encoded private key: ${block.type} block is malformed`,
    );
  }
}

export interface X509Svid {
  spiffeId: string;
  /** Leaf first, then the intermediates as presented. */
  certificates: ParsedCertificate[];
  privateKey: KeyObject;
}

/** go-spiffe's x509svid.Parse: structure only; no time or trust checks (use verifyX509Svid for those). */
export function parseX509Svid(certsPem: string, keyPem: string): X509Svid {
  const certificates = parseCertificates(certsPem);
  const privateKey = parsePrivateKey(keyPem);
  const [leaf, ...signing] = certificates;
  if (!leaf)
    throw new X509SvidError('no_certificates', 'certificate validation failed: no certificates found');
  const spiffeId = prefixed('certificate validation failed', () => {
    const id = leafSpiffeId(leaf);
    signing.forEach(checkSigningCertificate);
    return id;
  });
  if (!privateKey)
    throw new X509SvidError('no_private_key', 'private key validation failed: no private key found');
  if (!spkiOf(privateKey).equals(leaf.spki))
    throw new X509SvidError(
      'key_mismatch',
      'private key validation failed: leaf certificate does not match private key',
    );
  return { spiffeId, certificates, privateKey };
}

function prefixed<T>(prefix: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof X509SvidError)
      throw new X509SvidError(err.code, `${prefix}: ${err.message.replace(/^x509svid: /, '')}`);
    throw err;
  }
}

/** Per trust domain, the X.509 authorities (CA certificates) its bundle holds. */
export type X509BundleSource =
  | ReadonlyMap<string, readonly ParsedCertificate[]>
  | ((trustDomain: string) => readonly ParsedCertificate[] | undefined);

/** The CA certificates of a PEM bundle. */
export function parseBundlePem(pem: string): ParsedCertificate[] {
  return parseCertificates(pem);
}

export interface VerifiedX509Svid {
  spiffeId: string;
  trustDomain: string;
  /** Leaf, intermediates, and the bundle certificate the path ends at. */
  path: ParsedCertificate[];
}

const MAX_INTERMEDIATES = 8;

/**
 * Signature checks one verification may spend on building paths: Go's crypto/x509 (maxChainSignatureChecks).
 * A peer that presents many CA certificates sharing one subject and key would otherwise make the
 * depth-first search try every ordering of them (hours for ten); with the budget it is refused in
 * milliseconds, and no legitimate chain comes close to it.
 */
export const MAX_SIGNATURE_CHECKS = 100;

/**
 * Verifies a presented chain (leaf first) as an X509-SVID: leaf rules, then RFC 5280 path validation to a
 * CA in the bundle of the leaf's trust domain, with every certificate on the path valid at `now`.
 */
export function verifyX509Svid(
  chain: string | readonly ParsedCertificate[],
  bundles: X509BundleSource,
  opts: { now?: Date } = {},
): VerifiedX509Svid {
  const certs = typeof chain === 'string' ? parseCertificates(chain) : chain;
  const [leaf, ...intermediates] = certs;
  if (!leaf)
    throw new X509SvidError('no_certificates', 'empty certificates chain: present at least the leaf');
  const spiffeId = leafSpiffeId(leaf);
  const parsedId = parseSpiffeId(spiffeId);
  const trustDomain = parsedId.ok ? parsedId.id.trustDomain : '';
  const roots = typeof bundles === 'function' ? bundles(trustDomain) : bundles.get(trustDomain);
  if (!roots || roots.length === 0)
    throw new X509SvidError(
      'no_bundle',
      `no X.509 bundle found for trust domain "${trustDomain}": add that trust domain's bundle to the verifier`,
    );
  const tail = buildPath(leaf, intermediates, roots, new Set(), signatureBudget(spiffeId));
  if (!tail)
    throw new X509SvidError(
      'unknown_authority',
      `could not verify leaf certificate for "${spiffeId}": certificate signed by unknown authority ` +
        `(no CA in the bundle of trust domain "${trustDomain}" issued it; check that the peer sends its ` +
        'intermediates and that the bundle is current)',
    );
  const path = [leaf, ...tail];
  const now = opts.now ?? new Date();
  path.forEach((cert, index) => {
    const what =
      index === 0 ? 'leaf certificate' : `CA certificate ${index} of the path (serial ${cert.serial})`;
    if (cert.unknownCritical.length)
      throw new X509SvidError(
        'unknown_critical_extension',
        `${what} has unsupported critical extensions ${cert.unknownCritical.join(', ')}`,
      );
    if (now < cert.notBefore)
      throw new X509SvidError(
        'not_yet_valid',
        `${what} is not yet valid (notBefore ${cert.notBefore.toISOString()}, now ${now.toISOString()}): check clocks`,
      );
    if (now > cert.notAfter)
      throw new X509SvidError(
        'expired',
        `${what} has expired (notAfter ${cert.notAfter.toISOString()}, now ${now.toISOString()}): it must be renewed`,
      );
    if (index === 0) return;
    checkSigningCertificate(cert);
    const pathLen = cert.basicConstraints?.pathLen;
    if (pathLen !== null && pathLen !== undefined && index - 1 > pathLen)
      throw new X509SvidError(
        'path_length',
        `${what} allows ${pathLen} intermediates below it, found ${index - 1}`,
      );
  });
  return { spiffeId, trustDomain, path };
}

/** `issuedBy(cert, issuer)`: name chaining, key identifiers, then a signature check, which spends the budget. */
type IssuedBy = (cert: ParsedCertificate, issuer: ParsedCertificate) => boolean;

function signatureBudget(spiffeId: string): IssuedBy {
  let left = MAX_SIGNATURE_CHECKS;
  return (cert, issuer) => {
    if (!namesIssuer(cert, issuer)) return false;
    if (--left < 0)
      throw new X509SvidError(
        'unknown_authority',
        `could not verify leaf certificate for "${spiffeId}": gave up building a path after ${MAX_SIGNATURE_CHECKS} ` +
          'signature checks (the peer presented too many candidate CA certificates)',
      );
    return verifySignature(cert.signatureAlgorithm, cert.tbs, cert.signature, publicKeyOf(issuer));
  };
}

/** Depth-first search from `cert` to a bundle CA through the presented intermediates, within the budget. */
function buildPath(
  cert: ParsedCertificate,
  intermediates: readonly ParsedCertificate[],
  roots: readonly ParsedCertificate[],
  used: Set<ParsedCertificate>,
  issuedBy: IssuedBy,
): ParsedCertificate[] | null {
  const anchor = roots.find((root) => issuedBy(cert, root));
  if (anchor) return [anchor];
  if (used.size >= MAX_INTERMEDIATES) return null;
  for (const candidate of intermediates) {
    if (used.has(candidate) || !issuedBy(cert, candidate)) continue;
    used.add(candidate);
    const rest = buildPath(candidate, intermediates, roots, used, issuedBy);
    if (rest) return [candidate, ...rest];
    used.delete(candidate);
  }
  return null;
}

/**
 * When an SVID is due for rotation: at half its lifetime, ±10% of that half (SPIRE's rotationutil), so a
 * fleet issued at once does not renew at once. Compute it once per SVID; `random` is injectable for tests.
 */
export function svidRotationTime(notBefore: Date, notAfter: Date, random: () => number = Math.random): Date {
  const half = (notAfter.getTime() - notBefore.getTime()) / 2;
  const jitter = (random() * 2 - 1) * 0.1 * half;
  return new Date(notBefore.getTime() + half + jitter);
}

/**
 * The X.509 authorities of a SPIFFE bundle in JWKS form (X509-SVID s6.2): entries with `use: x509-svid`;
 * an entry without `x5c` is ignored, and of several `x5c` values only the first counts.
 */
export function x509AuthoritiesFromSpiffeBundle(bundle: { keys?: unknown }): ParsedCertificate[] {
  if (!Array.isArray(bundle.keys)) throw new X509SvidError('no_bundle', 'SPIFFE bundle has no "keys" array');
  const out: ParsedCertificate[] = [];
  for (const key of bundle.keys as Record<string, unknown>[]) {
    if (key?.use !== 'x509-svid' || !Array.isArray(key.x5c) || typeof key.x5c[0] !== 'string') continue;
    try {
      out.push(parseCertificate(Buffer.from(key.x5c[0], 'base64')));
    } catch (err) {
      if (err instanceof X509Error)
        throw new X509SvidError(
          'cert_pem',
          `SPIFFE bundle x509-svid entry: cannot parse x5c[0]: ${err.message}`,
        );
      throw err;
    }
  }
  return out;
}
