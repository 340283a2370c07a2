/**
 * Pooled mTLS sessions between data planes (README "Pooled sessions"), as Istio ambient's HBONE: the client data
 * plane keeps one long-lived mTLS connection per (source identity and its TLS context, peer data plane address),
 * speaks HTTP/2 on it (node:http2, ALPN `riptides-h2`) and carries each application connection as one CONNECT
 * stream (RFC 9113 §8.5), so that a new application connection costs a stream open, not a TLS handshake.
 *
 * Authorization is per stream, on both sides, with the policy in force when the stream opens: the client checks
 * the session's peer SVID against the rule's and the identity's outbound allow lists; the server checks the
 * port the CONNECT names (one it fronts for the session's workload, never an arbitrary host:port) and that
 * workload's `allowedSPIFFEIDs.inbound`. Sessions whose certificates expire or whose TLS context changed (a new
 * SVID or trust bundle) take no new stream and are drained; each stream is a guarded connection like a
 * per-connection one, so revocation closes it within the same re-check interval.
 */
import type { X509Certificate } from 'node:crypto';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2Server,
  type Http2Stream,
  constants as h2,
  connect as h2Connect,
  createServer as h2Server,
  type IncomingHttpHeaders,
  type SecureServerOptions,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { isIPv6, connect as netConnect, type Socket } from 'node:net';
import type { SecureContext, TLSSocket } from 'node:tls';
import { tlsName } from './connections.ts';
import type { Core, Guard, Limits } from './core.ts';
import { dialMtls, type MtlsDial } from './dial.ts';
import type { InboundListener } from './inbound.ts';
import type { RuleIdentity } from './inputs.ts';
import { findIdentity, parseAuthority, type Target } from './match.ts';
import { originalDestination } from './original-dst.ts';
import { checkPeerId, checkResumedPeer, type HandshakeFailure, svidLeafId } from './svid-check.ts';
import { ALPN, MUX_ALPN } from './tls-contexts.ts';

/** Header block caps: a CONNECT and its answer carry three or four fields. */
const MAX_HEADER_PAIRS = 16;
const MAX_HEADER_LIST_BYTES = 8_192;
/** nghttp2's memory per session (MB; node's default, named): past it new streams are refused. */
const MAX_SESSION_MEMORY_MB = 10;
/**
 * Workload dials in progress per server session (CONNECTs not yet answered 200). A CONNECT past it waits for a
 * dial to end rather than being refused, so that a legitimate burst of `muxMaxStreams` connections is not;
 * a waiting CONNECT reset by its client costs no dial at all.
 */
const MAX_PENDING_DIALS = 32;

/** HTTP/2 settings both sides use: no push, bounded streams, headers and memory, larger windows than 64 KiB. */
function sessionOptions(limits: Limits) {
  return {
    maxSessionMemory: MAX_SESSION_MEMORY_MB,
    maxHeaderListPairs: MAX_HEADER_PAIRS,
    maxSettings: 16,
    maxOutstandingPings: 4,
    settings: {
      enablePush: false,
      maxConcurrentStreams: limits.muxMaxStreams,
      initialWindowSize: limits.muxStreamWindowBytes,
      maxHeaderListSize: MAX_HEADER_LIST_BYTES,
    },
  };
}

/** `host:port` as the CONNECT's `:authority` (RFC 9113 §8.5; an IPv6 literal bracketed). */
function authorityOf(target: Target): string {
  const host = target.ip ?? target.host;
  return `${isIPv6(host) ? `[${host}]` : host}:${target.port}`;
}

/** The earliest `validTo` of the certificates given (ms since the epoch); absent ones do not count. */
function expiryOf(...certs: Array<X509Certificate | null | undefined>): number {
  return Math.min(...certs.map((c) => (c ? Date.parse(c.validTo) : Number.POSITIVE_INFINITY)));
}

