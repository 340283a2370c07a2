/**
 * The request head an intercepted request leaves with: hop-by-hop headers dropped (RFC 9110 §7.6.1), the
 * application's Authorization dropped where a credential is injected, the credential's value read from the
 * store at that moment, and the head serialised for the upstream. Used by the relay (http-relay.ts) and by the
 * proxy's absolute-form requests (proxy-forward.ts).
 */
import { isIP } from 'node:net';
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
  /** The values of every Host header the request has, in order (the Host rule, checkHost, wants exactly one). */
  hosts: string[];
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

/**
 * Headers a Connection header may not remove: Host is checked against the decided target and framing headers
 * decide where the body ends (a Content-Length dropped while its body is forwarded would desync the upstream).
 */
const NOT_NOMINABLE = new Set(['host', 'content-length', 'transfer-encoding']);

/**
 * The header names the values of a message's Connection headers list (RFC 9110 §7.6.1), lower-cased: meant for
 * this hop only, so neither a request nor a response forwards them. Host and the framing headers are never
 * among them (see NOT_NOMINABLE).
 */
export function connectionNominated(values: readonly string[]): Set<string> {
  const named = new Set<string>();
  for (const value of values)
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase();
      if (name && !NOT_NOMINABLE.has(name)) named.add(name);
    }
  return named;
}

/**
 * One pass over a flat raw header list (`[name, value, …]`, as llhttp gives it), each name lower-cased once:
 * hop-by-hop headers and those the Connection header names are dropped (they are meant for this hop only).
 */
export function scanRequestHead(raw: readonly string[], dropAuthorization: boolean): ScannedHead {
  const out: ScannedHead = {
    headers: [],
    hosts: [],
    hasBody: false,
    chunked: false,
    coded: false,
    hashed: false,
    expectContinue: false,
  };
  // Lower-cased names of the headers kept so far, and the Connection values: what they nominate is dropped
  // after the pass (a Connection header may come after the headers it names).
  const kept: string[] = [];
  const connection: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (lower === 'host') out.hosts.push(value);
    else if (lower === 'content-length') out.hasBody = true;
    else if (lower === 'transfer-encoding') {
      out.hasBody = true;
      if (value.trim().toLowerCase() === 'chunked') out.chunked = true;
      else out.coded = true;
    } else if (lower === 'expect') out.expectContinue = /^\s*100-continue\s*$/i.test(value);
    else if (lower === 'connection') connection.push(value);
    if (HOP.has(lower) || (dropAuthorization && lower === 'authorization')) continue;
    kept.push(lower);
    out.headers.push([name, value]);
  }
  if (connection.length) {
    const nominated = connectionNominated(connection);
    if (nominated.size) {
      out.headers = out.headers.filter((_, i) => !nominated.has(kept[i]!));
      for (let i = kept.length - 1; i >= 0; i--) if (nominated.has(kept[i]!)) kept.splice(i, 1);
    }
  }
  out.hashed = kept.includes('x-amz-content-sha256');
  return out;
}

/**
 * Whether an origin-form request target may carry an injected credential: a path (`/…`, but not `//…` or
 * `/\…`, which URL resolvers read as an authority: WHATWG URL treats `\` as `/` in special schemes), or `*` for
 * OPTIONS. Anything else (an absolute-form with another scheme, `//evil.example/…`) could make the upstream route
 * by an authority the policy did not bind.
 */
export function credentialTargetOk(method: string, target: string): boolean {
  if (target === '*') return method === 'OPTIONS';
  return target.startsWith('/') && target[1] !== '/' && target[1] !== '\\';
}

/** The origin-form of a request target (an absolute-form `http://host/p?q` becomes `/p?q`); null if unparseable. */
export function originForm(url: string): string | null {
  // The usual origin-form (`/…`) needs no pattern: only a target starting with a scheme is absolute-form.
  if (url.charCodeAt(0) === 0x2f || !/^https?:\/\//i.test(url)) return url;
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

/** What the Host rule says of a request: go on (with a Host to add for an HTTP/1.0 request without one), or 400. */
export type HostVerdict =
  | {
      ok: true;
      /** The Host header to add (an HTTP/1.0 request without one), else null. */
      add: string | null;
      /** The decided name the request goes to: what a SigV4 scope is derived from. */
      name: string;
    }
  | { ok: false; message: string };

/** `name` or `name:port` or `[v6]:port` of a Host header, the name lower-cased without a trailing dot. */
export function parseHostHeader(value: string): { host: string; port: number | null } | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._~!$&'()*+,;=%-]+))(?::(\d{1,5}))?$/.exec(value.trim());
  if (!m) return null;
  const port = m[3] === undefined ? null : Number(m[3]);
  if (port !== null && (port < 1 || port > 65_535)) return null;
  return { host: (m[1] ?? m[2]!).toLowerCase().replace(/\.$/, ''), port };
}

/** The Host header value naming `target` (its port left out when it is the scheme's default). */
export function hostHeaderFor(target: { host: string; port: number }, defaultPort: number): string {
  const name = target.host.includes(':') ? `[${target.host}]` : target.host;
  return target.port === defaultPort ? name : `${name}:${target.port}`;
}

/**
 * The Host rule of a request that may carry a credential: exactly one Host, naming the destination the
 * decision was made for, so that a credential never goes to a name the policy did not bind it to (an upstream
 * that routes by Host, a CDN or a shared front, would otherwise hand it to another site). The name compares
 * case-insensitively without a trailing dot; a port, when the Host gives one, must be the target's (the scheme's
 * default port standing for itself); a Host without a port is accepted for any target port, since the
 * connection goes to the decided port whatever it says and many clients omit it. `sameDecision`, for a target
 * known only by its IP (transparent plaintext, no SNI): the name the Host gives is accepted when the policy,
 * deciding for that name alone, binds the same credential to it; the IP itself is always accepted. An HTTP/1.0
 * request without Host gets the target's (`add`); an HTTP/1.1 one is refused (RFC 9112 §3.2). `values`: the
 * request's Host header values, as scanRequestHead collects them.
 */
export function checkHost(
  values: readonly string[],
  http11: boolean,
  target: { host: string; port: number },
  defaultPort: number,
  sameDecision: ((host: string) => boolean) | null,
): HostVerdict {
  if (values.length > 1) return { ok: false, message: 'the request has more than one Host header' };
  if (values.length === 0)
    return http11
      ? { ok: false, message: 'the request has no Host header' }
      : { ok: true, add: hostHeaderFor(target, defaultPort), name: target.host };
  const given = parseHostHeader(values[0]!);
  if (!given) return { ok: false, message: 'the Host header is empty or not a valid host[:port]' };
  const want = target.host.toLowerCase().replace(/\.$/, '');
  const portOk = given.port === null || given.port === target.port;
  const nameOk =
    given.host === want || (isIP(want) !== 0 && sameDecision !== null && sameDecision(given.host));
  if (nameOk && portOk) return { ok: true, add: null, name: given.host };
  // The message names the decided destination only: the Host the application sent is its own input.
  return {
    ok: false,
    message: `the Host header does not name the destination this connection was decided for (${hostHeaderFor(target, defaultPort)})`,
  };
}
