/**
 * The request head an intercepted request leaves with: hop-by-hop headers dropped (RFC 9110 §7.6.1), the
 * application's Authorization dropped where a credential is injected, the credential's value read from the
 * store at that moment, and the head serialised for the upstream. Used by the relay (http-relay.ts) and by the
 * proxy's absolute-form requests (proxy-forward.ts).
 */
import type { Core } from './core.ts';
import type { CredentialRef, CredentialValue } from './inputs.ts';

/** Hop-by-hop headers and proxy credentials: never forwarded, in either direction. */
export const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
]);

export interface ScannedHead {
  /** The headers that leave, in order, as `[name, value]`. */
  headers: Array<[string, string]>;
  /** A body follows (Content-Length or Transfer-Encoding). */
  hasBody: boolean;
  /** Framed with chunked (re-framed the same way upstream). */
  chunked: boolean;
  /** A transfer coding other than chunked: refused, since the body is re-framed and would lose it. */
  coded: boolean;
  /** The application sent x-amz-content-sha256: the body need not be buffered to sign it. */
  hashed: boolean;
  /** `Expect: 100-continue`: the application waits for a 100 before it sends the body. */
  expectContinue: boolean;
}

/** One pass over a flat raw header list (`[name, value, …]`, as llhttp gives it). */
export function scanRequestHead(raw: readonly string[], dropAuthorization: boolean): ScannedHead {
  const out: ScannedHead = {
    headers: [],
    hasBody: false,
    chunked: false,
    coded: false,
    hashed: false,
    expectContinue: false,
  };
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (lower === 'content-length') out.hasBody = true;
    else if (lower === 'transfer-encoding') {
      out.hasBody = true;
      if (value.trim().toLowerCase() === 'chunked') out.chunked = true;
      else out.coded = true;
    } else if (lower === 'expect') out.expectContinue = /^\s*100-continue\s*$/i.test(value);
    if (HOP.has(lower) || (dropAuthorization && lower === 'authorization')) continue;
    if (lower === 'x-amz-content-sha256') out.hashed = true;
    out.headers.push([name, value]);
  }
  return out;
}

/** The origin-form of a request target (an absolute-form `http://host/p?q` becomes `/p?q`); null if unparseable. */
export function originForm(url: string): string | null {
  if (!/^https?:\/\//i.test(url)) return url;
  try {
    const u = new URL(url);
    return `${u.pathname}${u.search}`;
  } catch {
    return null;
  }
}

export type CredentialFound = { ok: true; value: CredentialValue } | { ok: false; message: string };

/**
 * The value of a binding's credential now, or why it cannot be injected (not loaded, expired, another kind).
 * The message names the binding, never a value.
 */
export function credentialNow(core: Core, ref: CredentialRef): CredentialFound {
  const found = core.inputs.credential(ref.hash);
  const value = found.state === 'loaded' ? found.value : null;
  if (value && value.kind === ref.kind) return { ok: true, value };
  const why = !value
    ? found.state === 'expired'
      ? 'expired'
      : 'not loaded'
    : `kind ${value.kind} does not match ${ref.kind}`;
  return { ok: false, message: `credential for binding ${ref.name} is unavailable (${why})` };
}

/** An HTTP/1.1 request head, CRLF-terminated (RFC 9112 §3); names and values are already valid field text. */
export function serializeRequestHead(
  method: string,
  target: string,
  headers: ReadonlyArray<readonly [string, string]>,
): string {
  let head = `${method} ${target} HTTP/1.1\r\n`;
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`;
  return `${head}\r\n`;
}