/**
 * Resets `socket` (RST), or closes it when its FIN is already under way: node's `resetAndDestroy` on a socket
 * shut down for writing fails (libuv refuses the reset) and then never emits 'close', which would hold the
 * splice, its connection record and its guard forever.
 */
function reset(socket: Socket): void {
  if (socket.writableEnded) socket.destroy();
  else socket.resetAndDestroy();
}

/**
 * Splices an application connection and a CONNECT stream, mapping TCP onto the stream as RFC 9113 §8.5 says:
 * bytes both ways; a FIN from either end is END_STREAM / FIN toward the other, each direction closing on its
 * own (half-close); an error or reset of the TCP connection resets the stream, and a stream reset by the peer
 * (RST_STREAM, any code but NO_ERROR) resets the TCP connection (RST). The reset sent is node's for a stream
 * destroyed with an error, INTERNAL_ERROR, where §8.5 names CONNECT_ERROR: node's `close(code)` would end the
 * writable side first, and that END_STREAM can reach the peer before the RST_STREAM, a FIN where a reset was
 * meant. `onClose` runs once both are closed. Either already destroyed (an application that closed while its
 * stream was being opened, a stream reset as it was answered) tears the other down at once and runs `onClose`:
 * its 'close' may have been emitted already, and nothing else would end the other.
 */
export function spliceStream(socket: Socket, stream: Http2Stream, onClose: () => void): void {
  if (socket.destroyed) {
    if (!stream.destroyed) stream.close(h2.NGHTTP2_CANCEL);
    onClose();
    return;
  }
  if (stream.destroyed) {
    reset(socket);
    onClose();
    return;
  }
  // A FIN from the application must not end its other direction: the answer may still be coming.
  socket.allowHalfOpen = true;
  let open = 2;
  const closed = () => {
    if (--open === 0) onClose();
  };
  socket.on('error', (e) => stream.destroy(e));
  stream.on('error', () => {});
  socket.once('close', () => {
    // Closed with its END_STREAM written, the stream finishes on its own; else nothing would end it.
    if (!stream.destroyed && !stream.writableEnded) stream.destroy(new Error('connection closed'));
    closed();
  });
  stream.once('close', () => {
    // node destroys a stream reset with an error code without ending its readable side: that is no FIN.
    if (stream.rstCode !== h2.NGHTTP2_NO_ERROR && !socket.destroyed) reset(socket);
    closed();
  });
  socket.pipe(stream);
  stream.pipe(socket);
  socket.resume();
}

/** What the pool gives a connection: a stream of a pooled session, or an mTLS connection of its own. */
export type PoolResult =
  | {
      ok: true;
      kind: 'stream';
      stream: ClientHttp2Stream;
      /** The session's id (the `session` field of the connections table). */
      session: number;
      peer: string;
      leaf: X509Certificate;
      /** The session's TLS version, as the connections table spells it (`TLS1.3`). */
      version: string;
    }
  | { ok: true; kind: 'socket'; socket: TLSSocket; peer: string; leaf: X509Certificate }
  | { ok: false; reason: HandshakeFailure; detail: string; notManaged?: boolean };

interface ClientSession {
  id: number;
  key: string;
  h2: ClientHttp2Session;
  tls: TLSSocket;
  context: SecureContext;
  peer: string;
  leaf: X509Certificate;
  /** Earliest expiry of the two certificates (ms since the epoch). */
  notAfter: number;
  /** Streams open now, and whether any was opened before (the reuse metric). */
  streams: number;
  used: boolean;
  draining: boolean;
  idle: NodeJS.Timeout | null;
  guard: Guard;
}

/** How a dial that other connections waited on ended: a session to share, a per-connection peer, or a failure. */
type DialOutcome = 'session' | 'legacy' | Extract<PoolResult, { ok: false }>;

/**
 * The client side: sessions by (source SPIFFE ID, peer address:port), each used only with the TLS context it
 * was made with, so two identities, or two SVIDs of one, never share one. Connections arriving while a session
 * is being made wait for that one handshake. A peer that answers only `riptides` gets a connection of its own
 * (the per-connection path), remembered for `unmanagedTtlMs` so that such connections do not queue.
 */
