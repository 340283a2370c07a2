/**
 * Versions both ends compute the same way (see riptides_agent.proto): the program version, the trust bundle
 * version, and the pin a join token carries (the SHA-256 of a CA's SubjectPublicKeyInfo, as kubeadm's
 * `--discovery-token-ca-cert-hash sha256:<hex>`).
 */
import { createHash, X509Certificate } from 'node:crypto';

/**
 * The version of a program: 16 hex digits of SHA-256 over the trust domain and every (SPIFFE ID, identity
 * hash) pair, sorted by SPIFFE ID in byte order. Empty input still has a version (an empty program).
 */
export function programVersion(trustDomain: string, identities: Iterable<readonly [string, string]>): string {
  const pairs = [...identities].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const h = createHash('sha256').update(`riptides.agent.v1/program\n${trustDomain}\n`);
  for (const [id, hash] of pairs) h.update(`${id} ${hash}\n`);
  return h.digest('hex').slice(0, 16);
}

/** The version of a trust bundle: 16 hex digits of SHA-256 over the authorities' DER, in order. */
export function bundleVersion(authoritiesDer: readonly Buffer[]): string {
  const h = createHash('sha256');
  for (const der of authoritiesDer) h.update(der);
  return h.digest('hex').slice(0, 16);
}

/** SHA-256 (hex) of a certificate's SubjectPublicKeyInfo (DER): what a join token pins. */
export function spkiPin(certDer: Buffer): string {
  const spki = new X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}

/** PEM text of DER certificates, in order. */
export function certificatesPem(ders: readonly Buffer[]): string {
  return ders.map((d) => new X509Certificate(d).toString()).join('');
}

/** DER certificates from PEM text (every CERTIFICATE block, in order). */
export function certificatesDer(pem: string): Buffer[] {
  const out: Buffer[] = [];
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;
  for (let m = re.exec(pem); m; m = re.exec(pem)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  return out;
}
