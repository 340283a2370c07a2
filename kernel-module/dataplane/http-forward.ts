/**
 * Credential injection on intercepted HTTP/1.1: node's own HTTP parser (llhttp, through an http.Server that
 * never listens) reads the application's requests on the decrypted (or plaintext) connection: keep-alive and
 * chunked bodies as node handles them, a request with both Content-Length and Transfer-Encoding (smuggling)
 * refused by llhttp with 400, pipelined requests refused with 400 and the connection closed after the response
 * in progress. Each request leaves with `Authorization: Bearer <token>` or a SigV4 signature made with the
 * temporary keys, read from the credential store at that moment (a rotation reaches the next request on the
 * same connection); an unavailable credential fails the request with 503 and an `x-riptides-reason` header.
 * Upstream requests go through undici (its llhttp parser and connection pools; measured faster than node's
 * http client here, see README), over connections dial.ts makes: plain, TLS origination, mTLS per identity.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Dispatcher, Pool } from 'undici';
import { resignRequest, SigV4Error } from './aws-sigv4.ts';
import type { ConnectionRecord } from './connections.ts';
import type { Core } from './core.ts';
import { dialMtls, dialPlain, dialTls } from './dial.ts';
import type { CredentialRef, RuleIdentity } from './inputs.ts';
import type { ManagedDecision, Target } from './match.ts';

export type UpstreamKind = 'plain' | 'tls' | 'mtls';

export interface HttpFlow {
  identity: RuleIdentity;
  credential: CredentialRef | null;
  target: Target;
  upstream: UpstreamKind;
  /** For mTLS upstreams: the allow lists the peer must satisfy, read at each handshake. */
  allowLists: () => string[][];
  record: ConnectionRecord;
  /**
   * For a kept-alive connection: its decision under the current policy when it is still the one the connection
   * was opened with (decisionKey), else null. Asked before the first request after any input change.
   */
  recheck?: () => ManagedDecision | null;
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) and proxy credentials: never forwarded. */
const HOP = new Set([
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

const REASON = 'x-riptides-reason';

/** Upstream pools kept at once; the oldest is closed beyond this. */
const MAX_POOLS = 1024;

interface SocketState {
  flow: HttpFlow;
  /** The forwarder's generation when the flow's decision was last found to hold. */
  decided: number;
  inflight: number;
  /** The request-head deadline: one timer per connection, refreshed after each response. */
  timer: NodeJS.Timeout | null;
}

export class HttpForwarder {
  readonly server: Server;
  private readonly states = new WeakMap<object, SocketState>();
  /** Upstream connection pools (undici), by kind, address, TLS name and, for mTLS, identity. */
  private readonly pools = new Map<string, Pool>();
  /**
   * Each flow's pool, so that a keep-alive connection does not rebuild its pool key per request; valid while
   * `generation` holds, which every pool retirement (policy change, eviction, close) moves on.
   */
  private readonly poolOf = new WeakMap<HttpFlow, { pool: Pool; generation: number }>();
  private generation = 0;

  constructor(private readonly core: Core) {
    this.server = createServer({ maxHeaderSize: core.limits.maxHeaderBytes, requireHostHeader: true });
    // Between requests the head deadline (headersTimeoutMs) bounds an idle connection; node's own keep-alive
    // timer would close it sooner and re-arm a socket timeout on every request.
    this.server.keepAliveTimeout = 0;
    this.server.on('request', (req, res) => this.onRequest(req, res));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      // The application went away (reset, broken pipe): nothing to refuse.
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
        socket.destroy();
        return;
      }
      const reason = err.code === 'HPE_HEADER_OVERFLOW' ? 'header-too-large' : 'bad-request';
      this.core.metrics.requestsRefused.inc({ reason });
      this.core.log({ level: 'warn', event: 'request-refused', reason, detail: err.code ?? err.message });
      if (socket.writable)
        socket.end(
          `HTTP/1.1 ${reason === 'header-too-large' ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\n${REASON}: malformed request (${err.code ?? 'parse error'})\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`,
        );
      else socket.destroy();
    });
  }

  /** Serves HTTP on an intercepted connection (decrypted TLS, or plaintext). */
  attach(socket: Socket, flow: HttpFlow): void {
    const state: SocketState = { flow, decided: this.generation, inflight: 0, timer: null };
    this.states.set(socket, state);
    this.armHeadersDeadline(socket, state);
    socket.once('close', () => {
      if (state.timer) clearTimeout(state.timer);
    });
    this.server.emit('connection', socket);
  }

  /**
   * Retires pooled mTLS connections after a policy change, so that no later request reuses a connection to a
   * peer the new policy may refuse: requests in flight finish on theirs, the next ones dial anew.
   */
  resetMtls(): void {
    this.generation++;
    for (const [key, pool] of this.pools)
      if (key.startsWith('mtls ')) {
        this.pools.delete(key);
        void pool.close().catch(() => {});
      }
  }

  close(): void {
    this.generation++;
    for (const pool of this.pools.values()) void pool.destroy().catch(() => {});
    this.pools.clear();
  }

  private armHeadersDeadline(socket: Socket, state: SocketState): void {
    if (state.timer) {
      state.timer.refresh();
      return;
    }
    state.timer = setTimeout(() => {
      // A request in flight is bounded by the upstream's deadlines; the head deadline restarts after it.
      if (state.inflight > 0) return;
      this.core.metrics.requestsRefused.inc({ reason: 'headers-timeout' });
      this.core.log({
        level: 'warn',
        event: 'request-refused',
        reason: 'headers-timeout',
        pid: state.flow.record.pid,
      });
      socket.destroy();
    }, this.core.limits.headersTimeoutMs);
    state.timer.unref();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    const state = this.states.get(socket);
    if (!state) {
      res.writeHead(500, { [REASON]: 'no flow for this connection' }).end();
      return;
    }
    state.inflight++;
    if (state.inflight > 1) {
      this.refuse(res, 400, 'pipelining', 'pipelined requests are not supported: send one request at a time');
      req.resume();
      return;
    }
    res.once('finish', () => {
      state.inflight--;
      if (!socket.destroyed) this.armHeadersDeadline(socket, state);
    });
    // The inputs changed since this connection's decision was last checked (every change moves generation):
    // a request goes on only where the policy in force would send it, with the credential it would inject.
    if (state.flow.recheck && state.decided !== this.generation) {
      const now = state.flow.recheck();
      if (!now) {
        this.refuse(
          res,
          503,
          'policy-changed',
          'the policy for this connection changed since it was opened: open a new connection',
        );
        req.resume();
        return;
      }
      state.flow = { ...state.flow, identity: now.identity, credential: now.credential };
      state.decided = this.generation;
    }
    this.forward(req, res, state.flow).catch((e: Error) => {
      if (!res.headersSent) this.refuse(res, 502, 'upstream', `upstream failed: ${e.message}`);
      else res.destroy();
    });
  }

  private refuse(res: ServerResponse, status: number, reason: string, message: string): void {
    this.core.metrics.requestsRefused.inc({ reason });
    this.core.log({ level: 'warn', event: 'request-refused', reason, status, message });
    res.shouldKeepAlive = false;
    const body = `${message}\n`;
    res.writeHead(status, {
      [REASON]: message.replace(/[^\x20-\x7e]/g, '?'),
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      connection: 'close',
    });
    res.end(body);
  }

  /** Forwards one request of `flow` upstream with its credential; also used for absolute-form proxy requests. */
  async forward(req: IncomingMessage, res: ServerResponse, flow: HttpFlow): Promise<void> {
    const headers: Array<[string, string]> = [];
    const raw = req.rawHeaders;
    // One pass over the head as received: what leaves, whether a body follows, whether it is already hashed.
    let hasBody = false;
    let hasHash = false;
    let coded = false;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!;
      const lower = name.toLowerCase();
      if (lower === 'content-length') hasBody = true;
      else if (lower === 'transfer-encoding') {
        hasBody = true;
        // The body is decoded here and re-framed upstream: a coding besides chunked (gzip, chunked) would
        // reach the upstream as raw bytes with no coding marked.
        if (raw[i + 1]!.trim().toLowerCase() !== 'chunked') coded = true;
      }
      if (HOP.has(lower) || (flow.credential && lower === 'authorization')) continue;
      if (lower === 'x-amz-content-sha256') hasHash = true;
      headers.push([name, raw[i + 1]!]);
    }
    if (coded) {
      this.refuse(res, 400, 'transfer-coding', 'only the chunked transfer coding is forwarded');
      req.resume();
      return;
    }
    let target = req.url ?? '/';
    if (/^https?:\/\//i.test(target)) {
      const url = new URL(target);
      target = `${url.pathname}${url.search}`;
    }
    let body: Buffer | null = null;
    const ref = flow.credential;
    if (ref) {
      const found = this.core.inputs.credential(ref.hash);
      const value = found.state === 'loaded' ? found.value : null;
      if (!value || value.kind !== ref.kind) {
        req.resume();
        const why = !value
          ? found.state === 'expired'
            ? 'expired'
            : 'not loaded'
          : `kind ${value.kind} does not match ${ref.kind}`;
        this.refuse(
          res,
          503,
          'credential-unavailable',
          `credential for binding ${ref.name} is unavailable (${why})`,
        );
        return;
      }
      if (value.kind === 'bearer') {
        headers.push(['Authorization', `Bearer ${value.token}`]);
      } else {
        if (!hasHash) {
          body = await this.readBody(req);
          if (body === null) {
            this.refuse(
              res,
              413,
              'body-too-large',
              `request body over ${this.core.limits.maxSignedBodyBytes} bytes cannot be signed`,
            );
            return;
          }
        }
        try {
          const signed = await resignRequest(
            { method: req.method ?? 'GET', target, headers, ...(body ? { body } : {}) },
            value,
            { date: new Date() },
          );
          target = signed.target;
          headers.length = 0;
          headers.push(...signed.headers);
        } catch (e) {
          req.resume();
          if (e instanceof SigV4Error)
            this.refuse(res, 400, 'sigv4', `cannot re-sign the request: ${e.message}`);
          else throw e;
          return;
        }
      }
      this.core.metrics.credentialsInjected.inc({ kind: ref.kind, binding: ref.name });
      if (flow.record.binding !== ref.name) this.core.table.update(flow.record, { binding: ref.name });
    }
    await this.send(req, res, flow, target, headers, body ?? (hasBody ? req : null));
  }

  private readBody(req: IncomingMessage): Promise<Buffer | null> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > this.core.limits.maxSignedBodyBytes) {
          req.removeAllListeners('data');
          req.resume();
          resolve(null);
        } else chunks.push(c);
      });
      req.once('end', () => resolve(Buffer.concat(chunks, size)));
      req.once('error', reject);
    });
  }

  /**
   * The upstream pool of a flow: one undici Pool per (kind, address, TLS name, identity and allow lists for
   * mTLS), whose every new connection is one of dial.ts's dials (plain, TLS verified against the system store
   * or `upstreamCa`, or mTLS with the flow's SVID and allow lists), so upstream connections are made and
   * verified exactly as unintercepted ones are.
   */
  private pool(flow: HttpFlow): Pool {
    const known = this.poolOf.get(flow);
    if (known?.generation === this.generation) return known.pool;
    const t = flow.target;
    const address = t.ip ?? t.host;
    const allow =
      flow.upstream === 'mtls' ? ` ${flow.identity.spiffeId} ${JSON.stringify(flow.allowLists())}` : '';
    const key = `${flow.upstream} ${address} ${t.port} ${t.host}${allow}`;
    let pool = this.pools.get(key);
    if (pool) {
      this.poolOf.set(flow, { pool, generation: this.generation });
      return pool;
    }
    const core = this.core;
    const target = { host: t.host, ip: address, port: t.port };
    const connect = (_: unknown, cb: (err: Error | null, socket: Duplex | null) => void) => {
      const dialed =
        flow.upstream === 'plain'
          ? dialPlain(core, target)
          : flow.upstream === 'tls'
            ? dialTls(core, target)
            : dialMtls(core, flow.identity, target, flow.allowLists, { waitForSvid: true });
      dialed.then((r) => {
        if (r.ok) return cb(null, r.socket);
        if (flow.upstream === 'mtls')
          core.metrics.handshakesFailed.inc({ direction: 'outbound', reason: r.reason });
        cb(new Error(flow.upstream === 'mtls' ? `mTLS refused (${r.reason}): ${r.detail}` : r.detail), null);
      });
    };
    // The origin only names the pool: every connection comes from `connect`, and Host is the application's.
    pool = new Pool(
      `${flow.upstream === 'plain' ? 'http' : 'https'}://${isIP(address) === 6 ? `[${address}]` : address}:${t.port}`,
      {
        connect: connect as never,
        connections: 256,
        headersTimeout: core.limits.idleTimeoutMs,
        bodyTimeout: core.limits.idleTimeoutMs,
        maxHeaderSize: 64 * 1024,
      },
    );
    if (this.pools.size >= MAX_POOLS) {
      const [oldest, old] = this.pools.entries().next().value!;
      this.pools.delete(oldest);
      this.generation++;
      void old.close().catch(() => {});
    }
    this.pools.set(key, pool);
    this.poolOf.set(flow, { pool, generation: this.generation });
    return pool;
  }

  private send(
    req: IncomingMessage,
    res: ServerResponse,
    flow: HttpFlow,
    target: string,
    headers: Array<[string, string]>,
    body: Buffer | IncomingMessage | null,
  ): Promise<void> {
    const t = flow.target;
    return new Promise((resolve, reject) => {
      let controller: Dispatcher.DispatchController | null = null;
      let finished = false;
      // The application went away mid-request: the upstream request is abandoned too.
      res.once('close', () => {
        if (!finished) controller?.abort(new Error('the application closed the connection'));
      });
      const handler: Dispatcher.DispatchHandler = {
        onRequestStart: (c) => {
          controller = c;
        },
        onResponseStart: (c, statusCode, _headers, statusMessage) => {
          if (statusCode < 200) return; // 1xx: informational, not forwarded
          const raw = (c.rawHeaders ?? []) as Buffer[];
          const out: string[] = [];
          for (let i = 0; i + 1 < raw.length; i += 2) {
            const name = raw[i]!.toString('latin1');
            if (!HOP.has(name.toLowerCase())) out.push(name, raw[i + 1]!.toString('latin1'));
          }
          res.writeHead(statusCode, statusMessage ?? '', out);
        },
        onResponseData: (c, chunk) => {
          if (!res.write(chunk)) {
            c.pause();
            res.once('drain', () => c.resume());
          }
        },
        onResponseEnd: () => {
          finished = true;
          res.end();
          resolve();
        },
        onResponseError: (_c, e) => {
          finished = true;
          if (!res.headersSent) {
            const code = (e as { code?: string }).code ?? '';
            this.refuse(
              res,
              /TIMEOUT/.test(code) || /timed out/.test(e.message) ? 504 : 502,
              'upstream',
              `upstream ${t.host}:${t.port}: ${e.message}`,
            );
            resolve();
          } else {
            res.destroy();
            reject(e);
          }
        },
      };
      this.pool(flow).dispatch(
        {
          path: target,
          method: (req.method ?? 'GET') as Dispatcher.HttpMethod,
          headers: headers.flat(),
          body,
        },
        handler,
      );
    });
  }
}
