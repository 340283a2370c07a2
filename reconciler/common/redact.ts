/**
 * The one redactor: every text that comes from a server (error bodies, status lines, git progress) or that
 * echoes a URL passes through it before it can reach a log, a report or an error message. The git source and
 * every credential provider use it, so they all hide the same things the same way:
 *
 *  - each registered secret in the forms it travels in: as is, URL-encoded, base64 and base64url (HTTP Basic
 *    headers, JWT segments), replaced by `***`;
 *  - the userinfo of any URL (`https://user:password@host` → `https://host`): a token is often given as the
 *    user name (GitHub documents `https://<TOKEN>:x-oauth-basic@github.com/…`), so neither part is shown.
 */

/** Shorter values would blank out ordinary words; credentials are never that short. */
const MIN_SECRET_LENGTH = 4;

/** `scheme://userinfo@` at the start of an authority; userinfo cannot hold '/', '?', '#', '@' or spaces. */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]*@/gi;

export class Redactor {
  readonly #forms = new Set<string>();
  #sorted: string[] = [];

  /** Registers a secret; undefined, empty and very short values are ignored. Returns this for chaining. */
  add(secret: string | undefined | null): this {
    if (!secret || secret.length < MIN_SECRET_LENGTH) return this;
    const bytes = Buffer.from(secret);
    for (const form of [
      secret,
      encodeURIComponent(secret),
      bytes.toString('base64'),
      bytes.toString('base64url'),
    ]) {
      this.#forms.add(form);
    }
    // Longest first, so that a secret containing another is replaced whole.
    this.#sorted = [...this.#forms].sort((a, b) => b.length - a.length);
    return this;
  }

  /** `text` without any registered secret and without URL userinfo. */
  redact(text: string): string {
    let out = stripUrlUserinfo(text);
    for (const s of this.#sorted) if (out.includes(s)) out = out.split(s).join('***');
    return out;
  }
}

/** Removes `user:password@` from every URL in `text`. */
export function stripUrlUserinfo(text: string): string {
  return text.replace(URL_USERINFO, '$1');
}

/**
 * A URL as it may be shown: no userinfo, no query string or fragment (they often carry tokens), trailing
 * slashes kept. Text that does not parse as a URL is returned with userinfo stripped.
 */
export function displayUrl(url: string | URL): string {
  let u: URL;
  try {
    u = new URL(String(url));
  } catch {
    return stripUrlUserinfo(String(url)).replace(/[?#].*$/s, '');
  }
  u.username = '';
  u.password = '';
  u.search = '';
  u.hash = '';
  return u.href;
}

/** The origin of a URL (`https://host:port`), for messages that must not show paths either. */
export function displayOrigin(url: string | URL): string {
  try {
    return new URL(String(url)).origin;
  } catch {
    return displayUrl(url);
  }
}
