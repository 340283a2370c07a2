/**
 * The data plane (DESIGN.md §5, issue 12): a library the agent or `up` starts and stops with its listeners.
 *
 *   const dp = new DataPlane({ inputs, proxyListen: { host: '127.0.0.1', port: 15001 }, inbound: [...] });
 *   const addresses = await dp.start();   // bound addresses (port 0 → the port the OS chose)
 *   ...
 *   await dp.stop();                      // closes listeners and every live connection
 *
 * Listeners: `proxyListen` (HTTP proxy: CONNECT and absolute-form plain HTTP; what HTTP(S)_PROXY point at),
 * `transparentListen` (the target of an nftables `redirect`; the original destination from SO_ORIGINAL_DST),
 * `outbound` (explicit mappings: a local port standing for one destination, for clients that cannot use a
 * proxy where redirection is not allowed), and `inbound` (in front of workloads' ports). See README.md.
 */
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { createServer, isIP, type LookupFunction, type Server, type Socket } from 'node:net';
import { Attributor } from './attribution.ts';
import { type ConnectionRecord, ConnectionTable } from './connections.ts';
import { type Core, DEFAULT_LIMITS, type Limits, type LogEvent, validateLimits } from './core.ts';
import { ManagedPeers } from './dial.ts';
import { HttpRelay, type UpstreamKind } from './http-relay.ts';
import { Inbound, type InboundListener, type ListenAddress } from './inbound.ts';
import type { DataPlaneInputs } from './inputs.ts';
import { decide, parseAuthority } from './match.ts';
import { DataPlaneMetrics } from './metrics.ts';
import { InterceptMinter } from './mint.ts';
import { type BoundFront, MuxServer, SessionPool } from './mux.ts';
import { originalDestination } from './original-dst.ts';
import { type Hooks, Outbound } from './outbound.ts';
import { namesOwnListener } from './own-endpoint.ts';
import { forwardProxyRequest } from './proxy-forward.ts';
import { TlsContexts } from './tls-contexts.ts';

export type { InboundListener, ListenAddress } from './inbound.ts';

export interface OutboundMapping {
  listen: ListenAddress;
  /** The destination a connection to `listen` stands for (matched against rules like any other). */
  destination: { host: string; port: number };
}

export interface DataPlaneOptions {
  inputs: DataPlaneInputs;
  /** HTTP proxy (plain + CONNECT): `--proxy-listen HOST:PORT`. */
  proxyListen?: ListenAddress | null;
  /** Transparent listener: where nftables redirects workloads' outbound connections. */
  transparentListen?: ListenAddress | null;
  outbound?: OutboundMapping[];
  inbound?: InboundListener[];
  /** PEM trusted for upstream TLS instead of the system store (`--upstream-ca FILE`, read by the caller). */
  upstreamCa?: string | null;
  /** Mirror the connections table to this file (the control interface's `connections`). */
  connectionsFile?: string | null;
  /** Name resolution for upstreams (node's `lookup` option); default: the system resolver. */
  lookup?: LookupFunction;
  /** Budgets (core.ts `Limits`); a value out of range throws from the constructor (`validateLimits`). */
  limits?: Partial<Limits>;
  /**
   * Pooled mTLS sessions between data planes (README "Pooled sessions"). False: ALPN `riptides` only, offered
   * and answered, so every mTLS connection is one application connection (`--no-pooled-sessions`). Default true.
   */
  pooledSessions?: boolean;
  /** Structured events (handshake failures, revocations, refusals, passthroughs); never a credential value. */
  log?: (event: LogEvent) => void;
  procRoot?: string;
}

export interface DataPlaneAddresses {
  proxy: ListenAddress | null;
  transparent: ListenAddress | null;
  outbound: ListenAddress[];
  inbound: ListenAddress[];
}

function bound(server: Server | HttpServer): ListenAddress {
  const a = server.address();
  if (!a || typeof a === 'string') throw new Error('listener has no TCP address');
  return { host: a.address, port: a.port };
}

function listen(server: Server | HttpServer, at: ListenAddress): Promise<ListenAddress> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: at.host, port: at.port, backlog: 1024 }, () => {
      server.off('error', reject);
      resolve(bound(server));
    });
  });
}

