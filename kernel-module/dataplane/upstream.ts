/**
 * The upstream side of intercepted HTTP/1.1: one kept-alive connection made by dial.ts (plain, TLS origination
 * or mTLS, exactly as an unintercepted connection is made), whose responses a second llhttp parser (RESPONSE)
 * delimits (RFC 9112 §6.3: HEAD, 1xx, 204/304, Content-Length, chunked, close-delimited), and a small pool of
 * idle ones shared between application connections to the same upstream.
 */
import type { Socket } from 'node:net';
import type { Core } from './core.ts';
import { dialMtls, dialPlain, dialTls } from './dial.ts';
import type { RuleIdentity } from './inputs.ts';
import { newParser, type Parser } from './llhttp.ts';
import type { Target } from './match.ts';
import { connectionNominated, HOP } from './request-head.ts';

export type UpstreamKind = 'plain' | 'tls' | 'mtls';

/** How the upstream framed the response body: by length, chunked, until it closes, or no body at all. */
export type Framing = 'length' | 'chunked' | 'close' | 'none';

/** Where one exchange's response goes. */
export interface ResponseSink {
  /** `headers` flat (`[name, value, …]`) without hop-by-hop ones; `codings` is the Transfer-Encoding sent, or ''. */
  responseHead(status: number, reason: string, headers: string[], framing: Framing, codings: string): void;
  /** A piece of the body, de-chunked (a view of the bytes read). */
  responseBody(chunk: Buffer): void;
  responseEnd(): void;
  /** The exchange failed upstream (the connection is gone): 504 for a deadline, else 502. */
  upstreamFailed(status: 502 | 504, message: string): void;
  /** Around each read of the upstream, so that what one read produces leaves in one write. */
  cork(): void;
  uncork(): void;
}

/** What an upstream connection is made for: the pool key covers all of it. */
export interface UpstreamSpec {
  kind: UpstreamKind;
  identity: RuleIdentity;
  target: Target;
  allowLists: () => string[][];
}

/** Upstream response heads are larger than requests' in practice (cookies, CSPs): node's client allows 16 KiB. */
const MAX_RESPONSE_HEAD = 64 * 1024;
/**
 * An idle connection older than this is not reused: servers close idle keep-alive connections after a few
 * seconds (node 5 s) and a request written as they do is lost; undici's default is the same 4 s.
 */
const REUSE_IDLE_MS = 4_000;

export class Upstream {
  private readonly parser: Parser;
  private sink: ResponseSink | null = null;
  private headRequest = false;
  /** The current message is a 1xx: neither forwarded nor the end of the exchange. */
  private informational = false;
  private keepAlive = true;
  private idleSince = 0;
  /**
   * Bytes came that no request asked for (after a complete response, or a head or body with no exchange): the
   * connection's message stream no longer lines up with requests, so it is closed and never reused.
   */
  private stray = false;
  /**
   * The response head's deadline of the exchange in flight (`responseHeadTimeoutMs`): one timer per connection,
   * re-armed by each exchange (a refresh, not a new timer per request); it fires idle when no head is awaited.
   */
  private headTimer: NodeJS.Timeout | null = null;
  private awaitingHead = false;
  /** Set while in the pool: removes it from there when the socket closes. */
  onIdleClose: (() => void) | null = null;

  constructor(
    readonly socket: Socket,
    readonly key: string,
    private readonly label: string,
    private readonly idleTimeoutMs: number,
    /** The pool's mTLS epoch when it was dialled: an mTLS connection from before a policy change is not reused. */
    readonly epoch: number,
    private readonly headTimeoutMs: number = idleTimeoutMs,
  ) {
    this.idleSince = performance.now();
    this.parser = newParser('response', MAX_RESPONSE_HEAD, {
      headersComplete: (_maj, _min, headers, _m, _u, status, message, _upgrade, keepAlive) =>
        this.onHead(headers, status, message, keepAlive),
      body: (chunk) => {
        if (this.sink) this.sink.responseBody(chunk);
        else this.stray = true;
      },
      messageComplete: () => this.onComplete(),
      messageBegin: () => {
        if (!this.sink) this.stray = true;
      },
    });
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('end', () => {
      const err = this.parser.finish();
      if (err) this.fail(502, `response cut short (${err.code})`);
      else if (this.sink) this.fail(502, 'the upstream closed the connection before responding');
    });
    socket.on('error', (e) => this.fail(502, e.message));
    socket.on('close', () => {
      this.stopHeadDeadline();
      if (this.headTimer) clearTimeout(this.headTimer);
      this.fail(502, 'the upstream closed the connection');
      this.parser.free();
      this.onIdleClose?.();
    });
    // Between exchanges the idle kept connection is dropped; during one, the response must keep coming.
    socket.setTimeout(idleTimeoutMs, () =>
      this.fail(504, `no response from the upstream within ${idleTimeoutMs} ms`),
    );
  }

