/**
 * In front of a workload's port (README "Inbound fronting"): a listener of the data plane forwards plaintext
 * to the workload's local port. The identity's inbound mode is read per connection, so a policy change applies
 * to the next connection at once; live connections are re-checked on every change and on an interval.
 *
 * MUTUAL: TLS with a client X509-SVID of the trust domain in `allowedSPIFFEIDs.inbound` (empty: any SVID of
 * the trust domain), else closed with a logged, counted reason. PERMISSIVE: a ClientHello offering ALPN
 * `riptides` gets the MUTUAL treatment; anything else (plaintext, or the client's own TLS to a TLS workload)
 * is forwarded untouched. SIMPLE: server-side TLS only.
 *
 * A MUTUAL (or PERMISSIVE) client offering `riptides-h2` is answered with it: its connection becomes a pooled
 * session whose CONNECT streams `mux.ts` authorizes and forwards one by one. One offering only `riptides` gets
 * one connection per application connection, as before.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { tlsName } from './connections.ts';
import type { Core } from './core.ts';
import { identityContext } from './dial.ts';
import { findIdentity } from './match.ts';
import type { MuxServer } from './mux.ts';
import { splice } from './pipe.ts';
import { sniff } from './sniff.ts';
import { checkPeer, checkPeerId, type HandshakeFailure, svidLeafId } from './svid-check.ts';
import { ALPN, MUX_ALPN } from './tls-contexts.ts';

export interface ListenAddress {
  host: string;
  port: number;
}

export interface InboundListener {
  /** The workload identity this port belongs to: its inbound policy and SVID apply. */
  spiffeId: string;
  /** Where the data plane listens (the address peers and the Service point at). */
  listen: ListenAddress;
  /** The workload's own port, reached in plaintext (normally on loopback). */
  forward: ListenAddress;
}

export class Inbound {
  constructor(
    private readonly core: Core,
    private readonly mux: MuxServer,
  ) {}