export class DataPlane {
  readonly metrics = new DataPlaneMetrics();
  private readonly core: Core;
  private readonly relay: HttpRelay;
  private readonly outboundHandler: Outbound;
  private readonly inboundHandler: Inbound;
  private readonly pool: SessionPool;
  /** Inbound listeners as bound: the ports a pooled session's CONNECT may name. */
  private readonly fronts: BoundFront[] = [];
  private readonly servers: Array<Server | HttpServer> = [];
  private readonly sockets = new Set<Socket>();
  private unsubscribe: (() => void) | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweepPending = false;
  private addressesBound: DataPlaneAddresses | null = null;

  constructor(private readonly options: DataPlaneOptions) {
    const limits = validateLimits({ ...DEFAULT_LIMITS, ...options.limits });
    this.core = {
      inputs: options.inputs,
      contexts: new TlsContexts(options.inputs, options.upstreamCa ?? null),
      minter: new InterceptMinter(() => options.inputs.interceptCa()),
      metrics: this.metrics,
      table: new ConnectionTable(options.connectionsFile ?? null),
      attributor: new Attributor(options.procRoot),
      limits,
      pooledSessions: options.pooledSessions !== false,
      lookup: options.lookup,
      log: options.log ?? (() => {}),
      ownAddresses: new Set(),
      guarded: new Map(),
    };
    this.relay = new HttpRelay(this.core);
    this.pool = new SessionPool(this.core);
    this.outboundHandler = new Outbound(this.core, this.relay, new ManagedPeers(this.core), this.pool);
    this.inboundHandler = new Inbound(this.core, new MuxServer(this.core, () => this.fronts));
  }

  /** Binds every configured listener; rejects (and binds nothing) when one cannot be bound. */
  async start(): Promise<DataPlaneAddresses> {
    if (this.addressesBound) return this.addressesBound;
    const o = this.options;
    const result: DataPlaneAddresses = { proxy: null, transparent: null, outbound: [], inbound: [] };
    try {
      if (o.proxyListen) result.proxy = await listen(this.track(this.proxyServer()), o.proxyListen);
      if (o.transparentListen)
        result.transparent = await listen(
          this.track(createServer((s) => this.onTransparent(s))),
          o.transparentListen,
        );
      for (const m of o.outbound ?? [])
        result.outbound.push(
          await listen(
            this.track(
              createServer((s) =>
                this.outbound(
                  s,
                  {
                    host: m.destination.host,
                    ip: isIP(m.destination.host) ? m.destination.host : null,
                    port: m.destination.port,
                  },
                  'mapped',
                  this.socketHooks(s),
                ),
              ),
            ),
            m.listen,
          ),
        );
      for (const l of o.inbound ?? []) {
        const at = await listen(
          this.track(createServer((s) => void this.inboundHandler.handle(s, l))),
          l.listen,
        );
        // A CONNECT names a port, and the front it reaches is found by port and identity: two fronts of one
        // identity on one port (two hosts) would be told apart by nothing, so such a configuration is refused.
        if (this.fronts.some((f) => f.port === at.port && f.listener.spiffeId === l.spiffeId))
          throw new Error(
            `inbound listeners of ${l.spiffeId} share port ${at.port}: pooled sessions reach a front by port, give each its own`,
          );
        result.inbound.push(at);
        this.fronts.push({ listener: l, port: at.port });
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    // Loops are connections back into interception. An inbound listener is a real destination (a workload on
    // this node, reached through its data plane like any peer's), and an outbound mapping goes where it says.
    for (const a of [result.proxy, result.transparent])
      if (a) this.core.ownAddresses.add(`${a.host}:${a.port}`);
    this.unsubscribe = this.core.inputs.onChange(() => this.changed());
    this.sweepTimer = setInterval(() => this.sweep(), this.core.limits.revalidateIntervalMs);
    this.sweepTimer.unref();
    this.addressesBound = result;
    return result;
  }

  /** Closes the listeners and every live connection; the connections file is left empty. */
  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    const closing = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const s of this.sockets) s.destroy();
    for (const g of this.core.guarded.values()) g.close('data plane stopped');
    this.relay.close();
    this.pool.close();
    await Promise.all(closing);
    this.fronts.length = 0;
    this.servers.length = 0;
    this.addressesBound = null;
    for (const r of this.core.table.list()) this.core.table.close(r);
    await this.core.table.flush();
  }

  addresses(): DataPlaneAddresses | null {
    return this.addressesBound;
  }

  /** The connections table: one record per live connection. */
  connections(): ConnectionRecord[] {
    return this.core.table.list();
  }

