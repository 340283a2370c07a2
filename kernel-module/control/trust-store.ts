/**
 * The system's trust store (the roots applications already trust) and the bundle the control tree offers
 * applications: `certs/ca-certificates.crt` = system roots + the node's intercept CA + the trust bundle.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';

/**
 * Where Linux distributions keep the system roots as one PEM file, in the order Go's crypto/x509
 * (root_linux.go) looks for them: Debian/Ubuntu/Gentoo first, then Fedora/RHEL, openSUSE, OpenELEC,
 * CentOS/RHEL 7, Alpine.
 */
export const SYSTEM_ROOT_FILES = [
  '/etc/ssl/certs/ca-certificates.crt',
  '/etc/pki/tls/certs/ca-bundle.crt',
  '/etc/ssl/ca-bundle.pem',
  '/etc/pki/tls/cacert.pem',
  '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem',
  '/etc/ssl/cert.pem',
] as const;

/** Distribution bundles are a few hundred KB; anything far beyond is not a trust store. */
const MAX_ROOTS_BYTES = 8 * 1024 * 1024;

export interface SystemRoots {
  /** The file read, or `node:tls.rootCertificates` (Node's bundled Mozilla store) when none was usable. */
  source: string;
  pem: string;
  count: number;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----/g;

/** The certificate blocks of a PEM text, each ending in a newline; other text (comments, keys) is dropped. */
export function pemCertificates(text: string): string[] {
  return [...text.matchAll(PEM_CERT)].map((m) => `${m[0].replace(/\r\n/g, '\n')}\n`);
}

/**
 * The system roots: `$SSL_CERT_FILE` when set (as OpenSSL and Go honour it), else the first distribution
 * file of {@link SYSTEM_ROOT_FILES} that holds at least one certificate, else Node's bundled store.
 */
export async function loadSystemRoots(
  opts: { file?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<SystemRoots> {
  const env = opts.env ?? process.env;
  const candidates = opts.file
    ? [opts.file]
    : [...(env.SSL_CERT_FILE ? [env.SSL_CERT_FILE] : []), ...SYSTEM_ROOT_FILES];
  for (const file of candidates) {
    let text: string;
    try {
      const data = await readFile(file);
      if (data.length > MAX_ROOTS_BYTES) continue;
      text = data.toString('utf8');
    } catch {
      continue;
    }
    const certs = pemCertificates(text);
    if (certs.length > 0) return { source: file, pem: certs.join(''), count: certs.length };
  }
  const certs = rootCertificates.map((c) => (c.endsWith('\n') ? c : `${c}\n`));
  return { source: 'node:tls.rootCertificates', pem: certs.join(''), count: certs.length };
}

/** Checks that `pem` holds at least one certificate and only parseable ones; returns them normalised. */
export function parseCertificateBundle(pem: string, what: string): string[] {
  const certs = pemCertificates(pem);
  if (certs.length === 0) throw new Error(`${what} holds no PEM certificate`);
  certs.forEach((c, i) => {
    try {
      new X509Certificate(c);
    } catch (err) {
      throw new Error(`${what}: certificate ${i + 1} does not parse (${(err as Error).message})`);
    }
  });
  return certs;
}

/** `certs/ca-certificates.crt`: the system roots, then the intercept CA, then the trust bundle. */
export function composeCaBundle(parts: {
  systemRoots: string;
  interceptCa: string | null;
  trustBundle: string | null;
}): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const block of [
    ...pemCertificates(parts.systemRoots),
    ...pemCertificates(parts.interceptCa ?? ''),
    ...pemCertificates(parts.trustBundle ?? ''),
  ]) {
    if (seen.has(block)) continue;
    seen.add(block);
    out.push(block);
  }
  return out.join('');
}
