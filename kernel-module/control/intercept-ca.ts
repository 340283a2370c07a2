/**
 * The node-local intercept CA: the authority that mints the certificates the data plane shows applications when
 * it terminates their TLS to inject a credential (riptides.md §8.2, "CN=TLS intercept CA"). Created once per
 * node and kept across restarts: applications load `certs/ca-certificates.crt` when they start, so a new CA
 * would break every running one. Hence a long life (10 years, as Istio's self-signed root) and EC P-256 (as
 * SPIRE's default key type; fast to sign leaves with). Its key never leaves the node (0600, 0700 directory).
 */
import 'reflect-metadata';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';

export const INTERCEPT_CA_VALIDITY_DAYS = 3650;
/** An intercept CA this close to expiry is replaced by a new one. */
export const INTERCEPT_CA_RENEW_BEFORE_DAYS = 30;

const DAY_MS = 86_400_000;

export interface InterceptCa {
  certPem: string;
  keyPem: string;
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.replace(/.{1,64}/g, '$&\n')}-----END ${label}-----\n`;
}

/** 128 random bits with the top bit clear, so the DER INTEGER stays positive at its full length. */
function positiveSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return Buffer.from(bytes).toString('hex');
}

/** A new CA certificate (CA:true, pathLen 0, keyCertSign + cRLSign) and its PKCS#8 key. */
export async function createInterceptCa(opts: {
  commonName?: string;
  now?: Date;
  validityDays?: number;
}): Promise<InterceptCa> {
  const now = opts.now ?? new Date();
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cn = (opts.commonName ?? 'riptides TLS intercept CA').replace(/[,+="<>#;\\]/g, ' ');
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: positiveSerial(),
      name: `CN=${cn}, O=riptides`,
      // A little back-dating absorbs clock skew between the node and its applications' view of it.
      notBefore: new Date(now.getTime() - 5 * 60_000),
      notAfter: new Date(now.getTime() + (opts.validityDays ?? INTERCEPT_CA_VALIDITY_DAYS) * DAY_MS),
      keys,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    },
    webcrypto as unknown as Crypto,
  );
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    certPem: cert.toString('pem').replace(/\r\n/g, '\n').trimEnd() + '\n',
    keyPem: toPem(pkcs8, 'PRIVATE KEY'),
  };
}

/** Why an existing intercept CA cannot be kept, or null when it can. */
export function interceptCaProblem(ca: InterceptCa, now: Date): string | null {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(ca.certPem);
  } catch (err) {
    return `its certificate does not parse (${(err as Error).message})`;
  }
  let keyOk = false;
  try {
    keyOk = cert.checkPrivateKey(createPrivateKey(ca.keyPem));
  } catch {
    keyOk = false;
  }
  if (!keyOk) return 'its key does not match its certificate';
  if (!cert.ca) return 'its certificate is not a CA certificate';
  const notAfter = new Date(cert.validTo).getTime();
  if (notAfter - now.getTime() < INTERCEPT_CA_RENEW_BEFORE_DAYS * DAY_MS)
    return `it expires ${cert.validTo}, within ${INTERCEPT_CA_RENEW_BEFORE_DAYS} days`;
  return null;
}