  /** Certificates minted for intercept since start (the per-host cache's misses). */
  mintedCertificates(): number {
    return this.core.minter.minted;
  }

  private track<S extends Server | HttpServer>(server: S): S {
    this.servers.push(server);
    server.on('connection', (s: Socket) => {
      // Small TLS records and request/response turns: Nagle + delayed ACK would add tens of ms.
      s.setNoDelay(true);
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    return server;
  }

  private changed(): void {
    this.core.contexts.prune();
    this.relay.resetMtls();
    if (this.sweepPending) return;
    this.sweepPending = true;
    setImmediate(() => {
      this.sweepPending = false;
      this.sweep();
    });
  }

  /** Closes live connections that policy no longer allows (revoked peers, mode changes, expired peers). */
  private sweep(): void {
    for (const guard of [...this.core.guarded.values()]) {
      const reason = guard.check();
      if (!reason) continue;
      this.core.guarded.delete(guard);
      if (guard.session)
        this.core.log({ level: 'info', event: 'session-drained', direction: guard.direction, reason });
      else {
        this.metrics.revoked.inc({ direction: guard.direction });
        this.core.log({ level: 'warn', event: 'connection-revoked', direction: guard.direction, reason });
      }
      guard.close(reason);
    }
  }

  private socketHooks(socket: Socket): Hooks {
    return { accept: () => {}, refuse: () => socket.destroy() };
  }

  private outbound(
    socket: Socket,
    target: { host: string; ip: string | null; port: number },
    via: 'connect' | 'transparent' | 'mapped',
    hooks: Hooks,
  ): void {
    socket.on('error', () => socket.destroy());
    this.outboundHandler.handle(socket, target, via, hooks).catch((e: Error) => {
      this.core.log({ level: 'warn', event: 'outbound-error', detail: e.message });
      socket.destroy();
    });
  }

  private onTransparent(socket: Socket): void {
    const original = originalDestination(socket);
    const key = original ? `${original.address}:${original.port}` : '';
    if (
      !original ||
      this.core.ownAddresses.has(key) ||
      (original.address === socket.localAddress && original.port === socket.localPort)
    ) {
      this.metrics.connections.inc({ direction: 'outbound', mode: 'loop' });
      this.core.log({
        level: 'warn',
        event: 'loop-detected',
        detail: original
          ? `original destination ${key} is this data plane`
          : 'no original destination (not redirected)',
        src: socket.remoteAddress,
        src_port: socket.remotePort,
      });
      socket.destroy();
      return;
    }
    this.outbound(
      socket,
      { host: original.address, ip: original.address, port: original.port },
      'transparent',
      this.socketHooks(socket),
    );
  }

  private proxyServer(): HttpServer {
    // node checks its request deadlines every connectionsCheckingInterval (30 s by default): a slowloris on the
    // proxy port lasted up to 45 s against a 15 s head deadline (found by review).
    const server = createHttpServer({
      maxHeaderSize: this.core.limits.maxHeaderBytes,
      connectionsCheckingInterval: 1000,
    });
    server.headersTimeout = this.core.limits.headersTimeoutMs;
    server.requestTimeout = this.core.limits.idleTimeoutMs;
    server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      const target = parseAuthority(req.url ?? '');
      const reply = (status: number, reason: string) => {
        if (!socket.writable) return socket.destroy();
        socket.end(
          `HTTP/1.1 ${status} ${status === 200 ? 'Connection Established' : 'Refused'}\r\nx-riptides-reason: ${reason.replace(/[^\x20-\x7e]/g, '?')}\r\ncontent-length: 0\r\n\r\n`,
        );
      };
      if (!target) return reply(400, 'CONNECT needs host:port');
      if (this.isSelf(target.host, target.port)) {
        this.metrics.connections.inc({ direction: 'outbound', mode: 'loop' });
        this.core.log({
          level: 'warn',
          event: 'loop-detected',
          detail: `CONNECT to this data plane (${target.host}:${target.port})`,
        });
        return reply(508, 'loop detected: the destination is this data plane');
      }
      if (head.length) socket.unshift(head);
      let accepted = false;
      this.outbound(
        socket,
        { host: target.host, ip: isIP(target.host) ? target.host : null, port: target.port },
        'connect',
        {
          accept: () => {
            if (accepted) return;
            accepted = true;
            socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
          },
          refuse: (status, reason) => (accepted ? socket.destroy() : reply(status, reason)),
        },
      );
    });
    server.on('request', (req, res) =>
      // A rejection here would be unhandled and end the process: answered as this request's failure instead.
      this.proxyRequest(req, res).catch((e: Error) => {
        this.core.log({ level: 'warn', event: 'relay-error', detail: e.message });
        if (res.headersSent) res.destroy();
        else res.writeHead(500, { 'x-riptides-reason': 'relay error' }).end();
      }),
    );
    return server;
  }

