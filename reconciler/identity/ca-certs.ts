/**
 * The CA's own certificates: self-signed roots, an imported upstream CA in a root's place, and the
 * short-lived signing CAs a root signs; and their in-memory forms, loaded from the CA directory.
 */
import { createPrivateKey, type KeyObject, randomBytes } from 'node:crypto';
import { readKey, type StoredCa, type StoredRoot, type StoredState, writeKey } from './ca-store.ts';
import { AuthorityError, stateError } from './errors.ts';
import { BACKDATE_MS, DAY_MS } from './settings.ts';
import {
  authorityKeyIdExtension,
  encodeName,
  encodeTbs,
  extension,
  generateKey,
  KU,
  keyIdentifier,
  keyUsageValue,
  OID,
  type ParsedCertificate,
  parseCertificate,
  parseCertificatesPem,
  pemBlocks,
  type Signer,
  signerFor,
  signTbs,
  spkiOf,
  subjectAltNameValue,
  subjectKeyIdExtension,
  toPem,
} from './x509.ts';
import { checkSigningCertificate } from './x509-svid.ts';

export interface LiveRoot {
  stored: StoredRoot;
  cert: ParsedCertificate;
  /** The root, then the upstream certificates above it; the last one is the bundle's anchor. */
  chain: ParsedCertificate[];
  key: KeyObject;
}

export interface LiveCa {
  stored: StoredCa;
  cert: ParsedCertificate;
  signer: Signer;
  /** Precomputed parts of every leaf this CA signs. */
  issuerName: Buffer;
  akiExtension: Buffer;
  /** PEM of the CA and everything above it that a peer needs to build the path, except the bundle root. */
  chainTailPem: string;
}

function caName(kind: string, trustDomain: string, id: string): Buffer {
  return encodeName([
    ['O', 'SPIFFE'],
    ['CN', `${kind} ${trustDomain.slice(0, 32)} ${id.slice(0, 8)}`],
  ]);
}

export function randomSerial(): Buffer {
  const serial = randomBytes(16);
  // Positive (top bit clear) and exactly 16 bytes in DER (next bit set, so no leading zero is trimmed).
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  return serial;
}

function caExtensions(spki: Buffer, trustDomain: string, pathLen: number | null, issuerKeyId: Buffer | null) {
  const bc =
    pathLen === null
      ? Buffer.from([0x30, 0x03, 0x01, 0x01, 0xff])
      : Buffer.from([0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, pathLen]);
  const exts = [
    extension(OID.basicConstraints, true, bc),
    extension(OID.keyUsage, true, keyUsageValue([KU.keyCertSign, KU.cRLSign])),
    subjectKeyIdExtension(spki),
    extension(OID.subjectAltName, false, subjectAltNameValue([`spiffe://${trustDomain}`], [])),
  ];
  if (issuerKeyId) exts.push(authorityKeyIdExtension(issuerKeyId));
  return exts;
}

/** A new self-signed root, its key written to `dir`. */
export async function createRoot(dir: string, state: StoredState, nowMs: number): Promise<StoredRoot> {
  const id = randomBytes(8).toString('hex');
  const key = await generateKey(state.keyType);
  const signer = signerFor(key);
  const spki = spkiOf(key);
  const name = caName('root', state.trustDomain, id);
  const notBefore = new Date(nowMs - BACKDATE_MS);
  const notAfter = new Date(nowMs + state.rootTtlSeconds * 1000);
  const tbs = encodeTbs(
    {
      serial: randomSerial(),
      issuer: name,
      subject: name,
      notBefore,
      notAfter,
      spki,
      extensions: caExtensions(spki, state.trustDomain, null, null),
    },
    signer,
  );
  const keyFile = await writeKey(dir, id, key);
  return {
    id,
    state: 'active',
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    keyFile,
    certPem: toPem('CERTIFICATE', signTbs(tbs, signer)),
    upstream: false,
    chainPem: '',
  };
}

/** A new signing CA signed by `root` (the active one), never outliving it; its key written to `dir`. */
export async function createSigningCa(
  dir: string,
  state: StoredState,
  root: LiveRoot | undefined,
  nowMs: number,
): Promise<StoredCa> {
  if (!root)
    throw stateError(dir, 'no active root CA to sign a new signing CA: run `riptides-cli ca rotate`');
  const id = randomBytes(8).toString('hex');
  const key = await generateKey(state.keyType);
  const spki = spkiOf(key);
  const signer = signerFor(root.key);
  const notBefore = new Date(nowMs - BACKDATE_MS);
  const notAfter = new Date(Math.min(nowMs + state.caTtlSeconds * 1000, root.cert.notAfter.getTime()));
  const tbs = encodeTbs(
    {
      serial: randomSerial(),
      issuer: root.cert.subject,
      subject: caName('signing', state.trustDomain, id),
      notBefore,
      notAfter,
      spki,
      extensions: caExtensions(
        spki,
        state.trustDomain,
        0,
        root.cert.subjectKeyId ?? keyIdentifier(root.cert.spki),
      ),
    },
    signer,
  );
  const keyFile = await writeKey(dir, id, key);
  return {
    id,
    state: 'active',
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    keyFile,
    certPem: toPem('CERTIFICATE', signTbs(tbs, signer)),
  };
}