export class SessionPool {
  private readonly sessions = new Map<string, ClientSession[]>();
  private readonly dialing = new Map<string, Promise<DialOutcome>>();
  private readonly perConnection = new Map<string, number>();
  private nextId = 1;

  constructor(private readonly core: Core) {}

  /**
   * A connection toward `target` for `identity`: a CONNECT stream answered 200 by the peer, or an mTLS socket
   * when the peer does not multiplex. The peer is checked against `allowLists()` now, whatever the session's
   * age. Failures are the dial's (`no-svid`, `untrusted`, …, `notManaged` for a destination that is no managed
   * peer), `not-allowed`/`expired` for a pooled peer the lists or the clock no longer admit, `stream-refused`
   * when the peer answers the CONNECT with another status, `timeout` when it does not answer within
   * `handshakeTimeoutMs`.
   */
  async connect(
    identity: RuleIdentity,
    target: Target,
    allowLists: () => string[][],
    opts: { timeoutMs?: number; waitForSvid?: boolean },
  ): Promise<PoolResult> {
    const key = `${identity.spiffeId} ${authorityOf(target)}`;
    let retries = 0;
    for (;;) {
      const session = this.pick(key, identity.spiffeId);
      if (session) {
        const opened = await this.open(session, target, allowLists);
        // A session the peer closed as the stream was sent (GOAWAY, idle close): try another, twice at most.
        if (opened.ok || !opened.retry || retries++ >= 2) return opened;
        continue;
      }
      // A burst past the sessions' streams waits for the session being made, one handshake per
      // `muxMaxStreams` connections; each wait ends with a session, a failure or a per-connection peer. The
      // failure is shared as is: one identity toward one destination is decided by one rule, so by one mode.
      const pending = this.dialing.get(key);
      if (pending) {
        const outcome = await pending;
        if (outcome === 'session') continue;
        if (outcome !== 'legacy') return outcome;
      }
      return this.dial(key, identity, target, allowLists, opts);
    }
  }

  /** Closes every session now (the data plane stops). */
  close(): void {
    for (const list of this.sessions.values()) for (const s of list) s.h2.destroy();
    this.sessions.clear();
  }

  private pick(key: string, spiffeId: string): ClientSession | null {
    const list = this.sessions.get(key);
    if (!list) return null;
    const context = this.core.contexts.identity(spiffeId);
    const now = Date.now();
    for (const s of list) {
      const max = Math.min(this.core.limits.muxMaxStreams, s.h2.remoteSettings.maxConcurrentStreams ?? 1);
      if (
        !s.draining &&
        !s.h2.closed &&
        !s.h2.destroyed &&
        s.context === context &&
        now < s.notAfter &&
        s.streams < max
      )
        return s;
    }
    return null;
  }

