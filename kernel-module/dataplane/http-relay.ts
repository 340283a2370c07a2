/**
 * Credential injection on intercepted HTTP/1.1 (RFC 9112): a purpose-built relay, one llhttp parse per
 * direction. Node's own parser (llhttp.ts) reads the application's requests on the decrypted (or plaintext)
 * connection, so what it refuses (Content-Length with Transfer-Encoding, obs-fold, invalid header characters,
 * a head over `maxHeaderBytes`) is what node's http.Server refuses. Each request head is rewritten
 * (request-head.ts: hop-by-hop headers dropped, `Authorization: Bearer <token>` or a SigV4 signature made with
 * the temporary keys, read from the credential store at that moment, so a rotation reaches the next request on
 * the same connection) and written to an upstream connection (upstream.ts) kept for the application
 * connection and pooled after it; the body follows as it comes (chunked re-framed chunked); the response is
 * delimited by a second parser and written back. Refusals answer with a status and `x-riptides-reason`, then
 * close, and never interleave with a response in flight: 503 for an unavailable credential or a policy that
 * changed under a kept-alive connection, 400 for a malformed or pipelined request or a transfer coding other
 * than chunked, 431 for a head over the cap, 413 for a body too large to sign, 408 for a request not received
 * within `requestTimeoutMs`, 502/504 from the upstream.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { resignRequest, SigV4Error } from './aws-sigv4.ts';
import type { ConnectionRecord } from './connections.ts';
import type { Core } from './core.ts';
import type { CredentialRef, RuleIdentity } from './inputs.ts';
import { methodName, newParser, type Parser } from './llhttp.ts';
import type { ManagedDecision, Target } from './match.ts';
import {
  checkHost,
  credentialNow,
  credentialTargetOk,
  originForm,
  scanRequestHead,
  serializeRequestHead,
} from './request-head.ts';
import {
  type Framing,
  type ResponseSink,
  type Upstream,
  type UpstreamKind,
  UpstreamPool,
} from './upstream.ts';

export type { UpstreamKind } from './upstream.ts';

export interface HttpFlow {
  identity: RuleIdentity;
  credential: CredentialRef | null;
  target: Target;
  upstream: UpstreamKind;
  /** For mTLS upstreams: the allow lists the peer must satisfy, read at each handshake. */
  allowLists: () => string[][];
  record: ConnectionRecord;
  /** The port a Host without one stands for toward the application: 443 on intercepted TLS, 80 on plaintext. */
  defaultPort: number;
  /**
   * For a target known only by its IP: whether the policy, deciding for the name a Host header gives (with no
   * IP), reaches the same decision (identity, rule, credential). Absent: the Host must name the target itself.
   */
  sameDecision?: (host: string) => boolean;
  /**
   * For a kept-alive connection: its decision under the current policy when it is still the one the connection
   * was opened with (decisionKey), else null. Asked before the first request after any input change.
   */
  recheck?: () => ManagedDecision | null;
}

export const REASON = 'x-riptides-reason';

/** Counts and logs a refused request (the message names bindings and upstreams, never a value). */
export function countRefusal(core: Core, reason: string, status: number, message: string): void {
  core.metrics.requestsRefused.inc({ reason });
  core.log({ level: 'warn', event: 'request-refused', reason, status, message });
}

/** A complete refusal response that closes the connection; the message also goes in `x-riptides-reason`. */
function refusalText(status: number, message: string): string {
  const body = `${message}\n`;
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${REASON}: ${message.replace(/[^\x20-\x7e]/g, '?')}\r\n` +
    `content-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
  );
}

/**
 * A byte budget shared by every connection: bodies buffered to sign them take from it and give back when the
 * body is sent, refused or abandoned, so that many connections at once cannot hold `maxSignedBodyBytes` each.
 */
export class ByteBudget {
  private used = 0;

  constructor(readonly max: number) {}

  /** Takes `n` bytes if the budget has them; false (nothing taken) when it does not. */
  take(n: number): boolean {
    if (this.used + n > this.max) return false;
    this.used += n;
    return true;
  }

  give(n: number): void {
    this.used = Math.max(0, this.used - n);
  }

  /** Bytes held now. */
  get inUse(): number {
    return this.used;
  }
}

export class HttpRelay {
  readonly pool: UpstreamPool;
  /** Bodies buffered to sign, over every connection (relay and proxy): `maxSignedBytesTotal`. */
  readonly signingBudget: ByteBudget;
  /** Moves at every input change: a connection decides its next request again, mTLS upstreams are redialled. */
  generation = 0;

