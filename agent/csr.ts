/**
 * Keys and CSRs made on the node: an EC P-256 key (the private key never leaves the node) and a PKCS#10
 * request whose only subjectAltName is the SPIFFE ID asked for (X509-SVID §5: the authority decides
 * everything else). @peculiar/x509 builds the request over WebCrypto; agent/ cannot use the reconciler's own
 * X.509 code (it may not import reconciler/), and a library beats a second hand-written encoder.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface KeyAndCsr {
  /** PKCS#8 PEM. */
  keyPem: string;
  /** PKCS#10, DER. */
  csrDer: Buffer;
}

export async function generateKeyAndCsr(spiffeId: string): Promise<KeyAndCsr> {
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }])],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const b64 = pkcs8
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '');
  return {
    keyPem: `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`,
    csrDer: Buffer.from(csr.rawData),
  };
}