  private async dial(
    key: string,
    identity: RuleIdentity,
    target: Target,
    allowLists: () => string[][],
    opts: { timeoutMs?: number; waitForSvid?: boolean },
  ): Promise<PoolResult> {
    const core = this.core;
    // Only the first dial of a key is waited on; toward a per-connection peer every connection dials its own.
    const shared = !this.dialing.has(key) && !((this.perConnection.get(key) ?? 0) > Date.now());
    let settle: (outcome: DialOutcome) => void = () => {};
    if (shared) this.dialing.set(key, new Promise((resolve) => (settle = resolve)));
    // The allow lists are checked per stream (below), not in the handshake: a session serves every rule toward
    // this peer, and connections waiting on it share the handshake's outcome, which must not depend on their rule.
    let up: MtlsDial;
    try {
      up = await dialMtls(core, identity, target, () => [], {
        ...opts,
        alpn: core.pooledSessions ? [MUX_ALPN, ALPN] : [ALPN],
      });
    } finally {
      if (shared) this.dialing.delete(key);
    }
    if (!up.ok) {
      settle(up);
      return up;
    }
    core.metrics.mtlsSessions.inc({ direction: 'outbound', protocol: up.protocol });
    if (!up.leaf || !up.peer) {
      up.socket.destroy();
      const failure = {
        ok: false as const,
        reason: 'no-certificate' as const,
        detail: 'no peer certificate',
      };
      settle(failure);
      return failure;
    }
    if (up.protocol !== MUX_ALPN) {
      if (this.perConnection.size >= 10_000) this.perConnection.clear();
      this.perConnection.set(key, Date.now() + core.limits.unmanagedTtlMs);
      settle('legacy');
      const peer = checkResumedPeer(up.leaf, core.inputs.rules()?.trustDomain ?? '', allowLists());
      if (!peer.ok) {
        up.socket.destroy();
        return peer;
      }
      return { ok: true, kind: 'socket', socket: up.socket, peer: peer.spiffeId, leaf: up.leaf };
    }
    this.perConnection.delete(key);
    const session = this.add(key, identity.spiffeId, up.socket, up.context, up.peer, up.leaf, target);
    settle('session');
    return this.open(session, target, allowLists);
  }

  private add(
    key: string,
    spiffeId: string,
    tls: TLSSocket,
    context: SecureContext,
    peer: string,
    leaf: X509Certificate,
    target: Target,
  ): ClientSession {
    const core = this.core;
    const options = sessionOptions(core.limits);
    const h2session = h2Connect(`https://${authorityOf(target)}`, {
      ...options,
      // A client takes no stream from its peer: no push, none reserved.
      maxReservedRemoteStreams: 0,
      createConnection: () => tls,
    });
    h2session.on('error', () => {});
    h2session.once('connect', () => h2session.setLocalWindowSize(core.limits.muxStreamWindowBytes * 16));
    const session: ClientSession = {
      id: this.nextId++,
      key,
      h2: h2session,
      tls,
      context,
      peer,
      leaf,
      notAfter: expiryOf(leaf, tls.getX509Certificate()),
      streams: 0,
      used: false,
      draining: false,
      idle: null,
      guard: {
        direction: 'outbound',
        session: true,
        check: () => {
          if (core.contexts.identity(spiffeId) !== context) return 'the SVID or the trust bundle changed';
          return Date.now() >= session.notAfter ? 'a certificate of the session expired' : null;
        },
        close: () => this.drain(session),
      },
    };
    // Idle from the start: a first stream refused by the allow lists leaves it with none.
    this.idle(session);
    const list = this.sessions.get(key) ?? [];
    list.push(session);
    this.sessions.set(key, list);
    core.guarded.set(session.guard, session.guard);
    h2session.once('goaway', () => this.drain(session));
    h2session.once('close', () => {
      this.forget(session);
      if (session.idle) clearTimeout(session.idle);
      core.guarded.delete(session.guard);
    });
    return session;
  }

  /** Closes `session` after `muxIdleTimeoutMs` unless a stream is opened on it before. */
  private idle(session: ClientSession): void {
    session.idle = setTimeout(() => this.drain(session), this.core.limits.muxIdleTimeoutMs).unref();
  }

  /** No new stream; the session closes once its streams have (HTTP/2 GOAWAY). */
  private drain(session: ClientSession): void {
    session.draining = true;
    this.forget(session);
    if (!session.h2.closed) session.h2.close();
  }

  private forget(session: ClientSession): void {
    const list = this.sessions.get(session.key);
    if (!list) return;
    const rest = list.filter((s) => s !== session);
    if (rest.length) this.sessions.set(session.key, rest);
    else this.sessions.delete(session.key);
  }

