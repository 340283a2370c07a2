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

/** Replaces every known secret (and the encodings it travels in) in text that may reach a log or a user. */
export class Redactor {
  readonly #secrets: string[] = [];

  add(secret: string | undefined): void {
    // Very short values would blank out ordinary words; credentials are never that short in practice.
    if (!secret || secret.length < 4) return;
    for (const form of [secret, encodeURIComponent(secret), Buffer.from(secret).toString('base64')]) {
      if (!this.#secrets.includes(form)) this.#secrets.push(form);
    }
    // Longest first so that a secret containing another is replaced whole.
    this.#secrets.sort((a, b) => b.length - a.length);
  }

  redact(text: string): string {
    let out = text;
    for (const s of this.#secrets) out = out.split(s).join('***');
    return out;
  }
}

/** The message of anything thrown, for wrapping into a SourceError. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
