/**
 * The embedded default of `riptides-cli up` (what `npm start` runs, with no --repo and no --path):
 * policies/quickstart of this checkout, and the node the quickstart's two flows need, so that the README's
 * first command runs the whole product, data plane included.
 *
 * - The data plane flags the quickstart's addresses call for, each used only when its flag is not given:
 *   the proxy its client is pointed at (`--proxy-listen 127.0.0.1:15001`) and the inbound mapping in front of
 *   its orders API (`--inbound identity=quickstart/app/orders-api,listen=127.0.0.1:18080,forward=127.0.0.1:18081`:
 *   the Service names 18080, the API itself listens on 18081). Ports of the quickstart, fixed because its
 *   Services name them.
 * - A certificate for the quickstart's HTTPS echo server, kept in `STATE_DIR/quickstart/` (`echo.crt`, `echo.key`
 *   0600) and trusted for upstream TLS unless --upstream-ca is given. The echo server is a local stand-in for an
 *   external API, whose certificate no system trust store holds; making it here, where the data plane that
 *   must verify it starts, is what lets `npm start` alone run the injection flow, with nothing to create
 *   before it and no restart. The file names are printed with the addresses.
 */
import 'reflect-metadata';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { writeFileAtomic } from '../common/atomic-file.ts';
import type { NodeFlagValues } from './node-flags.ts';

/** The policy path `up` reconciles when no --repo is given: the quickstart of this repository. */
export const QUICKSTART_PATH = 'policies/quickstart';

/** The node flags the quickstart's Services and walkthrough need (policies/quickstart/README.md). */
export const QUICKSTART_NODE_DEFAULTS = {
  'proxy-listen': '127.0.0.1:15001',
  inbound: ['identity=quickstart/app/orders-api,listen=127.0.0.1:18080,forward=127.0.0.1:18081'],
} as const;

/** `values` with the quickstart's node defaults filled in where their flag was not given, and which were. */
export function withQuickstartNodeDefaults<V extends NodeFlagValues>(
  values: V,
): { values: V; defaulted: Set<'proxy-listen' | 'inbound'> } {
  const defaulted = new Set<'proxy-listen' | 'inbound'>();
  const out = { ...values };
  if (out['proxy-listen'] === undefined) {
    out['proxy-listen'] = QUICKSTART_NODE_DEFAULTS['proxy-listen'];
    defaulted.add('proxy-listen');
  }
  if (!out.inbound?.length) {
    out.inbound = [...QUICKSTART_NODE_DEFAULTS.inbound];
    defaulted.add('inbound');
  }
  return { values: out, defaulted };
}

/** The echo server's certificate lives this long; `up` makes a new one when less than a month is left. */
export const ECHO_CERT_VALIDITY_DAYS = 365;
const RENEW_BEFORE_DAYS = 30;
const DAY_MS = 86_400_000;

export interface EchoCertificate {
  certFile: string;
  keyFile: string;
  certPem: string;
  /** True when this call wrote a new pair (none was there, or the one there could not be kept). */
  made: boolean;
}

/** Why the pair in `dir` cannot be kept, or null when it can. */
function problem(certPem: string, keyPem: string, now: Date): string | null {
  try {
    const cert = new X509Certificate(certPem);
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return 'key mismatch';
    if (!cert.checkIP('127.0.0.1')) return 'not for 127.0.0.1';
    if (Date.parse(cert.validTo) - now.getTime() < RENEW_BEFORE_DAYS * DAY_MS) return 'expiring';
    return null;
  } catch {
    return 'unreadable';
  }
}

/**
 * The quickstart echo server's certificate and key in `dir` (`echo.crt`, `echo.key`), made when missing,
 * unreadable or within 30 days of expiry: self-signed, EC P-256, for `127.0.0.1` and `localhost`, CA:TRUE so
 * that the certificate itself is the trust anchor `--upstream-ca` takes (as `openssl req -x509` makes one).
 * Key 0600, directory 0700. Rejects on an I/O error.
 */
export async function quickstartEchoCertificate(dir: string, now = new Date()): Promise<EchoCertificate> {
  const certFile = join(dir, 'echo.crt');
  const keyFile = join(dir, 'echo.key');
  try {
    const [certPem, keyPem] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
    if (problem(certPem, keyPem, now) === null) return { certFile, keyFile, certPem, made: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const serial = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)));
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial.toString('hex'),
      name: 'CN=riptides quickstart echo server, O=riptides',
      notBefore: new Date(now.getTime() - 5 * 60_000),
      notAfter: new Date(now.getTime() + ECHO_CERT_VALIDITY_DAYS * DAY_MS),
      keys,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign,
          true,
        ),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([
          { type: 'ip', value: '127.0.0.1' },
          { type: 'dns', value: 'localhost' },
        ]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    },
    webcrypto as unknown as Crypto,
  );
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })
    .export({ format: 'pem', type: 'pkcs8' })
    .toString();
  const certPem = `${cert.toString('pem').replace(/\r\n/g, '\n').trimEnd()}\n`;
  // The key first: a certificate on disk always has its key beside it.
  await writeFileAtomic(keyFile, keyPem, { mode: 0o600 });
  await writeFileAtomic(certFile, certPem, { mode: 0o644 });
  return { certFile, keyFile, certPem, made: true };
}