  /** Bytes of request bodies buffered to sign right now, over every connection (the `maxSignedBytesTotal` budget). */
  signingBytesInUse(): number {
    return this.relay.signingBudget.inUse;
  }

  private isSelf(host: string, port: number): boolean {
    return namesOwnListener(this.core.ownAddresses, host, port);
  }

  /** Absolute-form plain HTTP through the proxy (`http_proxy`): matched, injected, forwarded per request. */
  private async proxyRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
      if (url.protocol !== 'http:') throw new Error('not http');
    } catch {
      res
        .writeHead(400, {
          'x-riptides-reason': 'this is a proxy: send absolute-form http:// requests or CONNECT',
        })
        .end();
      return;
    }
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port || 80);
    if (this.isSelf(host, port)) {
      res.writeHead(508, { 'x-riptides-reason': 'loop detected: the destination is this data plane' }).end();
      return;
    }
    const socket = req.socket;
    const owner = this.core.attributor.owner(
      socket.remoteAddress ?? '',
      socket.remotePort ?? 0,
      this.core.inputs.attestedPids(),
      { address: socket.localAddress ?? '', port: socket.localPort ?? 0 },
    );
    const process = owner ? await this.core.inputs.identityOf(owner.pid) : null;
    const target = { host, ip: isIP(host) ? host : null, port };
    const decision = decide(this.core.inputs.rules(), process, target);
    const record = this.core.table.open({
      direction: 'outbound',
      mode: decision.kind === 'passthrough' ? 'passthrough' : 'proxy-http',
      src: socket.remoteAddress ?? '',
      src_port: socket.remotePort ?? 0,
      dst: host,
      dst_port: port,
      tls_version: 'NONE',
      mtls_version: 'NONE',
      spiffe_id: decision.identity?.spiffeId ?? null,
      peer_spiffe_id: null,
      pid: owner?.pid ?? null,
      binding: null,
      ...(decision.kind === 'passthrough' ? { reason: decision.reason } : {}),
    });
    // A pipelined request's response that node still queues emits no 'close' when the client goes: the
    // socket's does (a record per such request stayed in the table for good, found by review).
    const closeRecord = () => {
      this.core.table.close(record);
      socket.off('close', closeRecord);
    };
    res.once('close', closeRecord);
    socket.once('close', closeRecord);
    this.metrics.connections.inc({
      direction: 'outbound',
      mode: decision.kind === 'passthrough' ? 'passthrough' : 'proxy-http',
    });
    const mode = decision.kind === 'managed' ? (decision.rule?.tls.mode ?? null) : null;
    const identity = decision.identity;
    const allowLists = () =>
      identity && decision.kind === 'managed'
        ? [decision.rule?.allowedSpiffeIds ?? [], identity.outbound.allowedSpiffeIds]
        : [];
    // As through CONNECT: a rule without a mode is mTLS toward a managed peer, found by the same probe (found by
    // review: this path sent plain HTTP there, a credential with it).
    const upstream: UpstreamKind | null =
      decision.kind === 'managed'
        ? await this.outboundHandler.httpUpstream(mode, decision.identity, target, allowLists)
        : 'plain';
    if (!upstream) {
      this.core.table.update(record, { mode: 'mtls', reason: 'not-managed' });
      res
        .writeHead(502, {
          'x-riptides-reason':
            'the destination could not be reached over mTLS, and is not known to be unmanaged',
        })
        .end();
      return;
    }
    await forwardProxyRequest(this.relay, req, res, {
      identity: identity ?? {
        spiffeId: '',
        workloadID: '',
        hash: '',
        inbound: { mode: 'PERMISSIVE', intercept: false, allowedSpiffeIds: [] },
        outbound: { allowedSpiffeIds: [] },
        egress: [],
        credentials: [],
        svid: null,
      },
      credential: decision.kind === 'managed' ? decision.credential : null,
      target,
      upstream,
      allowLists,
      record,
      defaultPort: 80,
    });
  }
}
