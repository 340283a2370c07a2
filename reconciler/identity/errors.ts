/** The authority's one error type, and its form for a CA directory that cannot be used as it is. */
export class AuthorityError extends Error {}

export function stateError(dir: string, what: string): AuthorityError {
  return new AuthorityError(`CA directory ${dir}: ${what}`);
}