  /** Whether a new exchange may be written on this connection now. */
  reusable(now: number): boolean {
    // A paused socket waits for a drain of an application that may be gone: nobody would resume it.
    return (
      !this.socket.destroyed &&
      !this.stray &&
      !this.socket.isPaused() &&
      this.keepAlive &&
      !this.sink &&
      now - this.idleSince < REUSE_IDLE_MS
    );
  }

  /** In the pool: closed once it may no longer be reused, rather than held until the upstream closes it. */
  park(): void {
    this.socket.setTimeout(REUSE_IDLE_MS);
  }

  /** Out of the pool, about to carry an exchange. */
  unpark(): void {
    this.onIdleClose = null;
    this.socket.setTimeout(this.idleTimeoutMs);
  }

  /** Starts an exchange: what the socket answers next goes to `sink`. `head`: the request's method is HEAD. */
  begin(sink: ResponseSink, head: boolean): void {
    this.sink = sink;
    this.headRequest = head;
    // The idle timeout is reset by every byte: a head trickled a byte at a time would never trip it.
    this.awaitingHead = true;
    if (this.headTimer) this.headTimer.refresh();
    else {
      const ms = this.headTimeoutMs;
      this.headTimer = setTimeout(() => {
        if (this.awaitingHead) this.fail(504, `no response head from the upstream within ${ms} ms`);
      }, ms);
      this.headTimer.unref();
    }
  }

  private stopHeadDeadline(): void {
    this.awaitingHead = false;
  }

  /** Abandons the exchange in flight (the application went away or its request failed): the connection too. */
  abort(): void {
    this.sink = null;
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    const sink = this.sink;
    if (!sink) {
      // Bytes from an idle upstream belong to no request: it cannot be kept.
      this.socket.destroy();
      return;
    }
    sink.cork();
    try {
      const r = this.parser.execute(d);
      if (typeof r !== 'number') this.fail(502, `invalid response (${r.code})`);
      else if (r < d.length && this.sink) this.fail(502, 'the upstream switched protocols');
    } catch (e) {
      // A callback threw inside the parser: this exchange is lost, the process is not.
      this.fail(502, `relay error: ${(e as Error).message}`);
    }
    // What followed the response in this read belongs to no request: closed before anything reuses it (the
    // exchange that just ended may already have given it back to the pool; closing removes it from there).
    if (this.stray) this.fail(502, 'the upstream sent bytes after its response');
    sink.uncork();
  }

  private onHead(headers: string[], status: number, message: string, keepAlive: boolean): number {
    this.keepAlive = keepAlive;
    const sink = this.sink;
    if (!sink) {
      this.stray = true;
      return 0;
    }
    // 1xx (100 Continue, 103 Early Hints): not forwarded; the final response follows on the same message stream.
    this.informational = status < 200;
    if (this.informational) return 0;
    this.stopHeadDeadline();
    let out: string[] = [];
    let codings = '';
    let length = false;
    let connection: string[] | null = null;
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const lower = headers[i]!.toLowerCase();
      if (lower === 'transfer-encoding')
        codings = codings ? `${codings}, ${headers[i + 1]}` : headers[i + 1]!;
      else if (lower === 'content-length') length = true;
      else if (lower === 'connection') {
        connection ??= [];
        connection.push(headers[i + 1]!);
      }
      if (!HOP.has(lower)) out.push(headers[i]!, headers[i + 1]!);
    }
    // Headers the upstream's Connection names are for its hop only (RFC 9110 §7.6.1), as on requests.
    if (connection) {
      const nominated = connectionNominated(connection);
      if (nominated.size) {
        const kept: string[] = [];
        for (let i = 0; i + 1 < out.length; i += 2)
          if (!nominated.has(out[i]!.toLowerCase())) kept.push(out[i]!, out[i + 1]!);
        out = kept;
      }
    }
    // A transfer coding other than chunked (gzip, …) is not relayed: the relay re-frames bodies and would drop
    // it, and the application would read coded bytes as the body (found by review). Servers use
    // Content-Encoding for that; such a response is refused as one the data plane cannot carry.
    // Chunked only when it is the final coding as llhttp reads the list (it reads `chunked,` as not chunked, and
    // frames that body by the connection's close): any other coding, or a list llhttp does not read as
    // chunked, is refused. A response without a body has nothing coded.
    const bodied = !(this.headRequest || status === 204 || status === 304);
    const chunked = /(^|,)\s*chunked\s*$/i.test(codings);
    const other = codings.split(',').some((c) => c.trim() !== '' && c.trim().toLowerCase() !== 'chunked');
    if (bodied && codings !== '' && (other || !chunked)) {
      this.fail(
        502,
        `the upstream's transfer coding ${JSON.stringify(codings)} is not relayed (only chunked)`,
      );
      return 0;
    }
    const framing: Framing = !bodied ? 'none' : chunked ? 'chunked' : length ? 'length' : 'close';
    if (framing === 'close') this.keepAlive = false;
    sink.responseHead(status, message, out, framing, codings);
    return this.headRequest ? 1 : 0;
  }

  private onComplete(): void {
    if (this.informational) {
      this.informational = false;
      return;
    }
    const sink = this.sink;
    if (!sink) return;
    this.sink = null;
    this.idleSince = performance.now();
    if (!this.keepAlive) this.socket.destroy();
    sink.responseEnd();
  }

  private fail(status: 502 | 504, message: string): void {
    this.stopHeadDeadline();
    const sink = this.sink;
    this.sink = null;
    this.socket.destroy();
    sink?.upstreamFailed(status, `upstream ${this.label}: ${message}`);
  }
}

