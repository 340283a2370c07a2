/** Every failure of the git source carries one of these codes, so callers (plan, the reconciler loop) can map
 * them to exit codes and conditions without parsing messages. */
export type SourceErrorCode =
  | 'unreachable'
  | 'auth'
  | 'unknown-ref'
  | 'force-push'
  | 'too-large'
  | 'not-a-repo'
  | 'bad-path';

export class SourceError extends Error {
  override readonly name = 'SourceError';
  constructor(
    readonly code: SourceErrorCode,
    message: string,
    /** What the operator can do about it. */
    readonly hint: string,
  ) {
    super(message);
  }
}

export const CREDENTIAL_ENV_HINT =
  'set RIPTIDES_GIT_TOKEN, or RIPTIDES_GIT_USERNAME and RIPTIDES_GIT_PASSWORD, or RIPTIDES_GIT_CREDENTIALS_FILE (git-credentials format)';

/** The message of anything thrown, for wrapping into a SourceError. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
