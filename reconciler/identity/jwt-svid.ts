/**
 * JWT-SVIDs and OIDC ID tokens (standards/JWT-SVID.md) signed with jose: ES256, a `kid` on every token,
 * `sub` = the SPIFFE ID, a required audience, `exp` capped by the signing key's own end of life so that a
 * key can leave the JWKS once it has expired.
 */

import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import {
  decodeProtectedHeader,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  type ProtectedHeaderParameters,
  SignJWT,
} from 'jose';
import { parseSpiffeId } from './spiffe-id.ts';

export interface MintJwtOptions {
  spiffeId: string;
  audience: string[];
  ttlSeconds?: number;
  claims?: Record<string, unknown>;
}

export interface JwtMinter {
  readonly issuer: string;
  mint(opts: MintJwtOptions): Promise<string>;
  jwks(): Promise<{ keys: Record<string, unknown>[] }>;
}

/** SPIRE's default JWT-SVID lifetime. */
export const DEFAULT_JWT_TTL_SECONDS = 300;

/** Claims the minter sets itself; `claims` may not override them. */
export const RESERVED_CLAIMS: readonly string[] = ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti'];

export interface JwtSigningKey {
  kid: string;
  privateKey: KeyObject;
  /** The public JWK (kty, crv, x, y) without kid/alg/use. */
  publicJwk: Record<string, unknown>;
  notAfter: Date;
}

/** Where the minter gets its keys: the authority, which rotates them. */
export interface JwtKeySource {
  /** The key that signs now (rotating first if a rotation is due). */
  signingKey(): Promise<JwtSigningKey>;
  /** Every key a verifier must know now: the next, the current and those whose tokens may still be live. */
  publishedKeys(): Promise<JwtSigningKey[]>;
}

export class JwtMintError extends Error {}

export function createJwtMinter(opts: {
  issuer: string;
  trustDomain: string;
  keys: JwtKeySource;
  now?: () => Date;
}): JwtMinter {
  const now = opts.now ?? (() => new Date());
  return {
    issuer: opts.issuer,
    async mint(req: MintJwtOptions): Promise<string> {
      const parsed = parseSpiffeId(req.spiffeId);
      if (!parsed.ok) throw new JwtMintError(`JWT-SVID subject "${req.spiffeId}" ${parsed.message}`);
      if (parsed.id.trustDomain !== opts.trustDomain)
        throw new JwtMintError(
          `JWT-SVID subject "${req.spiffeId}" is outside trust domain "${opts.trustDomain}" of this authority`,
        );
      if (parsed.id.path === '')
        throw new JwtMintError(`JWT-SVID subject "${req.spiffeId}" must name a workload (a non-root path)`);
      if (!Array.isArray(req.audience) || req.audience.length === 0 || req.audience.some((a) => !a))
        throw new JwtMintError('a JWT-SVID needs at least one non-empty audience (aud)');
      const ttl = req.ttlSeconds ?? DEFAULT_JWT_TTL_SECONDS;
      if (!Number.isInteger(ttl) || ttl <= 0)
        throw new JwtMintError(`JWT TTL must be a positive whole number of seconds (got ${ttl})`);
      const claims = req.claims ?? {};
      const reserved = Object.keys(claims).filter((c) => RESERVED_CLAIMS.includes(c));
      if (reserved.length)
        throw new JwtMintError(
          `extra claims may not set reserved claim(s) ${reserved.join(', ')}: the minter sets ` +
            `${RESERVED_CLAIMS.join(', ')} itself; rename or drop them`,
        );
      const key = await opts.keys.signingKey();
      const iat = Math.floor(now().getTime() / 1000);
      const exp = Math.min(iat + ttl, Math.floor(key.notAfter.getTime() / 1000));
      if (exp <= iat)
        throw new JwtMintError('the JWT signing key has expired: run `riptides-cli ca rotate` for this CA');
      return new SignJWT({ ...claims })
        .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
        .setIssuer(opts.issuer)
        .setSubject(req.spiffeId)
        .setAudience(req.audience.length === 1 ? req.audience[0]! : req.audience)
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .setJti(randomBytes(16).toString('base64url'))
        .sign(key.privateKey);
    },
    async jwks() {
      const keys = await opts.keys.publishedKeys();
      return { keys: keys.map((k) => ({ ...k.publicJwk, kid: k.kid, alg: 'ES256', use: 'sig' })) };
    },
  };
}

/** JWT-SVID s3: RS*, ES* and PS* only (never `none` or HMAC). */
const JWT_SVID_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'];

export class JwtSvidError extends Error {}

/**
 * Validates a JWT-SVID (standards/JWT-SVID.md): allowed algorithm, `typ` JWT/JOSE if present, no JOSE
 * headers beyond alg/kid/typ, a signature from `keys`, `sub` a workload SPIFFE ID (of `trustDomain` when
 * given), `aud` containing `audience`, `exp` present and not past (60 s leeway); `now` is injectable.
 */
export async function verifyJwtSvid(
  token: string,
  keys: JWTVerifyGetKey,
  opts: { audience: string; trustDomain?: string; now?: Date },
): Promise<{ spiffeId: string; claims: JWTPayload }> {
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw new JwtSvidError('JWT-SVID is not a JWS compact serialization');
  }
  const extra = Object.keys(header).filter((h) => !['alg', 'kid', 'typ'].includes(h));
  if (extra.length) throw new JwtSvidError(`JWT-SVID carries JOSE headers it must not: ${extra.join(', ')}`);
  if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE')
    throw new JwtSvidError(`JWT-SVID typ must be JWT or JOSE (got ${String(header.typ)})`);
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, keys, {
      algorithms: JWT_SVID_ALGORITHMS,
      audience: opts.audience,
      requiredClaims: ['sub', 'aud', 'exp'],
      clockTolerance: 60,
      currentDate: opts.now,
    }));
  } catch (err) {
    throw new JwtSvidError(`JWT-SVID rejected: ${(err as Error).message}`);
  }
  const parsed = parseSpiffeId(String(payload.sub));
  if (!parsed.ok || parsed.id.path === '')
    throw new JwtSvidError(`JWT-SVID sub "${String(payload.sub)}" is not a workload SPIFFE ID`);
  if (opts.trustDomain !== undefined && parsed.id.trustDomain !== opts.trustDomain)
    throw new JwtSvidError(
      `JWT-SVID sub "${String(payload.sub)}" is outside trust domain "${opts.trustDomain}"`,
    );
  return { spiffeId: String(payload.sub), claims: payload };
}
