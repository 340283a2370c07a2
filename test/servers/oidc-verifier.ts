/**
 * How Vault's JWT auth method and AWS STS trust our issuer: they fetch `<issuer>/.well-known/openid-configuration`
 * over HTTPS, then its `jwks_uri`, and verify tokens against those keys. Keys are refetched when a token names
 * an unknown key id (as both do after a key rotation).
 */
import { request } from 'node:https';
import {
  createLocalJWKSet,
  type JWTPayload,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
} from 'jose';

export class OidcFetchError extends Error {}

function getJson(url: string, ca: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) {
          reject(new OidcFetchError(`GET ${url}: HTTP ${res.statusCode}`));
          return;
        }
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          reject(new OidcFetchError(`GET ${url}: not JSON`));
        }
      });
      res.on('error', (e) => reject(new OidcFetchError(`GET ${url}: ${e.message}`)));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => reject(new OidcFetchError(`GET ${url}: ${e.message}`)));
    req.end();
  });
}

export class OidcVerifier {
  /** One fetch in flight at a time, shared by concurrent logins, as a real server's key cache does. */
  private keys: Promise<JWTVerifyGetKey> | undefined;

  constructor(
    readonly discoveryUrl: string,
    private readonly ca: string,
  ) {}

  private load(): Promise<JWTVerifyGetKey> {
    const loading = this.fetchKeys();
    this.keys = loading;
    // A failed fetch is not cached: the next token tries again.
    loading.catch(() => {
      if (this.keys === loading) this.keys = undefined;
    });
    return loading;
  }

  private async fetchKeys(): Promise<JWTVerifyGetKey> {
    const doc = (await getJson(
      `${this.discoveryUrl.replace(/\/$/, '')}/.well-known/openid-configuration`,
      this.ca,
    )) as {
      issuer?: string;
      jwks_uri?: string;
    };
    if (doc.issuer !== this.discoveryUrl.replace(/\/$/, '') || !doc.jwks_uri)
      throw new OidcFetchError(`discovery document at ${this.discoveryUrl} names issuer ${doc.issuer}`);
    const jwks = (await getJson(doc.jwks_uri, this.ca)) as { keys: never[] };
    return createLocalJWKSet(jwks);
  }

  /**
   * Verifies signature, issuer and time claims (with `toleranceSec` on exp and nbf); audience and subject are
   * the caller's to check, since Vault and STS word those failures differently.
   */
  async verify(jwt: string, now: Date, toleranceSec: number): Promise<JWTPayload> {
    const opts = {
      issuer: this.discoveryUrl.replace(/\/$/, ''),
      currentDate: now,
      clockTolerance: toleranceSec,
    };
    const keys = await (this.keys ?? this.load());
    try {
      return (await jwtVerify(jwt, keys, opts)).payload;
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err;
      return (await jwtVerify(jwt, await this.load(), opts)).payload;
    }
  }
}
