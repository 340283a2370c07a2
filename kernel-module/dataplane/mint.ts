/**
 * Application-facing certificates for TLS intercept: one per requested host, minted from the node's intercept
 * CA and cached until the CA changes or the certificate nears expiry. All minted leaves share one P-256 key made
 * at start (a key per host buys nothing: the CA signature binds the name). X.509 structure: @peculiar/x509;
 * signatures: WebCrypto (node:crypto).
 */
import 'reflect-metadata';
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import * as x509 from '@peculiar/x509';
import type { KeyPair } from './inputs.ts';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const HOUR = 3_600_000;
const LEAF_LIFETIME = 24 * HOUR;
const MAX_CACHED = 10_000;

function signingAlgorithm(keyPem: string): {
  import: EcKeyImportParams | RsaHashedImportParams;
  sign: Algorithm;
} {
  const key = createPrivateKey(keyPem);
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'P-384' : 'P-256';
    const hash = curve === 'P-384' ? 'SHA-384' : 'SHA-256';
    return {
      import: { name: 'ECDSA', namedCurve: curve },
      sign: { name: 'ECDSA', hash } as EcdsaParams,
    };
  }
  return {
    import: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as RsaHashedImportParams,
  };
}

async function importPrivate(pem: string, alg: EcKeyImportParams | RsaHashedImportParams) {
  const der = createPrivateKey(pem).export({ format: 'der', type: 'pkcs8' });
  return webcrypto.subtle.importKey('pkcs8', der, alg, false, ['sign']);
}

interface Minted {
  context: SecureContext;
  certPem: string;
  notAfter: number;
}

export class InterceptMinter {
  private leafKeys: Promise<{ pair: CryptoKeyPair; pem: string }> | null = null;
  private caPem: string | null = null;
  private ca: Promise<{ cert: x509.X509Certificate; key: CryptoKey; sign: Algorithm }> | null = null;
  private readonly cache = new Map<string, Promise<Minted>>();
  /** Certificates minted since start (a cache miss each). */
  minted = 0;

  constructor(private readonly getCa: () => KeyPair | null) {}

  /** The TLS server context for `host` (a DNS name or an IP), minted on first use. */
  async context(host: string): Promise<SecureContext> {
    return (await this.entry(host)).context;
  }

  /** The PEM of the certificate `context(host)` serves. */
  async certificate(host: string): Promise<string> {
    return (await this.entry(host)).certPem;
  }

  private async entry(host: string): Promise<Minted> {
    const ca = this.getCa();
    if (!ca) throw new Error('no intercept CA is installed');
    if (ca.cert !== this.caPem) {
      this.caPem = ca.cert;
      this.cache.clear();
      const alg = signingAlgorithm(ca.key);
      this.ca = importPrivate(ca.key, alg.import).then((key) => ({
        cert: new x509.X509Certificate(ca.cert),
        key,
        sign: alg.sign,
      }));
    }
    const name = host.toLowerCase();
    const hit = this.cache.get(name);
    if (hit) {
      const minted = await hit;
      if (minted.notAfter - Date.now() > HOUR) return minted;
    }
    const fresh = this.mint(name);
    if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(name, fresh);
    fresh.catch(() => this.cache.delete(name));
    return fresh;
  }

  private async mint(host: string): Promise<Minted> {
    this.leafKeys ??= (async () => {
      const pair = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
        'sign',
        'verify',
      ])) as CryptoKeyPair;
      const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', pair.privateKey));
      return {
        pair,
        pem: createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
          .export({ format: 'pem', type: 'pkcs8' })
          .toString(),
      };
    })();
    const [leaf, ca] = await Promise.all([this.leafKeys, this.ca!]);
    const now = Date.now();
    const notAfter = Math.min(now + LEAF_LIFETIME, ca.cert.notAfter.getTime());
    const san = isIP(host) ? { type: 'ip' as const, value: host } : { type: 'dns' as const, value: host };
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomBytes(16)
        .toString('hex')
        .replace(/^[89a-f]/, '1'),
      subject: isIP(host) ? 'CN=riptides intercept' : `CN=${host.replace(/[,+="<>#;\\]/g, '')}`,
      issuer: ca.cert.subject,
      notBefore: new Date(now - HOUR),
      notAfter: new Date(notAfter),
      signingAlgorithm: ca.sign,
      publicKey: leaf.pair.publicKey,
      signingKey: ca.key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([san]),
        await x509.AuthorityKeyIdentifierExtension.create(ca.cert, false),
      ],
    });
    this.minted++;
    const certPem = cert.toString('pem');
    return {
      context: createSecureContext({ cert: certPem, key: leaf.pem, minVersion: 'TLSv1.2' }),
      certPem,
      notAfter,
    };
  }
}