  constructor(readonly core: Core) {
    this.pool = new UpstreamPool(core);
    this.signingBudget = new ByteBudget(core.limits.maxSignedBytesTotal);
  }

  /** Relays HTTP on an intercepted connection (decrypted TLS, or plaintext) until either side closes it. */
  attach(socket: Socket, flow: HttpFlow): void {
    new RelayConnection(this, socket, flow);
  }

  /**
   * After a policy change: idle mTLS upstreams are closed and a kept-alive connection's next request dials
   * anew, so no later request reuses a connection to a peer the new policy may refuse; requests in flight finish.
   */
  resetMtls(): void {
    this.generation++;
    this.pool.retireMtls();
  }

  close(): void {
    this.generation++;
    this.pool.close();
  }
}

/** One application connection: its parser, its upstream, the exchange in flight and its deadlines. */
class RelayConnection implements ResponseSink {
  private readonly core: Core;
  private readonly parser: Parser;
  private decided: number;
  private upstream: Upstream | null = null;

  // The exchange in flight: from a complete request head to the end of both the request and the response.
  private busy = false;
  private method = '';
  private requestDone = false;
  private responseStarted = false;
  private responseDone = false;
  /** The request body is re-framed chunked upstream. */
  private chunkedOut = false;
  /** The response body is re-framed chunked toward the application. */
  private chunkedBack = false;
  /** The application connection closes after this exchange (it asked, or the response is close-delimited). */
  private closeAfter = false;
  /** HTTP/1.1 application: it can read a chunked response. */
  private http11 = true;
  /** Request bytes waiting for the upstream (a dial or a signature in progress); null when it is ready. */
  private pending: Array<string | Buffer> | null = null;
  /** A body buffered to sign it (SigV4), and its size. */
  private buffered: Buffer[] | null = null;
  private bufferedBytes = 0;
  private signing: ((body: Buffer | null) => void) | null = null;

  /** Input after a refusal (or a pipelined request) is not parsed any more. */
  private ignoring = false;
  /** A refusal held until the response in flight has been written (pipelining, a malformed next request). */
  private deferred: { status: number; reason: string; message: string } | null = null;
  private closed = false;
  private waitingUpstreamDrain = false;
  private waitingAppDrain = false;
  /**
   * Response bytes made during one upstream read (between cork and uncork) and their length: written as one
   * buffer, so one TLS record and one write, where the socket's own cork would go through writev (which copies
   * a head string and a body buffer into one, then TLS copies them again). null outside an upstream read.
   */
  private gathered: Array<string | Buffer> | null = null;
  private gatheredBytes = 0;

  /** When the current request's deadlines started: the connection, or the end of the previous exchange. */
  private started = 0;
  private timer: NodeJS.Timeout;
  private timerMs: number;
  private readonly baseMs: number;

