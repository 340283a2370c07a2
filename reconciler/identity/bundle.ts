/** The trust bundle: every live root (its anchor) and signing CA, as PEM and as a SPIFFE bundle (JWKS). */
import type { LiveCa, LiveRoot } from './ca-certs.ts';
import type { JwtMinter } from './jwt-svid.ts';
import { type ParsedCertificate, publicKeyOf, toPem } from './x509.ts';

export function x509Authorities(
  roots: Iterable<LiveRoot>,
  signingCas: Iterable<LiveCa>,
  nowMs: number,
): ParsedCertificate[] {
  const out: ParsedCertificate[] = [];
  for (const r of roots) {
    if (r.cert.notAfter.getTime() <= nowMs) continue;
    out.push(r.chain.at(-1)!);
  }
  for (const ca of signingCas) if (ca.cert.notAfter.getTime() > nowMs) out.push(ca.cert);
  return out;
}

export function bundlePem(authorities: ParsedCertificate[]): string {
  return authorities.map((c) => toPem('CERTIFICATE', c.der)).join('');
}

/** SPIFFE bundle format (X509-SVID s6, JWT-SVID): x509-svid entries with x5c, jwt-svid keys with kid. */
export async function bundleJwks(
  authorities: ParsedCertificate[],
  jwt: JwtMinter,
  caTtlSeconds: number,
): Promise<{ keys: Record<string, unknown>[]; spiffe_refresh_hint: number }> {
  const x509 = authorities.map((c) => {
    const { kty, crv, x, y, n, e } = publicKeyOf(c).export({ format: 'jwk' });
    return { use: 'x509-svid', kty, ...(crv ? { crv, x, y } : { n, e }), x5c: [c.der.toString('base64')] };
  });
  const jwtKeys = (await jwt.jwks()).keys.map((k) => ({ ...k, use: 'jwt-svid' }));
  // SPIFFE bundle refresh hint: a fraction of the signing CA lifetime, so peers see a prepared CA early.
  return {
    keys: [...x509, ...jwtKeys],
    spiffe_refresh_hint: Math.max(60, Math.floor(caTtlSeconds / 12)),
  };
}
