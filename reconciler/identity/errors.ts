/**
 * The authority's one error type. Its `code` says what kind of failure it is, as a stable value that
 * errors/classify.ts maps to the reconciler's catalogue:
 * - `unavailable`: the CA directory cannot be used as it is (missing, unreadable, no active CA or key, locked);
 * - `refused`: a request (CSR, SPIFFE ID, DNS name, TTL) was refused as given;
 * - `config`: the authority's settings (trust domain, key type, issuer, upstream CA) are invalid.
 */
export type AuthorityErrorCode = 'unavailable' | 'refused' | 'config';

export class AuthorityError extends Error {
  constructor(
    message: string,
    readonly code: AuthorityErrorCode = 'config',
  ) {
    super(message);
    this.name = 'AuthorityError';
  }
}

/** A CA directory that cannot be used as it is. */
export function stateError(dir: string, what: string): AuthorityError {
  return new AuthorityError(`CA directory ${dir}: ${what}`, 'unavailable');
}

/** A request refused as given (what issuance.ts throws). */
export function refused(message: string): AuthorityError {
  return new AuthorityError(message, 'refused');
}
