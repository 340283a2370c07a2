/**
 * The one redactor: every text that comes from a server (error bodies, status lines, git progress) or that
 * echoes a URL passes through it before it can reach a log, a report or an error message. The git source and
 * every credential provider use it, so they all hide the same things the same way:
 *
 *  - each registered secret in the forms it travels in: as is, URL-encoded (also with every byte but letters and
 *    digits encoded), base64 and base64url (HTTP Basic headers, JWT segments), replaced by `***`;
 *  - the userinfo of any URL (`https://user:password@host` → `https://host`): a token is often given as the
 *    user name (GitHub documents `https://<TOKEN>:x-oauth-basic@github.com/…`), so neither part is shown.
 */

/** Shorter values would blank out ordinary words; credentials are never that short. */
const MIN_SECRET_LENGTH = 4;

/** `scheme://userinfo@` at the start of an authority; userinfo cannot hold '/', '?', '#', '@' or spaces. */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@]*@/gi;

export class Redactor {
  readonly #forms = new Set<string>();
  /** Per slot, the forms of its current secret and of the one before it. */
  readonly #slots = new Map<string, string[][]>();
  #sorted: string[] = [];

  /** Registers a secret; undefined, empty and very short values are ignored. Returns this for chaining. */
  add(secret: string | undefined | null): this {
    if (!secret || secret.length < MIN_SECRET_LENGTH) return this;
    for (const form of formsOf(secret)) this.#forms.add(form);
    this.#sort();
    return this;
  }

  /**
   * Registers the current secret of a kind that is replaced as it rotates (a session's JWT, its Vault token,
   * the value it serves), keeping it and the one before it: a session that logs in every few minutes for
   * months holds two per kind instead of every one it ever sent (which grew without bound, and made every
   * redaction slower). Text a server sends answers a request made with one of these two.
   */
  set(slot: string, secret: string | undefined | null): this {
    if (!secret || secret.length < MIN_SECRET_LENGTH) return this;
    const current = this.#slots.get(slot)?.[0];
    if (current?.[0] === secret) return this;
    const forms = formsOf(secret);
    this.#slots.set(slot, current ? [forms, current] : [forms]);
    this.#sort();
    return this;
  }

  /** `text` without any registered secret and without URL userinfo. */
  redact(text: string): string {
    let out = stripUrlUserinfo(text);
    for (const s of this.#sorted) if (out.includes(s)) out = out.split(s).join('***');
    return out;
  }

  #sort(): void {
    const all = new Set(this.#forms);
    for (const kept of this.#slots.values()) for (const forms of kept) for (const f of forms) all.add(f);
    // Longest first, so that a secret containing another is replaced whole.
    this.#sorted = [...all].sort((a, b) => b.length - a.length);
  }
}

/**
 * The forms a secret travels in: as is, URL-encoded (as encodeURIComponent does, and with every byte but
 * letters and digits encoded, in upper- and lower-case hex, as some servers echo it), base64 and base64url.
 */
function formsOf(secret: string): string[] {
  const bytes = Buffer.from(secret);
  // Byte by byte through a table: a session registers a new JWT (~1 KB) on every login, thousands per minute
  // when many sources retry.
  let upper = '';
  let lower = '';
  for (const b of bytes) {
    upper += PERCENT_UPPER[b];
    lower += PERCENT_LOWER[b];
  }
  return [
    secret,
    encodeURIComponent(secret),
    upper,
    lower,
    bytes.toString('base64'),
    bytes.toString('base64url'),
  ];
}

const isAlnum = (b: number) =>
  (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
/** Per byte: letters and digits as they are, every other byte `%XX` (upper-case hex) or `%xx` (lower-case). */
const PERCENT_UPPER = Array.from({ length: 256 }, (_, b) =>
  isAlnum(b) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
);
const PERCENT_LOWER = Array.from({ length: 256 }, (_, b) =>
  isAlnum(b) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0')}`,
);

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
