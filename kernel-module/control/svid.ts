/** Checks of an X.509-SVID and its key, shared by the writer (before writing) and the kernel side (on load). */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { pemCertificates } from './trust-store.ts';

export interface SvidFacts {
  /** Lowercase hex, no leading zeros. */
  serial: string;
  /** ISO 8601. */
  notAfter: string;
  notBefore: string;
  /** Leaf first, PEM, one block each. */
  chain: string[];
}

/** Certificate serials in one form: lowercase hex without leading zeros (Node prints them uppercase, padded). */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, '');
}

/** The URI SANs of a certificate, from Node's `subjectAltName` text. */
export function uriSans(cert: X509Certificate): string[] {
  const text = cert.subjectAltName ?? '';
  const out: string[] = [];
  for (const part of text.split(', ')) {
    if (part.startsWith('URI:')) out.push(part.slice(4));
  }
  return out;
}

/**
 * Checks that `certPem` (leaf first, then its chain) is an X.509-SVID for `spiffeId` — exactly one URI SAN,
 * equal to it; not a CA — and that `keyPem` is the leaf's private key. Throws Error with the reason.
 */
export function checkSvid(spiffeId: string, certPem: string, keyPem: string): SvidFacts {
  const chain = pemCertificates(certPem);
  if (chain.length === 0) throw new Error('the certificate file holds no PEM certificate');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(chain[0]!);
  } catch (err) {
    throw new Error(`the leaf certificate does not parse (${(err as Error).message})`);
  }
  const uris = uriSans(leaf);
  if (uris.length !== 1 || uris[0] !== spiffeId)
    throw new Error(
      `the certificate's URI SAN is ${uris.length ? uris.join(', ') : 'missing'}, not ${spiffeId}`,
    );
  if (leaf.ca) throw new Error('the certificate is a CA certificate, not an X.509-SVID leaf');
  let matches = false;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(keyPem));
  } catch (err) {
    throw new Error(`the key does not parse (${(err as Error).message.split('\n')[0]})`);
  }
  if (!matches) throw new Error("the key is not the certificate's key");
  return {
    serial: normalizeSerial(leaf.serialNumber),
    notAfter: new Date(leaf.validTo).toISOString(),
    notBefore: new Date(leaf.validFrom).toISOString(),
    chain,
  };
}