/** Kept idle connections per key; at most this many per key, and this many keys (the oldest goes first). */
const MAX_IDLE_PER_KEY = 256;
const MAX_KEYS = 1024;

export class UpstreamPool {
  private readonly idle = new Map<string, Upstream[]>();
  private closed = false;
  /** Moves at each mTLS retirement (a policy change). */
  private mtlsEpoch = 0;

  constructor(private readonly core: Core) {}

  /**
   * The pool key of a spec: kind, address, port, TLS name, the identity (a connection carries one identity's
   * requests, never another's, whatever the kind) and, for mTLS, its allow lists (a connection verified against
   * other lists is not reused).
   */
  key(spec: UpstreamSpec): string {
    const t = spec.target;
    const allow = spec.kind === 'mtls' ? ` ${JSON.stringify(spec.allowLists())}` : '';
    return `${spec.kind} ${t.ip ?? t.host} ${t.port} ${t.host} ${spec.identity.spiffeId}${allow}`;
  }

  /** Whether `u` may carry another request under the policy in force (an mTLS one from before a change may not). */
  current(u: Upstream): boolean {
    return u.epoch === this.mtlsEpoch || !u.key.startsWith('mtls ');
  }

  /** An idle connection for `key` that may be reused now, else null. */
  take(key: string): Upstream | null {
    const list = this.idle.get(key);
    const now = performance.now();
    while (list?.length) {
      const u = list.pop()!;
      u.unpark();
      if (u.reusable(now)) return u;
      u.socket.destroy();
    }
    return null;
  }

  /** Keeps a connection whose exchange is over for the next application connection, or closes it. */
  give(u: Upstream): void {
    if (this.closed || !this.current(u) || !u.reusable(performance.now())) return void u.socket.destroy();
    let list = this.idle.get(u.key);
    if (!list) {
      if (this.idle.size >= MAX_KEYS) this.drop(this.idle.keys().next().value!);
      list = [];
      this.idle.set(u.key, list);
    }
    if (list.length >= MAX_IDLE_PER_KEY) return void u.socket.destroy();
    list.push(u);
    u.park();
    u.onIdleClose = () => {
      const i = list.indexOf(u);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0 && this.idle.get(u.key) === list) this.idle.delete(u.key);
    };
  }

  /**
   * After a policy change: idle mTLS connections are closed, and those in use are not kept after their exchange,
   * so no later request reuses a connection to a peer the new policy may refuse.
   */
  retireMtls(): void {
    this.mtlsEpoch++;
    for (const key of [...this.idle.keys()]) if (key.startsWith('mtls ')) this.drop(key);
  }

  /** Closes every idle connection; one given back later (its application connection closing) is closed too. */
  close(): void {
    this.closed = true;
    for (const key of [...this.idle.keys()]) this.drop(key);
  }

  private drop(key: string): void {
    const list = this.idle.get(key) ?? [];
    this.idle.delete(key);
    for (const u of list) {
      u.onIdleClose = null;
      u.socket.destroy();
    }
  }

  /**
   * A new connection for `spec` made by dial.ts, or why not (a message naming the upstream, never a value);
   * `timedOut` when a deadline passed (answered 504 rather than 502).
   */
  async dial(
    spec: UpstreamSpec,
    key: string,
  ): Promise<{ ok: true; upstream: Upstream } | { ok: false; message: string; timedOut: boolean }> {
    const core = this.core;
    const t = spec.target;
    const target = { host: t.host, ip: t.ip ?? t.host, port: t.port };
    const epoch = this.mtlsEpoch;
    const r =
      spec.kind === 'plain'
        ? await dialPlain(core, target)
        : spec.kind === 'tls'
          ? await dialTls(core, target)
          : await dialMtls(core, spec.identity, target, spec.allowLists, { waitForSvid: true });
    const label = `${t.host}:${t.port}`;
    if (r.ok)
      return {
        ok: true,
        upstream: new Upstream(
          r.socket,
          key,
          label,
          core.limits.idleTimeoutMs,
          epoch,
          core.limits.responseHeadTimeoutMs,
        ),
      };
    if (spec.kind === 'mtls') core.metrics.handshakesFailed.inc({ direction: 'outbound', reason: r.reason });
    return {
      ok: false,
      message: `upstream ${label}: ${spec.kind === 'mtls' ? `mTLS refused (${r.reason}): ${r.detail}` : r.detail}`,
      timedOut: /timed out/.test(r.detail),
    };
  }
}