  private open(
    session: ClientSession,
    target: Target,
    allowLists: () => string[][],
  ): Promise<Extract<PoolResult, { ok: true }> | (Extract<PoolResult, { ok: false }> & { retry: boolean })> {
    const core = this.core;
    const peer = checkResumedPeer(session.leaf, core.inputs.rules()?.trustDomain ?? '', allowLists());
    if (!peer.ok) return Promise.resolve({ ...peer, retry: false });
    const reused = session.used;
    session.used = true;
    session.streams++;
    if (session.idle) clearTimeout(session.idle);
    session.idle = null;
    const stream = session.h2.request(
      { ':method': 'CONNECT', ':authority': authorityOf(target) },
      { endStream: false },
    );
    stream.on('error', () => {});
    stream.once('close', () => {
      session.streams--;
      if (session.streams === 0 && !session.draining) this.idle(session);
    });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        stream.close(h2.NGHTTP2_CANCEL);
        resolve({
          ok: false,
          reason: 'timeout',
          detail: `CONNECT ${authorityOf(target)}: no answer in ${core.limits.handshakeTimeoutMs} ms`,
          retry: false,
        });
      }, core.limits.handshakeTimeoutMs);
      stream.once('response', (headers: IncomingHttpHeaders) => {
        clearTimeout(timer);
        const status = Number(headers[':status']);
        if (status !== 200) {
          stream.close(h2.NGHTTP2_CANCEL);
          resolve({
            ok: false,
            reason: 'stream-refused',
            detail: `CONNECT ${authorityOf(target)}: ${status} ${String(headers['x-riptides-reason'] ?? '')}`,
            retry: false,
          });
          return;
        }
        core.metrics.streams.inc({ direction: 'outbound', session: reused ? 'reused' : 'new' });
        resolve({
          ok: true,
          kind: 'stream',
          stream,
          session: session.id,
          peer: peer.spiffeId,
          leaf: session.leaf,
          version: tlsName(session.tls.getProtocol()),
        });
      });
      stream.once('close', () => {
        clearTimeout(timer);
        // Resolving twice is a no-op: this only answers a stream closed before its response.
        resolve({
          ok: false,
          reason: 'protocol',
          detail: `CONNECT ${authorityOf(target)}: stream closed before an answer (code ${stream.rstCode})`,
          retry: reused,
        });
      });
    });
  }
}

/** An inbound listener as bound (port 0 in the options → the port the system chose). */
export interface BoundFront {
  listener: InboundListener;
  port: number;
}

interface ServerSession {
  id: number;
  raw: Socket;
  tls: TLSSocket;
  listener: InboundListener;
  context: SecureContext;
  peer: string;
  leaf: X509Certificate;
  notAfter: number;
  /** Streams carried so far (the reuse metric), and open now (the idle close). */
  streams: number;
  open: number;
  /** The pre-NAT port of the session's connection (nftables fronting), asked once when needed. */
  originalPort?: number | null;
  /** Workload dials in progress, and the CONNECTs waiting for one to end (`MAX_PENDING_DIALS`). */
  dialing: number;
  waiting: Array<() => void>;
  /** The stream-rate bucket (`muxStreamsPerSecond`): tokens left, and when it was last filled (ms). */
  tokens: number;
  filledAt: number;
}

/**
 * The server side: an mTLS connection that chose `riptides-h2` (its client SVID already checked as any
 * MUTUAL connection's) becomes an HTTP/2 session whose streams must each be a CONNECT (RFC 9113 §8.5) to a
 * port this data plane fronts for the session's workload; each is authorized again with the policy in force,
 * then spliced to that workload's `forward` address: the authority's host is never dialed.
 */
export class MuxServer {
  private readonly server: Http2Server;
  private handing: ServerSession | null = null;
  private nextId = 1;

  constructor(
    private readonly core: Core,
    /** Inbound listeners as bound, read at each stream. */
    private readonly fronts: () => readonly BoundFront[],
  ) {
    // Never listens: sessions are handed over by `serve`, already TLS, already authenticated.
    this.server = h2Server(sessionOptions(core.limits) as SecureServerOptions);
    this.server.on('session', (session: ServerHttp2Session) => {
      const s = this.handing;
      if (!s) return void session.destroy();
      this.handing = null;
      this.attach(session, s);
    });
  }

