/**
 * The HTTPS plumbing the test servers share: TLS from the throwaway CA, request counters, and failure modes a
 * test switches on and off while clients are connected:
 *  - down:        the listener is closed and every socket destroyed (clients see ECONNREFUSED);
 *  - refuse:      connections are accepted and dropped before any response (ECONNRESET / socket hang up);
 *  - unavailable: every request gets the server's own 503 body (Vault sealed, API server unavailable, …);
 *  - slow:        every response is delayed by `delayMs`;
 *  - hang:        requests are read and never answered;
 *  - die:         a response starts (status line, part of the body) and the socket is then destroyed;
 *  - endless:     a 200 whose body never ends, sent as fast as the client reads;
 *  - trickle:     a 200 whose body is one byte every half second, forever;
 *  - redirect:    every request gets a 307 to `redirectTo` + its path (what a hostile or misconfigured
 *                 proxy in front of the server can do).
 */

import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { testTls } from '../support/test-tls.ts';

export type FailureMode =
  | 'none'
  | 'down'
  | 'refuse'
  | 'unavailable'
  | 'slow'
  | 'hang'
  | 'die'
  | 'endless'
  | 'trickle'
  | 'redirect';

export interface Routed {
  /** Counter key for this request, e.g. "login" or "renew". */
  key: string;
  handle(): Promise<void> | void;
}

export abstract class TestHttpsServer {
  mode: FailureMode = 'none';
  delayMs = 0;
  /** Origin that `redirect` mode points at, e.g. http://127.0.0.1:PORT. */
  redirectTo = '';
  readonly counters = new Map<string, number>();
  private server: Server | ReturnType<typeof createHttpServer>;
  private readonly sockets = new Set<Socket>();
  private listenPort = 0;

  /** `plain`: serve plain http instead (a local emulator, as people run one for STS). */
  constructor(private readonly transport: { plain?: boolean } = {}) {
    const tls = testTls();
    this.server = this.makeServer(tls.cert, tls.key);
  }

  get port(): number {
    return this.listenPort;
  }

  get url(): string {
    return `${this.transport.plain ? 'http' : 'https'}://127.0.0.1:${this.listenPort}`;
  }

  get caPem(): string {
    return testTls().ca;
  }

  /** Requests seen (all keys), failed or not. */
  get total(): number {
    let n = 0;
    for (const v of this.counters.values()) n += v;
    return n;
  }

  count(key: string): number {
    return this.counters.get(key) ?? 0;
  }

  resetCounters(): void {
    this.counters.clear();
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.listenPort, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.listenPort = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** Stops listening and drops every connection; `up()` listens again on the same port. */
  async down(): Promise<void> {
    this.mode = 'down';
    await this.stopListening();
  }

  async up(): Promise<void> {
    this.mode = 'none';
    const tls = testTls();
    this.server = this.makeServer(tls.cert, tls.key);
    await this.start();
  }

  async close(): Promise<void> {
    this.mode = 'down';
    await this.stopListening();
  }

  /** Destroys open connections (used for long-lived streams such as watches). */
  dropConnections(): void {
    for (const s of this.sockets) s.destroy();
  }

  /** The server's own 503 body for `unavailable`. */
  protected abstract unavailable(res: ServerResponse): void;

  /** Maps a request to its route; `body` is the whole request body. */
  protected abstract route(req: IncomingMessage, res: ServerResponse, body: Buffer): Routed;

  private makeServer(cert: string, key: string): Server | ReturnType<typeof createHttpServer> {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      void this.dispatch(req, res);
    };
    const server = this.transport.plain ? createHttpServer(handler) : createServer({ cert, key }, handler);
    server.on(this.transport.plain ? 'connection' : 'secureConnection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    // A client going away mid-handshake is part of the scenarios (timeouts), not an error of the server.
    server.on('tlsClientError', () => {});
    return server;
  }

  private async stopListening(): Promise<void> {
    const server = this.server;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server.listening) await closed;
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const routed = this.route(req, res, Buffer.concat(chunks));
    this.counters.set(routed.key, (this.counters.get(routed.key) ?? 0) + 1);
    switch (this.mode) {
      case 'down':
      case 'refuse':
        req.socket.destroy();
        return;
      case 'hang':
        return;
      case 'unavailable':
        this.unavailable(res);
        return;
      case 'die':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"partial":');
        setImmediate(() => req.socket.destroy());
        return;
      case 'slow':
        await new Promise((r) => setTimeout(r, this.delayMs));
        break;
      case 'redirect':
        res.writeHead(307, { location: `${this.redirectTo}${req.url ?? '/'}` });
        res.end();
        return;
      case 'endless': {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = () => {
          while (!res.destroyed && res.write(chunk));
        };
        res.on('drain', pump);
        res.write('{"data":"');
        pump();
        return;
      }
      case 'trickle': {
        res.writeHead(200, { 'content-type': 'application/json' });
        const timer = setInterval(() => res.write(' '), 500);
        res.on('close', () => clearInterval(timer));
        return;
      }
      case 'none':
        break;
    }
    try {
      await routed.handle();
    } catch (err) {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`test server bug: ${(err as Error).message}`);
    }
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
