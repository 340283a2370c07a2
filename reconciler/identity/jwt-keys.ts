/** The authority's JWT-SVID signing keys: always EC P-256 (ES256), `kid` = the JWK thumbprint. */
import { calculateJwkThumbprint, type JWK } from 'jose';
import { readKey, type StoredSlot, type StoredState, writeKey } from './ca-store.ts';
import type { JwtSigningKey } from './jwt-svid.ts';
import { BACKDATE_MS } from './settings.ts';
import { generateKey } from './x509.ts';

export type LiveJwtKey = JwtSigningKey & { stored: StoredSlot };

/** A new JWT signing key that lives as long as a signing CA; its key written to `dir`. */
export async function createJwtKey(dir: string, state: StoredState, nowMs: number): Promise<StoredSlot> {
  const key = await generateKey('ec-p256');
  const { kty, crv, x, y } = key.export({ format: 'jwk' });
  const kid = await calculateJwkThumbprint({ kty, crv, x, y } as JWK);
  const keyFile = await writeKey(dir, `jwt-${kid}`, key);
  return {
    id: kid,
    state: 'active',
    notBefore: new Date(nowMs - BACKDATE_MS).toISOString(),
    notAfter: new Date(nowMs + state.caTtlSeconds * 1000).toISOString(),
    keyFile,
  };
}

/** The in-memory form of a stored JWT key (`cached` if already loaded). */
export async function loadJwtKey(
  dir: string,
  stored: StoredSlot,
  cached: LiveJwtKey | undefined,
): Promise<LiveJwtKey> {
  if (cached) return { ...cached, stored };
  const privateKey = await readKey(dir, stored.keyFile);
  const { kty, crv, x, y } = privateKey.export({ format: 'jwk' });
  return {
    kid: stored.id,
    privateKey,
    publicJwk: { kty, crv, x, y },
    notAfter: new Date(stored.notAfter),
    stored,
  };
}