  /** Serves an authenticated `riptides-h2` connection of `peer` (whose certificate is `leaf`). */
  serve(
    tls: TLSSocket,
    raw: Socket,
    listener: InboundListener,
    context: SecureContext,
    peer: string,
    leaf: X509Certificate,
  ): void {
    this.handing = {
      id: this.nextId++,
      raw,
      tls,
      listener,
      context,
      peer,
      leaf,
      notAfter: expiryOf(leaf, tls.getX509Certificate()),
      streams: 0,
      open: 0,
      dialing: 0,
      waiting: [],
      tokens: this.core.limits.muxStreamsPerSecond,
      filledAt: Date.now(),
    };
    // What tls.Server does before 'secureConnection': a TLSSocket made outside one stays `secureConnecting`,
    // and node's http2 would wait for a 'secureConnect' that a server socket never emits.
    (tls as TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
    // The 'session' event comes synchronously from this emit (node's http2 connection listener).
    this.server.emit('connection', tls);
    if (this.handing) {
      this.handing = null;
      tls.destroy();
    }
  }

  private attach(session: ServerHttp2Session, s: ServerSession): void {
    const core = this.core;
    // Twice the client's idle time, so that the client, which knows when it will open a stream, closes first.
    session.setTimeout(core.limits.muxIdleTimeoutMs * 2, () => {
      if (s.open === 0) session.close();
    });
    session.once('connect', () => session.setLocalWindowSize(core.limits.muxStreamWindowBytes * 16));
    const guard: Guard = {
      direction: 'inbound',
      session: true,
      check: () => {
        if (core.contexts.identity(s.listener.spiffeId) !== s.context)
          return 'the SVID or the trust bundle changed';
        if (Date.now() >= s.notAfter) return 'a certificate of the session expired';
        const denied = this.authorize(s, s.listener);
        return denied ? `${denied.reason}: ${denied.detail}` : null;
      },
      close: () => session.close(),
    };
    core.guarded.set(guard, guard);
    session.once('close', () => core.guarded.delete(guard));
    // A session node's HTTP/2 closes itself (its flood protection, a protocol error) or that the peer ends with
    // an error code: logged and counted with the peer, else an abusive peer would leave no trace.
    const closedBy = (reason: string, detail: string) => {
      core.metrics.sessionsClosed.inc({ direction: 'inbound', reason });
      this.warn(s, 'session-closed', reason, detail);
    };
    session.on('error', (e: NodeJS.ErrnoException) => closedBy('error', e.code ?? e.message));
    // The client's preface and SETTINGS within the handshake deadline: else an authenticated peer could hold
    // the TLS connection without a session for twice the idle timeout.
    const preface = setTimeout(() => {
      closedBy('preface-timeout', `no HTTP/2 preface and SETTINGS in ${core.limits.handshakeTimeoutMs} ms`);
      session.destroy();
    }, core.limits.handshakeTimeoutMs);
    session.once('remoteSettings', () => clearTimeout(preface));
    session.once('close', () => clearTimeout(preface));
    session.on('goaway', (code: number) => {
      if (code !== h2.NGHTTP2_NO_ERROR) closedBy('peer-goaway', `GOAWAY code ${code}`);
    });
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      // First: a stream closed with an error code emits 'error', which unheard would end the process (a peer's
      // rapid reset past the rate did, in the test suite).
      stream.on('error', () => {});
      // Streams read with the one past the rate, after the GOAWAY: not processed, retryable elsewhere.
      if (session.closed) return void stream.close(h2.NGHTTP2_REFUSED_STREAM);
      if (!this.take(s)) {
        closedBy('stream-rate', `more than ${core.limits.muxStreamsPerSecond} streams a second`);
        stream.close(h2.NGHTTP2_REFUSED_STREAM);
        // GOAWAY first (node's destroy would close the socket before it is flushed); the streams in flight
        // finish or are reset, and the session closes with the last.
        session.goaway(h2.NGHTTP2_ENHANCE_YOUR_CALM);
        session.close();
        return;
      }
      this.onStream(s, stream, headers);
    });
  }

  /** A warning about session `s`, naming its peer, source address and session. */
  private warn(s: ServerSession, event: string, reason: string, detail: string): void {
    this.core.log({
      level: 'warn',
      event,
      direction: 'inbound',
      reason,
      detail,
      peer_spiffe_id: s.peer,
      src: s.raw.remoteAddress,
      session: s.id,
    });
  }

  /** Takes one token of `s`'s stream-rate bucket (refilled at `muxStreamsPerSecond`); false when empty. */
  private take(s: ServerSession): boolean {
    const rate = this.core.limits.muxStreamsPerSecond;
    const now = Date.now();
    s.tokens = Math.min(rate, s.tokens + ((now - s.filledAt) * rate) / 1000);
    s.filledAt = now;
    if (s.tokens < 1) return false;
    s.tokens--;
    return true;
  }

  /** Why `s`'s peer may not reach `front` now, or null: the workload's inbound policy, the peer's validity. */
  private authorize(
    s: ServerSession,
    front: InboundListener,
  ): { reason: HandshakeFailure | 'mode'; detail: string } | null {
    const rules = this.core.inputs.rules();
    const identity = findIdentity(rules, front.spiffeId);
    if (!identity) return { reason: 'no-svid', detail: `${front.spiffeId} is not in the program in force` };
    if (identity.inbound.mode === 'SIMPLE')
      return { reason: 'mode', detail: 'mode is now SIMPLE: no client SVID is taken' };
    const peer = checkResumedPeer(s.leaf, rules?.trustDomain ?? '', [identity.inbound.allowedSpiffeIds]);
    return peer.ok ? null : peer;
  }

  /** The inbound listener a CONNECT to `port` reaches on session `s`: one of the same workload, or none. */
  private front(s: ServerSession, port: number): InboundListener | null {
    for (const f of this.fronts())
      if (f.port === port && f.listener.spiffeId === s.listener.spiffeId) return f.listener;
    // Fronted through an nftables redirect, the client named the workload's port from before the redirect.
    if (s.originalPort === undefined) s.originalPort = originalDestination(s.raw)?.port ?? null;
    return s.originalPort === port ? s.listener : null;
  }

  private onStream(s: ServerSession, stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    const core = this.core;
    const refuse = (status: number, reason: string, detail: string) => {
      core.metrics.streamsRefused.inc({ direction: 'inbound', reason });
      this.warn(s, 'stream-refused', reason, detail);
      if (!stream.destroyed && !stream.headersSent)
        stream.respond({ ':status': status, 'x-riptides-reason': reason }, { endStream: true });
    };
    // RFC 9113 §8.5: CONNECT with :authority and neither :scheme nor :path (no extended CONNECT).
    if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== undefined) {
      refuse(405, 'not-connect', `${String(headers[':method'])} on a riptides-h2 session`);
      return;
    }
    const authority = parseAuthority(String(headers[':authority'] ?? ''));
    if (!authority) {
      refuse(400, 'bad-authority', String(headers[':authority']));
      return;
    }
    const front = this.front(s, authority.port);
    if (!front) {
      const detail = `port ${authority.port} is not one this data plane fronts for ${s.listener.spiffeId}`;
      refuse(403, 'not-fronted', detail);
      return;
    }
    const denied = this.authorize(s, front);
    if (denied) {
      refuse(403, denied.reason, denied.detail);
      return;
    }
    this.whenDialSlot(s, () => {
      // A stream closed already (a CONNECT its client reset at once: rapid reset) costs no dial. `closed`, not
      // `destroyed`: node destroys a reset stream only once its readable side is consumed.
      if (stream.closed || stream.destroyed) return this.dialEnded(s);
      this.dialWorkload(s, stream, front, authority.port, refuse);
    });
  }

  /**
   * Runs `dial` on a later tick (so that a CONNECT and the RST_STREAM read with it are both seen first) once `s`
   * has fewer than `MAX_PENDING_DIALS` dials in progress; `dial` must end with `dialEnded(s)`.
   */
  private whenDialSlot(s: ServerSession, dial: () => void): void {
    const start = () => {
      s.dialing++;
      setImmediate(dial);
    };
    if (s.dialing < MAX_PENDING_DIALS) start();
    else s.waiting.push(start);
  }

  private dialEnded(s: ServerSession): void {
    s.dialing--;
    s.waiting.shift()?.();
  }

  private dialWorkload(
    s: ServerSession,
    stream: ServerHttp2Stream,
    front: InboundListener,
    port: number,
    refuse: (status: number, reason: string, detail: string) => void,
  ): void {
    const core = this.core;
    const workload = netConnect({ host: front.forward.host, port: front.forward.port, allowHalfOpen: true });
    workload.setNoDelay(true);
    let dialing = true;
    const ended = () => {
      if (!dialing) return;
      dialing = false;
      this.dialEnded(s);
    };
    const unreachable = (e: Error) => {
      ended();
      core.log({
        level: 'warn',
        event: 'workload-unreachable',
        spiffe_id: front.spiffeId,
        detail: e.message,
      });
      refuse(502, 'workload-unreachable', e.message);
    };
    workload.once('error', unreachable);
    stream.once('close', () => {
      if (!workload.connecting) return;
      ended();
      workload.destroy();
    });
    workload.once('connect', () => {
      ended();
      workload.off('error', unreachable);
      if (stream.closed || stream.destroyed) return void workload.destroy();
      stream.respond({ ':status': 200 });
      this.carry(s, front, port, stream, workload);
    });
  }

  private carry(
    s: ServerSession,
    front: InboundListener,
    port: number,
    stream: ServerHttp2Stream,
    workload: Socket,
  ): void {
    const core = this.core;
    core.metrics.streams.inc({ direction: 'inbound', session: s.streams++ === 0 ? 'new' : 'reused' });
    core.metrics.connections.inc({ direction: 'inbound', mode: 'mtls' });
    core.metrics.active.inc({ direction: 'inbound' });
    s.open++;
    const record = core.table.open({
      direction: 'inbound',
      mode: 'mtls',
      src: s.raw.remoteAddress ?? '',
      src_port: s.raw.remotePort ?? 0,
      dst: front.listen.host,
      dst_port: port,
      tls_version: 'NONE',
      mtls_version: tlsName(s.tls.getProtocol()),
      spiffe_id: front.spiffeId,
      peer_spiffe_id: s.peer,
      pid: null,
      binding: null,
      session: s.id,
    });
    const guard: Guard = {
      direction: 'inbound',
      check: () => {
        const denied = this.authorize(s, front);
        return denied ? `${denied.reason}: ${denied.detail}` : null;
      },
      close: () => {
        stream.destroy(new Error('revoked'));
        workload.destroy();
      },
    };
    core.guarded.set(guard, guard);
    spliceStream(workload, stream, () => {
      s.open--;
      core.guarded.delete(guard);
      core.table.close(record);
      core.metrics.active.dec({ direction: 'inbound' });
    });
  }
}

/** The outbound guard of a connection to `peer` (`leaf`): its validity and the allow lists in force. */
export function peerCheck(
  core: Core,
  leaf: X509Certificate | null | undefined,
  allowLists: () => string[][],
): () => string | null {
  const notAfter = leaf ? Date.parse(leaf.validTo) : Number.POSITIVE_INFINITY;
  return () => {
    if (Date.now() >= notAfter) return 'peer certificate expired';
    const td = core.inputs.rules()?.trustDomain ?? '';
    const result = leaf ? checkPeerId(svidLeafId(leaf), td, allowLists()) : null;
    return result && !result.ok ? `${result.reason}: ${result.detail}` : null;
  };
}