  constructor(
    private readonly relay: HttpRelay,
    private readonly socket: Socket,
    private flow: HttpFlow,
  ) {
    this.core = relay.core;
    this.decided = relay.generation;
    const limits = this.core.limits;
    this.parser = newParser('request', limits.maxHeaderBytes, {
      headersComplete: (maj, min, headers, method, url, _s, _m, upgrade, keepAlive) =>
        this.onHead(maj, min, headers, method, url, upgrade, keepAlive),
      body: (chunk) => this.onBody(chunk),
      messageComplete: () => this.onRequestEnd(),
    });
    this.baseMs = Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs);
    this.timerMs = this.baseMs;
    this.started = performance.now();
    this.timer = setTimeout(() => this.onDeadline(), this.timerMs);
    this.timer.unref();
    socket.on('data', (d: Buffer) => this.onData(d));
    // The application's end of input (TLS here is half-open): a request it had not finished never will be, so
    // what it holds (a body buffered to sign, an upstream) goes at once rather than at the request deadline.
    socket.on('end', () => {
      if (this.busy && !this.requestDone) socket.destroy();
      else if (!this.busy) socket.end();
    });
    socket.on('error', () => socket.destroy());
    socket.once('close', () => this.onClose());
  }

  // ── the application side ─────────────────────────────────────────────────────────────────────────────────

  private onData(d: Buffer): void {
    if (this.ignoring) return;
    const up = this.busy ? this.upstream : null;
    up?.socket.cork();
    let r: ReturnType<Parser['execute']>;
    try {
      r = this.parser.execute(d);
      // llhttp stops after the head of an upgrade request; the bytes after it are the next message.
      while (typeof r === 'number' && r < d.length && !this.ignoring) {
        d = d.subarray(r);
        r = this.parser.execute(d);
      }
    } catch (e) {
      // A callback threw inside the parser: this connection is lost, the process is not.
      this.core.log({
        level: 'warn',
        event: 'relay-error',
        detail: (e as Error).message,
        pid: this.flow.record.pid,
      });
      this.socket.destroy();
      return;
    } finally {
      up?.socket.uncork();
    }
    if (typeof r !== 'number' && !this.ignoring) {
      const tooLarge = r.code === 'HPE_HEADER_OVERFLOW';
      this.refuse(
        tooLarge ? 431 : 400,
        tooLarge ? 'header-too-large' : 'bad-request',
        `malformed request (${r.code})`,
        // Past the end of the request in flight, the error is the next one's: it waits for the response.
        this.requestDone,
      );
    }
  }

  private onHead(
    maj: number,
    min: number,
    raw: string[],
    methodIndex: number,
    url: string,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    if (this.ignoring) return 1;
    if (this.busy) {
      this.refuse(
        400,
        'pipelining',
        'pipelined requests are not supported: send one request at a time',
        true,
      );
      return 1;
    }
    const method = methodName(methodIndex) ?? '';
    this.busy = true;
    this.method = method;
    this.requestDone = false;
    this.responseStarted = false;
    this.responseDone = false;
    this.chunkedBack = false;
    this.closeAfter = !keepAlive;
    this.http11 = maj === 1 && min >= 1;
    if (!method) {
      this.refuse(501, 'bad-request', 'the request method is not supported by the relay');
      return 1;
    }
    if (upgrade && method === 'CONNECT') {
      this.refuse(400, 'bad-request', 'CONNECT is not relayed inside an intercepted connection');
      return 1;
    }
    // The inputs changed since this connection's decision was last checked (every change moves generation):
    // a request goes on only where the policy in force would send it, with the credential it would inject.
    if (this.flow.recheck && this.decided !== this.relay.generation) {
      const now = this.flow.recheck();
      if (!now) {
        this.refuse(
          503,
          'policy-changed',
          'the policy for this connection changed since it was opened: open a new connection',
        );
        return 1;
      }
      this.flow = { ...this.flow, identity: now.identity, credential: now.credential };
      this.decided = this.relay.generation;
    }
    const ref = this.flow.credential;
    // RFC 9110 §9.3.8: a TRACE response echoes the request, credentials included, back to the application.
    if (ref && method === 'TRACE') {
      this.refuse(
        405,
        'trace',
        'TRACE is not relayed where a credential is injected: its response echoes it',
      );
      return 1;
    }
    const head = scanRequestHead(raw, ref !== null);
    if (head.coded) {
      this.refuse(400, 'transfer-coding', 'only the chunked transfer coding is forwarded');
      return 1;
    }
    const flow = this.flow;
    const host = checkHost(head.hosts, this.http11, flow.target, flow.defaultPort, flow.sameDecision ?? null);
    if (!host.ok) {
      // Without a credential only a missing Host is refused: nothing the policy binds goes anywhere.
      if (ref || head.hosts.length === 0) {
        this.refuse(400, 'host', host.message);
        return 1;
      }
    } else if (host.add) head.headers.push(['Host', host.add]);
    // An absolute-form target names its own authority (RFC 9112 §3.2.2): held to the same rule as Host.
    const authority = url.charCodeAt(0) === 0x2f ? undefined : /^https?:\/\/([^/?#]*)/i.exec(url)?.[1];
    if (ref && authority !== undefined) {
      const named = checkHost(
        [authority.replace(/^[^@]*@/, '')],
        true,
        flow.target,
        flow.defaultPort,
        flow.sameDecision ?? null,
      );
      if (!named.ok) {
        this.refuse(400, 'host', `request target: ${named.message}`);
        return 1;
      }
    }
    const scopeHost = host.ok ? host.name : flow.target.host;
    const target = originForm(url);
    if (target === null) {
      this.refuse(400, 'bad-request', 'the request target is not a valid URL');
      return 1;
    }
    if (ref && !credentialTargetOk(method, target)) {
      this.refuse(
        400,
        'bad-request',
        'a credential goes only with a request target that is a path (or * for OPTIONS)',
      );
      return 1;
    }
    this.chunkedOut = head.chunked;
    if (!ref) {
      this.dispatch(serializeRequestHead(method, target, this.framed(head.headers)));
    } else {
      const found = credentialNow(this.core, ref);
      if (!found.ok) {
        this.refuse(503, 'credential-unavailable', found.message);
        return 1;
      }
      const value = found.value;
      if (value.kind === 'bearer') {
        head.headers.push(['Authorization', `Bearer ${value.token}`]);
        this.injected(ref);
        this.dispatch(serializeRequestHead(method, target, this.framed(head.headers)));
      } else {
        // The signature covers the body's hash: buffered (capped) unless the application sent it.
        const buffer = head.hasBody && !head.hashed;
        if (buffer) {
          this.buffered = [];
          this.bufferedBytes = 0;
          this.chunkedOut = false;
        }
        this.pending = [];
        this.signing = (body) => {
          this.signing = null;
          const headers = head.headers;
          if (body && !headers.some(([n]) => n.toLowerCase() === 'content-length'))
            headers.push(['Content-Length', String(body.length)]);
          resignRequest({ method, target, headers, ...(body ? { body } : {}) }, value, {
            date: new Date(),
            scopeHost,
          }).then(
            (signed) => {
              this.releaseBudget();
              if (this.closed || !this.busy) return;
              if (body) this.pending!.push(body);
              this.injected(ref);
              this.dispatch(serializeRequestHead(method, signed.target, this.framed(signed.headers)));
            },
            (e: Error) => {
              this.releaseBudget();
              if (this.busy)
                this.refuse(
                  e instanceof SigV4Error ? 400 : 502,
                  'sigv4',
                  `cannot re-sign the request: ${e.message}`,
                );
            },
          );
        };
        if (!buffer) this.signing(null);
      }
    }
    if (head.expectContinue && head.hasBody && this.http11 && !this.ignoring)
      this.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
    return 0;
  }

  /** Gives the bytes of a body buffered to sign back to the shared budget (once; any later call is a no-op). */
  private releaseBudget(): void {
    this.relay.signingBudget.give(this.bufferedBytes);
    this.bufferedBytes = 0;
  }

  private injected(ref: CredentialRef): void {
    this.core.metrics.injected(ref);
    if (this.flow.record.binding !== ref.name)
      this.core.table.update(this.flow.record, { binding: ref.name });
  }

  /** The headers with the body's framing upstream: chunked stays chunked (the body is re-framed as it comes). */
  private framed(headers: Array<[string, string]>): Array<[string, string]> {
    if (this.chunkedOut) headers.push(['Transfer-Encoding', 'chunked']);
    return headers;
  }

  private onBody(chunk: Buffer): void {
    if (this.ignoring || !this.busy) return;
    if (this.buffered) {
      if (this.bufferedBytes + chunk.length > this.core.limits.maxSignedBodyBytes) {
        this.refuse(
          413,
          'body-too-large',
          `request body over ${this.core.limits.maxSignedBodyBytes} bytes cannot be signed`,
        );
      } else if (!this.relay.signingBudget.take(chunk.length)) {
        this.refuse(
          503,
          'signing-budget',
          'the data plane is buffering too many request bodies to sign: retry later',
        );
      } else {
        this.bufferedBytes += chunk.length;
        this.buffered.push(chunk);
      }
      return;
    }
    if (this.chunkedOut) {
      this.toUpstream(`${chunk.length.toString(16)}\r\n`);
      this.toUpstream(chunk);
      this.toUpstream('\r\n');
    } else this.toUpstream(chunk);
  }

  private onRequestEnd(): void {
    if (this.ignoring || !this.busy) return;
    this.requestDone = true;
    if (this.signing) {
      const body = this.buffered ? Buffer.concat(this.buffered, this.bufferedBytes) : null;
      // The budget stays taken until the signer is done with the body (releaseBudget).
      this.buffered = null;
      this.signing(body);
      return;
    }
    if (this.chunkedOut) this.toUpstream('0\r\n\r\n');
    if (this.responseDone) this.exchangeDone();
  }

  /** Request bytes toward the upstream: queued while it is not ready, else written with backpressure. */
  private toUpstream(data: string | Buffer): void {
    if (this.pending) {
      this.pending.push(data);
      // One read's worth is queued at most: reading resumes once the upstream has it.
      this.socket.pause();
      return;
    }
    const up = this.upstream!;
    if (!up.socket.write(data as Buffer, 'latin1') && !this.waitingUpstreamDrain) {
      this.waitingUpstreamDrain = true;
      this.socket.pause();
      up.socket.once('drain', () => {
        this.waitingUpstreamDrain = false;
        if (!this.ignoring) this.socket.resume();
      });
    }
  }

  // ── the upstream side ────────────────────────────────────────────────────────────────────────────────────

  /** Writes the request head, then whatever body came meanwhile, on this connection's upstream (or a new one). */
  private dispatch(head: string): void {
    const queue = this.pending ? [head, ...this.pending] : [head];
    this.pending = null;
    let up = this.upstream;
    if (up && (!up.reusable(performance.now()) || !this.relay.pool.current(up))) {
      up.socket.destroy();
      up = this.upstream = null;
    }
    if (up) {
      this.start(up, queue);
      return;
    }
    const spec = { ...this.flow, kind: this.flow.upstream };
    const key = this.relay.pool.key(spec);
    const pooled = this.relay.pool.take(key);
    if (pooled) {
      this.start(pooled, queue);
      return;
    }
    this.pending = queue;
    void this.relay.pool.dial(spec, key).then((r) => {
      if (this.closed || !this.busy) {
        if (r.ok) this.relay.pool.give(r.upstream);
        return;
      }
      if (!r.ok) return this.upstreamFailed(r.timedOut ? 504 : 502, r.message);
      const queued = this.pending!;
      this.pending = null;
      this.start(r.upstream, queued);
    });
  }

  private start(up: Upstream, queue: Array<string | Buffer>): void {
    this.upstream = up;
    up.begin(this, this.method === 'HEAD');
    up.socket.cork();
    for (const d of queue) this.toUpstream(d);
    up.socket.uncork();
    // Reading stopped while body bytes waited for the upstream.
    if (!this.waitingUpstreamDrain && !this.ignoring) this.socket.resume();
  }

  responseHead(status: number, reason: string, headers: string[], framing: Framing, codings: string): void {
    this.responseStarted = true;
    let head = `HTTP/1.1 ${status} ${reason}\r\n`;
    for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    if (framing === 'chunked' && this.http11) {
      this.chunkedBack = true;
      head += `Transfer-Encoding: ${codings}\r\n`;
    } else if (framing === 'chunked' || framing === 'close') this.closeAfter = true;
    if (this.closeAfter) head += 'Connection: close\r\n';
    // HTTP/1.0 closes after each response unless both sides say keep-alive (RFC 9112 §9.3): it asked, so say so.
    else if (!this.http11) head += 'Connection: keep-alive\r\n';
    this.toApp(`${head}\r\n`);
  }

  responseBody(chunk: Buffer): void {
    if (this.chunkedBack) {
      this.toApp(`${chunk.length.toString(16)}\r\n`);
      this.toApp(chunk);
      this.toApp('\r\n');
    } else this.toApp(chunk);
  }

  responseEnd(): void {
    if (this.chunkedBack) this.toApp('0\r\n\r\n');
    this.responseDone = true;
    if (this.requestDone) {
      this.exchangeDone();
      return;
    }
    // The upstream answered before the request body ended: what is left of it has nowhere to go.
    this.upstream?.abort();
    this.upstream = null;
    this.busy = false;
    this.ignoring = true;
    this.flushApp();
    this.socket.end();
  }

  upstreamFailed(status: 502 | 504, message: string): void {
    this.upstream = null;
    if (!this.busy || this.closed) return;
    if (this.responseStarted) this.socket.destroy();
    else this.refuse(status, 'upstream', message);
  }

  cork(): void {
    this.gathered = [];
    this.gatheredBytes = 0;
  }

  uncork(): void {
    this.flushApp();
    this.gathered = null;
  }

  /** Response bytes toward the application: gathered during an upstream read, else written now. */
  private toApp(data: string | Buffer): void {
    if (this.gathered) {
      this.gathered.push(data);
      // Strings here are latin1 (header text as llhttp decoded it, chunk framing): one byte per character.
      this.gatheredBytes += data.length;
    } else this.writeApp(data);
  }

  /** Writes what the current upstream read gathered, as one buffer; before anything ends the application side. */
  private flushApp(): void {
    const parts = this.gathered;
    // Destroyed during the read (a response cut short after its head): what was gathered has nowhere to go.
    if (!parts?.length || this.socket.destroyed) return;
    const bytes = this.gatheredBytes;
    this.gathered = [];
    this.gatheredBytes = 0;
    if (parts.length === 1) {
      this.writeApp(parts[0]!);
      return;
    }
    const out = Buffer.allocUnsafe(bytes);
    let at = 0;
    for (const p of parts) at += typeof p === 'string' ? out.write(p, at, 'latin1') : p.copy(out, at);
    this.writeApp(out);
  }

  /** Writes to the application with backpressure: the upstream is paused until the application drains. */
  private writeApp(data: string | Buffer): void {
    if (!this.socket.write(data as Buffer, 'latin1') && !this.waitingAppDrain && this.upstream) {
      const up = this.upstream;
      this.waitingAppDrain = true;
      up.socket.pause();
      this.socket.once('drain', () => {
        this.waitingAppDrain = false;
        up.socket.resume();
      });
    }
  }

  // ── exchange end, refusals, deadlines ────────────────────────────────────────────────────────────────────

  private exchangeDone(): void {
    this.busy = false;
    // The response goes out before anything that follows it (the end of the connection, a held refusal).
    this.flushApp();
    if (this.closeAfter) {
      // The response said the connection closes: a refusal held for a pipelined request would follow it.
      this.deferred = null;
      this.ignoring = true;
      this.socket.end();
      return;
    }
    if (this.deferred) {
      const d = this.deferred;
      this.deferred = null;
      this.refuse(d.status, d.reason, d.message);
      return;
    }
    this.arm();
  }

  /**
   * Answers `status` with the reason and closes the connection; nothing more is read. `afterCurrent`: the
   * refusal is about the next request, and waits for the end of the exchange in flight so that the two never
   * interleave. A refusal of the request in flight once its response has begun can only close the connection.
   */
  private refuse(status: number, reason: string, message: string, afterCurrent = false): void {
    this.ignoring = true;
    if (afterCurrent && this.busy) {
      this.deferred ??= { status, reason, message };
      this.socket.pause();
      return;
    }
    countRefusal(this.core, reason, status, message);
    this.signing = null;
    this.buffered = null;
    this.releaseBudget();
    this.pending = null;
    if (this.busy && this.upstream) {
      // Part of this request may have been written upstream: that connection cannot carry another.
      this.upstream.abort();
      this.upstream = null;
    }
    const answerable = !(this.busy && this.responseStarted);
    this.busy = false;
    if (answerable && this.socket.writable) this.socket.end(refusalText(status, message));
    else this.socket.destroy();
  }

  /** Starts the deadlines of the next request: its head within `headersTimeoutMs`, all of it within `requestTimeoutMs`. */
  private arm(): void {
    this.started = performance.now();
    if (this.timerMs === this.baseMs) this.timer.refresh();
    else this.reschedule(this.baseMs);
  }

  private reschedule(ms: number): void {
    clearTimeout(this.timer);
    this.timerMs = ms;
    this.timer = setTimeout(() => this.onDeadline(), ms);
    this.timer.unref();
  }

  private onDeadline(): void {
    if (this.closed) return;
    const limits = this.core.limits;
    const elapsed = performance.now() - this.started;
    if (this.ignoring && !this.busy) {
      // Closing after a refusal or a last response, and the application keeps its side open.
      this.socket.destroy();
    } else if (!this.busy) {
      // No complete head yet (slowloris, or an idle kept-alive connection): closed without an answer.
      if (elapsed < limits.headersTimeoutMs) {
        this.reschedule(limits.headersTimeoutMs - elapsed);
        return;
      }
      this.core.metrics.requestsRefused.inc({ reason: 'headers-timeout' });
      this.core.log({
        level: 'warn',
        event: 'request-refused',
        reason: 'headers-timeout',
        pid: this.flow.record.pid,
      });
      this.socket.destroy();
    } else if (!this.requestDone) {
      // The body is still coming (slowloris body; a body buffered to sign): the request's overall deadline.
      if (elapsed < limits.requestTimeoutMs) {
        this.reschedule(limits.requestTimeoutMs - elapsed);
        return;
      }
      this.refuse(
        408,
        'request-timeout',
        `the request was not received within ${limits.requestTimeoutMs} ms`,
      );
    }
    // A request received and waiting for its response is bounded by the upstream's deadline (idleTimeoutMs).
  }

  private onClose(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.parser.free();
    this.buffered = null;
    // Still buffering: the signer never runs, so its bytes go back now (a running signer gives them back itself).
    if (this.signing) {
      this.signing = null;
      this.releaseBudget();
    }
    const up = this.upstream;
    this.upstream = null;
    if (!up) return;
    // Paused for this application's drain, which will never come now: such a connection is never pooled.
    if (this.busy || this.waitingAppDrain) up.abort();
    else this.relay.pool.give(up);
  }
}