async function parseUpstream(certPem: string, keyPem: string, nowMs: number) {
  let certs: ParsedCertificate[];
  try {
    certs = parseCertificatesPem(certPem);
  } catch (err) {
    throw new AuthorityError(`upstream certificate: cannot parse it (${(err as Error).message})`);
  }
  const [cert] = certs;
  if (!cert) throw new AuthorityError('upstream certificate: no CERTIFICATE PEM block found in the file');
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new AuthorityError('upstream key: not a readable PEM private key (PKCS#8, PKCS#1 or SEC1)');
  }
  if (!spkiOf(key).equals(cert.spki))
    throw new AuthorityError(
      'upstream key does not match the upstream certificate: pass the key of that certificate',
    );
  try {
    checkSigningCertificate(cert);
  } catch (err) {
    throw new AuthorityError(
      `upstream certificate cannot sign CAs: ${(err as Error).message.replace(/^x509svid: /, '')}`,
    );
  }
  // The authority puts its own signing CA (and under it every SVID) below the upstream CA: each CA on the
  // upstream chain must allow the CAs that will sit below it, or every SVID fails path validation later.
  [cert, ...certs.slice(1)].forEach((ca, above) => {
    const pathLen = ca.basicConstraints?.pathLen;
    const below = above + 1; // the signing CA, plus the upstream CAs between it and this one
    if (pathLen !== null && pathLen !== undefined && pathLen < below)
      throw new AuthorityError(
        `upstream ${above === 0 ? 'certificate' : `chain certificate ${above} (serial ${ca.serial})`} has pathLenConstraint ${pathLen}: ` +
          `it allows ${pathLen} CA certificate(s) below it, but the authority needs ${below} (its own signing CA${below > 1 ? ' and the upstream CAs under it' : ''}), ` +
          'so every SVID would fail path validation; import an upstream CA with a larger pathLenConstraint, or none',
      );
  });
  if (cert.notAfter.getTime() <= nowMs + DAY_MS)
    throw new AuthorityError(
      `upstream certificate expires ${cert.notAfter.toISOString()}: import one valid for more than a day`,
    );
  signerFor(key);
  return { cert, key, rest: certs.slice(1) };
}

/** An upstream CA (its certificate, then the chain above it) as the active root; its key written to `dir`. */
export async function importUpstreamRoot(
  dir: string,
  certPem: string,
  keyPem: string,
  nowMs: number,
): Promise<StoredRoot> {
  const upstream = await parseUpstream(certPem, keyPem, nowMs);
  const id = `upstream-${upstream.cert.serial.slice(0, 16)}`;
  return {
    id,
    state: 'active',
    notBefore: upstream.cert.notBefore.toISOString(),
    notAfter: upstream.cert.notAfter.toISOString(),
    keyFile: await writeKey(dir, id, upstream.key),
    certPem: toPem('CERTIFICATE', upstream.cert.der),
    upstream: true,
    chainPem: upstream.rest.map((c) => toPem('CERTIFICATE', c.der)).join(''),
  };
}

/** A root (or upstream CA) followed by the upstream certificates above it; the last one is the anchor. */
function chainAboveCa(root: StoredRoot): ParsedCertificate[] {
  return parseCertificatesPem(root.certPem + root.chainPem);
}

/** The in-memory form of a stored root, reusing what `cached` already parsed and read. */
export async function loadRoot(
  dir: string,
  stored: StoredRoot,
  cached: LiveRoot | undefined,
): Promise<LiveRoot> {
  const chain = cached?.chain ?? chainAboveCa(stored);
  return {
    stored,
    cert: chain[0]!,
    chain,
    key: cached?.key ?? (await readKey(dir, stored.keyFile)),
  };
}

/** The in-memory form of a stored signing CA (`cached` if already loaded); `roots` are the loaded roots. */
export async function loadSigningCa(
  dir: string,
  stored: StoredCa,
  cached: LiveCa | undefined,
  roots: Map<string, LiveRoot>,
): Promise<LiveCa> {
  if (cached) return { ...cached, stored };
  const cert = parseCertificate(pemBlocks(stored.certPem)[0]!.der);
  const issuerRoot = [...roots.values()].find((r) => cert.issuer.equals(r.cert.subject));
  const tail = issuerRoot ? issuerRoot.chain.slice(0, -1) : [];
  return {
    stored,
    cert,
    signer: signerFor(await readKey(dir, stored.keyFile)),
    issuerName: cert.subject,
    akiExtension: authorityKeyIdExtension(cert.subjectKeyId ?? keyIdentifier(cert.spki)),
    chainTailPem: stored.certPem + tail.map((c) => toPem('CERTIFICATE', c.der)).join(''),
  };
}
