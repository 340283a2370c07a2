/** The authority's defaults and the checks of the settings a caller passes (issuer URL, lifetimes). */
import { AuthorityError } from './errors.ts';

export const DEFAULT_ISSUER = 'https://localhost/oidc';
export const DEFAULT_CA_TTL_SECONDS = 24 * 3600;
export const DEFAULT_ROOT_TTL_SECONDS = 10 * 365 * 24 * 3600;
/** SPIRE's default_x509_svid_ttl. */
export const DEFAULT_X509_SVID_TTL_SECONDS = 3600;
/** notBefore is set this far in the past so that peers with slightly slow clocks accept a fresh cert. */
export const BACKDATE_MS = 10_000;
export const DAY_MS = 24 * 3600 * 1000;

export function normaliseIssuer(issuer: string): string {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new AuthorityError(`issuer "${issuer}" is not a URL: use e.g. https://oidc.example.com/oidc`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new AuthorityError(
      `issuer "${issuer}" must be an https URL (AWS STS and Vault fetch discovery over https)`,
    );
  if (url.search || url.hash || url.username || url.password)
    throw new AuthorityError(`issuer "${issuer}" may not carry a query, fragment or credentials`);
  return url.href.replace(/\/+$/, '');
}

export function positiveSeconds(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0)
    throw new AuthorityError(`${what} must be a positive whole number of seconds (got ${String(v)})`);
  return v;
}
