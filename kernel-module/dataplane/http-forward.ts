/**
 * Credential injection on intercepted HTTP/1.1: node's own HTTP parser (llhttp, through an http.Server that
 * never listens) reads the application's requests on the decrypted (or plaintext) connection: keep-alive and
 * chunked bodies as node handles them, a request with both Content-Length and Transfer-Encoding (smuggling)
 * refused by llhttp with 400, pipelined requests refused with 400 and the connection closed after the response
 * in progress. Each request leaves with `Authorization: Bearer <token>` or a SigV4 signature made with the
 * temporary keys, read from the credential store at that moment (a rotation reaches the next request on the
 * same connection); an unavailable credential fails the request with 503 and an `x-riptides-reason` header.
 * Upstream connections are pooled per kind (plain, TLS origination, mTLS per identity) with node's agents.
 */
import {
  createServer,
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingMessage,
  type RequestOptions,
  type Server,
  type ServerResponse,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { resignRequest, SigV4Error } from './aws-sigv4.ts';
import type { ConnectionRecord } from './connections.ts';
import type { Core } from './core.ts';
import { dialMtls } from './dial.ts';
import type { CredentialRef, RuleIdentity } from './inputs.ts';
import type { Target } from './match.ts';

export type UpstreamKind = 'plain' | 'tls' | 'mtls';

export interface HttpFlow {
  identity: RuleIdentity;
  credential: CredentialRef | null;
  target: Target;
  upstream: UpstreamKind;
  /** For mTLS upstreams: the allow lists the peer must satisfy, read at each handshake. */
  allowLists: () => string[][];
  record: ConnectionRecord;
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

interface SocketState {
  flow: HttpFlow;
  inflight: number;
  timer: NodeJS.Timeout | null;
}

export class HttpForwarder {
  readonly server: Server;
  private readonly states = new WeakMap<object, SocketState>();
  private plainAgent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  private tlsAgent: HttpsAgent | null = null;
  private mtlsAgents = new Map<string, HttpAgent>();

  constructor(private readonly core: Core) {
    this.server = createServer({ maxHeaderSize: core.limits.maxHeaderBytes, requireHostHeader: true });
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
    const state: SocketState = { flow, inflight: 0, timer: null };
    this.states.set(socket, state);
    this.armHeadersDeadline(socket, state);
    socket.once('close', () => {
      if (state.timer) clearTimeout(state.timer);
    });
    this.server.emit('connection', socket);
  }

  /** Drops pooled mTLS connections (after a policy change, so revoked peers are not reused). */
  resetMtls(): void {
    for (const agent of this.mtlsAgents.values()) agent.destroy();
    this.mtlsAgents.clear();
  }

  close(): void {
    this.resetMtls();
    this.plainAgent.destroy();
    this.tlsAgent?.destroy();
  }

  private armHeadersDeadline(socket: Socket, state: SocketState): void {
    if (state.timer) clearTimeout(state.timer);
    state.timer = setTimeout(() => {
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
    if (state.timer) clearTimeout(state.timer);
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
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!;
      const lower = name.toLowerCase();
      if (HOP.has(lower) || (flow.credential && lower === 'authorization')) continue;
      headers.push([name, raw[i + 1]!]);
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
        const hasHash = headers.some(([n]) => n.toLowerCase() === 'x-amz-content-sha256');
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
    await this.send(req, res, flow, target, headers, body);
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

  private agent(flow: HttpFlow): HttpAgent {
    if (flow.upstream === 'plain') return this.plainAgent;
    if (flow.upstream === 'tls') {
      this.tlsAgent ??= new HttpsAgent({
        keepAlive: true,
        maxSockets: 256,
        secureContext: this.core.contexts.upstreamContext(),
        ...(this.core.lookup ? { lookup: this.core.lookup } : {}),
      });
      return this.tlsAgent;
    }
    const key = `${flow.identity.spiffeId} ${JSON.stringify(flow.allowLists())}`;
    let agent = this.mtlsAgents.get(key);
    if (!agent) {
      const core = this.core;
      agent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
      // Pooled by host:port; each new socket is an mTLS dial with the flow's identity and allow lists.
      (agent as unknown as { createConnection: unknown }).createConnection = (
        options: { host: string; port: number; servername?: string },
        cb: (err: Error | null, socket?: Duplex) => void,
      ) => {
        dialMtls(
          core,
          flow.identity,
          { host: options.servername || options.host, ip: options.host, port: Number(options.port) },
          flow.allowLists,
        ).then((r) => {
          if (r.ok) cb(null, r.socket);
          else {
            core.metrics.handshakesFailed.inc({ direction: 'outbound', reason: r.reason });
            cb(new Error(`mTLS refused (${r.reason}): ${r.detail}`));
          }
        });
        return undefined;
      };
      this.mtlsAgents.set(key, agent);
    }
    return agent;
  }

  private send(
    req: IncomingMessage,
    res: ServerResponse,
    flow: HttpFlow,
    target: string,
    headers: Array<[string, string]>,
    body: Buffer | null,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = flow.target;
      const options: RequestOptions & { servername?: string } = {
        host: t.ip ?? t.host,
        port: t.port,
        ...(flow.upstream === 'tls' && !isIP(t.host) ? { servername: t.host } : {}),
        ...(flow.upstream === 'mtls' ? { servername: t.host } : {}),
        method: req.method,
        path: target,
        headers: headers.flat(),
        setHost: false,
        agent: this.agent(flow),
        timeout: this.core.limits.idleTimeoutMs,
        ...(this.core.lookup ? { lookup: this.core.lookup } : {}),
      };
      const upstream = flow.upstream === 'tls' ? httpsRequest(options) : httpRequest(options);
      upstream.once('timeout', () => upstream.destroy(new Error('upstream timed out')));
      upstream.once('error', (e) => {
        if (!res.headersSent) {
          this.refuse(
            res,
            /timed out/.test(e.message) ? 504 : 502,
            'upstream',
            `upstream ${t.host}:${t.port}: ${e.message}`,
          );
          resolve();
        } else {
          res.destroy();
          reject(e);
        }
      });
      upstream.once('response', (up) => {
        const out: string[] = [];
        for (let i = 0; i + 1 < up.rawHeaders.length; i += 2)
          if (!HOP.has(up.rawHeaders[i]!.toLowerCase())) out.push(up.rawHeaders[i]!, up.rawHeaders[i + 1]!);
        res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
        up.pipe(res);
        up.once('end', resolve);
        up.once('error', reject);
      });
      if (body) upstream.end(body);
      else req.pipe(upstream);
    });
  }
}
