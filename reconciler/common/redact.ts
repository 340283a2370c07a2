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
  /** The forms of every secret given to add(), longest first. */
  #fixed: string[] = [];
  /** Per slot, its current secret and the one before it, as given: their forms are derived when redacting. */
  readonly #slots = new Map<string, string[]>();

  /** Registers a secret; undefined, empty and very short values are ignored. Returns this for chaining. */
  add(secret: string | undefined | null): this {
    if (!secret || secret.length < MIN_SECRET_LENGTH) return this;
    this.#fixed = longestFirst(new Set([...this.#fixed, ...formsOf(secret)]));
    return this;
  }

  /**
   * Registers the current secret of a kind that is replaced as it rotates (a session's JWT, its Vault token,
   * the value it serves), keeping it and the one before it: a session that logs in every few minutes for
   * months holds two per kind instead of every one it ever sent. Only the values are kept: their six encoded
   * forms (~12 KB for a 1 KB JWT) are derived when text is redacted, which happens on a failure, while every
   * session holds its secrets for as long as it lives (4,000 failing sessions held 130 MB of forms).
   * Text a server sends answers a request made with one of these two.
   */
  set(slot: string, secret: string | undefined | null): this {
    if (!secret || secret.length < MIN_SECRET_LENGTH) return this;
    const current = this.#slots.get(slot)?.[0];
    if (current === secret) return this;
    this.#slots.set(slot, current ? [secret, current] : [secret]);
    return this;
  }

  /** `text` without any registered secret and without URL userinfo. */
  redact(text: string): string {
    let out = stripUrlUserinfo(text);
    let forms = this.#fixed;
    if (this.#slots.size > 0) {
      const all = new Set(forms);
      // Every form of a secret is at least as long as the secret (formsOf): one longer than the text cannot be
      // in it, and its forms are not derived. A failure's text (`connect ECONNREFUSED …`) is shorter than the
      // session's JWT, and thousands of sessions failing at once each redacted their own.
      for (const kept of this.#slots.values())
        for (const secret of kept)
          if (secret.length <= out.length) for (const f of formsOf(secret)) all.add(f);
      forms = longestFirst(all);
    }
    for (const s of forms) if (out.includes(s)) out = out.split(s).join('***');
    return out;
  }
}

/** Longest first, so that a secret containing another is replaced whole. */
const longestFirst = (forms: Set<string>) => [...forms].sort((a, b) => b.length - a.length);

/**
 * The forms a secret travels in: as is, URL-encoded (as encodeURIComponent does, and with every byte but
 * letters and digits encoded, in upper- and lower-case hex, as some servers echo it), base64 and base64url.
 * None is shorter than the secret (in UTF-16 code units): encodings only lengthen, and a string has at least as
 * many UTF-8 bytes as code units.
 */
function formsOf(secret: string): string[] {
  const bytes = Buffer.from(secret);
  return [
    secret,
    ...uriEncoded(secret),
    percentEncoded(bytes, HEX_UPPER),
    percentEncoded(bytes, HEX_LOWER),
    bytes.toString('base64'),
    bytes.toString('base64url'),
  ];
}

/**
 * encodeURIComponent's form, or none for a string that is not well-formed UTF-16 (a lone surrogate, which a
 * server may send in JSON): encodeURIComponent throws on it, and the value cannot travel URL-encoded anyway.
 */
function uriEncoded(secret: string): string[] {
  try {
    return [encodeURIComponent(secret)];
  } catch {
    return [];
  }
}

const HEX_UPPER = Buffer.from('0123456789ABCDEF');
const HEX_LOWER = Buffer.from('0123456789abcdef');
const isAlnum = (b: number) =>
  (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);

/**
 * Letters and digits as they are, every other byte `%XX` in the given hex digits. Written into one buffer:
 * appending to a string byte by byte builds a rope of one node per byte (32 bytes each), which the heap keeps.
 */
function percentEncoded(bytes: Buffer, hex: Buffer): string {
  const out = Buffer.allocUnsafe(bytes.length * 3);
  let n = 0;
  for (const b of bytes) {
    if (isAlnum(b)) out[n++] = b;
    else {
      out[n++] = 0x25;
      out[n++] = hex[b >> 4]!;
      out[n++] = hex[b & 15]!;
    }
  }
  return out.toString('latin1', 0, n);
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