  async handle(raw: Socket, listener: InboundListener): Promise<void> {
    const core = this.core;
    raw.pause();
    raw.on('error', () => raw.destroy());
    const identity = findIdentity(core.inputs.rules(), listener.spiffeId);
    if (!identity) return this.refuse(raw, 'no-svid', `${listener.spiffeId} is not in the program in force`);
    const mode = identity.inbound.mode;
    // One deadline for the whole handshake, sniffing included.
    const deadline = Date.now() + core.limits.handshakeTimeoutMs;
    const first = await sniff(
      raw,
      mode === 'PERMISSIVE' ? core.limits.sniffTimeoutMs : core.limits.handshakeTimeoutMs,
    );
    if (first.closed) return void raw.destroy();
    const riptides = first.tls && (first.alpn.includes(ALPN) || first.alpn.includes(MUX_ALPN));
    if (mode === 'PERMISSIVE' && !riptides) return this.forwardPlain(raw, listener);
    if (!first.tls)
      return this.refuse(
        raw,
        first.silent ? 'timeout' : 'protocol',
        first.silent ? 'no ClientHello in time' : `${mode} needs TLS, the client sent something else`,
      );
    const mutual = mode !== 'SIMPLE';
    const minVersion = mutual || riptides ? 'TLSv1.3' : 'TLSv1.2';
    // A workload that just started is attested at once but gets its SVID a moment later: wait for it (bounded).
    const context =
      core.contexts.identity(listener.spiffeId, minVersion) ??
      ((await identityContext(core, listener.spiffeId)) &&
        core.contexts.identity(listener.spiffeId, minVersion));
    if (!context) return this.refuse(raw, 'no-svid', `${listener.spiffeId} has no SVID installed`);
    const tls = new TLSSocket(raw, {
      isServer: true,
      secureContext: context,
      requestCert: mutual,
      rejectUnauthorized: false,
      // The server's order decides: a client offering both gets the pooled session. SIMPLE takes no client
      // SVID, so nothing could authorize its streams: per connection only; so too with pooled sessions off.
      ...(riptides
        ? {
            ALPNProtocols:
              mutual && core.pooledSessions && first.alpn.includes(MUX_ALPN) ? [MUX_ALPN, ALPN] : [ALPN],
          }
        : {}),
    });
    const timer = setTimeout(
      () => tls.destroy(new Error('handshake timed out')),
      Math.max(0, deadline - Date.now()),
    );
    let secured = false;
    tls.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!secured)
        this.count(/timed out/.test(e.message) ? 'timeout' : 'protocol', e.code ?? e.message, raw);
      tls.destroy();
    });
    tls.once('secure', () => {
      secured = true;
      clearTimeout(timer);
      const td = core.inputs.rules()?.trustDomain ?? '';
      const current = findIdentity(core.inputs.rules(), listener.spiffeId);
      let peer: string | null = null;
      // Read once: each read makes a new X509Certificate; the same one serves the check and the guard.
      const leaf = mutual ? (tls.getPeerX509Certificate() ?? null) : null;
      if (mutual) {
        const result = checkPeer(
          tls,
          td,
          [current?.inbound.allowedSpiffeIds ?? ['(identity removed)']],
          leaf,
        );
        if (!result.ok) {
          this.count(result.reason, result.detail, raw);
          tls.destroy();
          return;
        }
        peer = result.spiffeId;
        if (tls.alpnProtocol === ALPN || tls.alpnProtocol === MUX_ALPN)
          core.metrics.mtlsSessions.inc({ direction: 'inbound', protocol: tls.alpnProtocol });
        if (tls.alpnProtocol === MUX_ALPN && leaf)
          return this.mux.serve(tls, raw, listener, context, result.spiffeId, leaf);
      }
      const record = core.table.open({
        direction: 'inbound',
        mode: mutual ? 'mtls' : 'tls',
        src: raw.remoteAddress ?? '',
        src_port: raw.remotePort ?? 0,
        dst: listener.listen.host,
        dst_port: raw.localPort ?? listener.listen.port,
        tls_version: mutual ? 'NONE' : tlsName(tls.getProtocol()),
        mtls_version: mutual ? tlsName(tls.getProtocol()) : 'NONE',
        spiffe_id: listener.spiffeId,
        peer_spiffe_id: peer,
        pid: null,
        binding: null,
      });
      core.metrics.connections.inc({ direction: 'inbound', mode: mutual ? 'mtls' : 'tls' });
      const notAfter = leaf ? Date.parse(leaf.validTo) : Number.POSITIVE_INFINITY;
      const guard = {
        direction: 'inbound' as const,
        check: (): string | null => {
          const now = findIdentity(core.inputs.rules(), listener.spiffeId);
          if (!now) return 'identity removed from the program';
          if (!mutual)
            return now.inbound.mode === 'SIMPLE'
              ? null
              : `mode is now ${now.inbound.mode}: a client SVID is required`;
          if (Date.now() >= notAfter) return 'peer certificate expired';
          const r = leaf
            ? checkPeerId(svidLeafId(leaf), core.inputs.rules()?.trustDomain ?? '', [
                now.inbound.allowedSpiffeIds,
              ])
            : null;
          return r && !r.ok ? `${r.reason}: ${r.detail}` : null;
        },
        close: () => tls.destroy(),
      };
      this.connectWorkload(tls, raw, listener, record, guard);
    });
    raw.resume();
  }

  private connectWorkload(
    front: Socket | TLSSocket,
    raw: Socket,
    listener: InboundListener,
    record: ReturnType<Core['table']['open']>,
    guard: { direction: 'inbound'; check: () => string | null; close: (reason: string) => void },
  ): void {
    const core = this.core;
    core.metrics.active.inc({ direction: 'inbound' });
    core.guarded.set(guard, guard);
    const workload = netConnect({ host: listener.forward.host, port: listener.forward.port });
    workload.setNoDelay(true);
    workload.once('connect', () => splice(front, workload, () => {}));
    workload.once('error', (e) => {
      core.log({
        level: 'warn',
        event: 'workload-unreachable',
        spiffe_id: listener.spiffeId,
        detail: e.message,
      });
      front.destroy();
    });
    raw.once('close', () => {
      core.guarded.delete(guard);
      core.table.close(record);
      core.metrics.active.dec({ direction: 'inbound' });
      workload.destroy();
    });
  }

  private forwardPlain(raw: Socket, listener: InboundListener): void {
    const record = this.core.table.open({
      direction: 'inbound',
      mode: 'permissive-plain',
      src: raw.remoteAddress ?? '',
      src_port: raw.remotePort ?? 0,
      dst: listener.listen.host,
      dst_port: raw.localPort ?? listener.listen.port,
      tls_version: 'NONE',
      mtls_version: 'NONE',
      spiffe_id: listener.spiffeId,
      peer_spiffe_id: null,
      pid: null,
      binding: null,
    });
    this.core.metrics.connections.inc({ direction: 'inbound', mode: 'permissive-plain' });
    const guard = {
      direction: 'inbound' as const,
      check: () => {
        const now = findIdentity(this.core.inputs.rules(), listener.spiffeId);
        return now?.inbound.mode === 'PERMISSIVE'
          ? null
          : `plaintext is no longer accepted (mode ${now?.inbound.mode ?? 'removed'})`;
      },
      close: () => raw.destroy(),
    };
    this.connectWorkload(raw, raw, listener, record, guard);
  }

  private count(reason: HandshakeFailure, detail: string, raw: Socket): void {
    this.core.metrics.handshakesFailed.inc({ direction: 'inbound', reason });
    this.core.log({
      level: 'warn',
      event: 'handshake-failed',
      direction: 'inbound',
      reason,
      detail,
      src: raw.remoteAddress,
      src_port: raw.remotePort,
    });
  }

  private refuse(raw: Socket, reason: HandshakeFailure, detail: string): void {
    this.count(reason, detail, raw);
    raw.destroy();
  }
}
