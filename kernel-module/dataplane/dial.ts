/**
 * Connections the data plane makes: plain TCP, TLS origination toward an upstream (verified against the system
 * store or `upstreamCa`), and mTLS toward a peer's data plane (TLS 1.3, the identity's SVID, ALPN `riptides`,
 * the peer's X509-SVID checked against the trust bundle and the allow lists). Every dial has a deadline.
 */
import type { X509Certificate } from 'node:crypto';
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { type SecureContext, type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { Core } from './core.ts';
import type { RuleIdentity } from './inputs.ts';
import type { Target } from './match.ts';
import { reachesOwnListener } from './own-endpoint.ts';
import { checkPeer, checkResumedPeer, type HandshakeFailure } from './svid-check.ts';
import { ALPN } from './tls-contexts.ts';

export type DialResult<S> = { ok: true; socket: S } | { ok: false; reason: HandshakeFailure; detail: string };

function address(target: Target): string {
  return target.ip ?? target.host;
}

export function dialPlain(core: Core, target: Target): Promise<DialResult<Socket>> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: address(target), port: target.port, lookup: core.lookup });
    socket.setNoDelay(true);
    const timer = setTimeout(
      () => socket.destroy(new Error('connect timed out')),
      core.limits.connectTimeoutMs,
    );
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      if (reachesOwnListener(core.ownAddresses, socket.remoteAddress ?? '', socket.remotePort ?? 0)) {
        socket.destroy();
        resolve({
          ok: false,
          reason: 'connect',
          detail: `loop detected: ${address(target)}:${target.port} is this data plane`,
        });
        return;
      }
      resolve({ ok: true, socket });
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      resolve({
        ok: false,
        reason: 'connect',
        detail: `connect to ${address(target)}:${target.port}: ${e.message}`,
      });
    });
  });
}

/** TLS origination toward an upstream named `target.host`, verified like any HTTPS client would. */
export function dialTls(core: Core, target: Target): Promise<DialResult<TLSSocket>> {
  return new Promise((resolve) => {
    const servername = isIP(target.host) ? undefined : target.host;
    const socket = tlsConnect({
      host: address(target),
      port: target.port,
      servername,
      secureContext: core.contexts.upstreamContext(),
      lookup: core.lookup,
    });
    socket.setNoDelay(true);
    const timer = setTimeout(
      () => socket.destroy(new Error('TLS handshake timed out')),
      core.limits.handshakeTimeoutMs,
    );
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve({ ok: true, socket });
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const reason: HandshakeFailure =
        e.code === 'CERT_HAS_EXPIRED'
          ? 'expired'
          : e.code?.startsWith('ERR_TLS') || /certificate|verify/i.test(e.message)
            ? 'untrusted'
            : 'connect';
      resolve({ ok: false, reason, detail: `TLS to ${target.host}:${target.port}: ${e.message}` });
    });
  });
}

/**
 * TLS 1.3 session tickets from peer data planes, by identity and destination, with the peer certificate the
 * full handshake verified: a resumed handshake skips the certificate signatures (HAProxy's `server … ssl`
 * reuses sessions the same way) and shows no certificate, so the remembered one is checked again against the
 * current allow lists and its own validity on every connection.
 */
const sessionsByContext = new WeakMap<
  SecureContext,
  Map<string, { ticket: Buffer; leaf: X509Certificate }>
>();

/** The allow lists an outbound mTLS peer must satisfy: the rule's and the identity's outbound list. */
export function outboundAllowLists(identity: RuleIdentity, ruleAllowed: readonly string[]): string[][] {
  return [[...ruleAllowed], identity.outbound.allowedSpiffeIds];
}

/**
 * The mTLS context of an identity, waiting up to `svidWaitMs` for its SVID (and the trust bundle) when it has
 * none yet: an attested process's SVID is on its way (CSR → reconciler → control interface), and failing its
 * first connection would make every newly started client lose that race. Null when it does not come in time.
 */
export async function identityContext(core: Core, spiffeId: string): Promise<SecureContext | null> {
  const now = core.contexts.identity(spiffeId);
  if (now || core.limits.svidWaitMs <= 0) return now;
  return new Promise((resolve) => {
    let unsubscribe = () => {};
    const timer = setTimeout(() => done(null), core.limits.svidWaitMs);
    const done = (context: SecureContext | null) => {
      clearTimeout(timer);
      unsubscribe();
      resolve(context);
    };
    unsubscribe = core.inputs.onChange(() => {
      const context = core.contexts.identity(spiffeId);
      if (context) done(context);
    });
  });
}

/**
 * An mTLS dial's outcome. On success: `protocol`, the ALPN protocol the peer chose among those offered;
 * `context`, the identity's TLS context it was made with (a later SVID or trust bundle makes a new one);
 * `peer` and `leaf`, the peer's SPIFFE ID and the certificate it was checked on.
 */
export type MtlsDial =
  | ({ ok: true; socket: TLSSocket; protocol: string; context: SecureContext } & {
      notManaged?: boolean;
      peer?: string;
      leaf?: X509Certificate;
    })
  | { ok: false; reason: HandshakeFailure; detail: string; notManaged?: boolean };

/**
 * mTLS toward a peer data plane, offering `alpn` (default `riptides` alone). `notManaged` distinguishes a destination that is not a managed peer at all
 * (no `riptides` ALPN) from a managed peer that failed our checks. `waitForSvid`: where mTLS is required
 * (MUTUAL), an identity without its SVID yet is waited for (`svidWaitMs`) rather than failed at once; where it
 * is optional (mode null, PERMISSIVE) the caller goes plain at once instead.
 */
export async function dialMtls(
  core: Core,
  identity: RuleIdentity,
  target: Target,
  allowLists: () => string[][],
  opts: { timeoutMs?: number; waitForSvid?: boolean; alpn?: readonly string[] } = {},
): Promise<MtlsDial> {
  const timeoutMs = opts.timeoutMs ?? core.limits.handshakeTimeoutMs;
  const context = opts.waitForSvid
    ? await identityContext(core, identity.spiffeId)
    : core.contexts.identity(identity.spiffeId);
  const trustDomain = core.inputs.rules()?.trustDomain;
  if (!context || !trustDomain)
    return {
      ok: false,
      reason: 'no-svid',
      detail: `${identity.spiffeId} has no SVID installed${opts.waitForSvid ? ` (waited ${core.limits.svidWaitMs} ms)` : ' yet'}`,
    };
  const offered = opts.alpn ?? [ALPN];
  return new Promise((resolve) => {
    // Per TLS context: a new SVID or trust bundle makes a new context, and the next handshake is a full one.
    const sessions =
      sessionsByContext.get(context) ?? new Map<string, { ticket: Buffer; leaf: X509Certificate }>();
    sessionsByContext.set(context, sessions);
    const sessionKey = `${address(target)}:${target.port}`;
    const cached = sessions.get(sessionKey);
    let ticket: Buffer | null = null;
    let leaf: X509Certificate | null = null;
    const remember = () => {
      if (!ticket || !leaf) return;
      if (sessions.size >= 10_000 && !sessions.has(sessionKey))
        sessions.delete(sessions.keys().next().value!);
      sessions.set(sessionKey, { ticket, leaf });
    };
    const socket = tlsConnect({
      host: address(target),
      port: target.port,
      servername: isIP(target.host) ? undefined : target.host,
      secureContext: context,
      ...(cached ? { session: cached.ticket } : {}),
      ALPNProtocols: [...offered],
      minVersion: 'TLSv1.3',
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
      lookup: core.lookup,
    });
    socket.setNoDelay(true);
    let settled = false;
    const done = (result: MtlsDial) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!result.ok) socket.destroy();
      else socket.removeAllListeners('error');
      resolve(result);
    };
    const timer = setTimeout(
      () =>
        done({
          ok: false,
          reason: 'timeout',
          detail: `mTLS handshake with ${target.host}:${target.port} timed out`,
          notManaged: true,
        }),
      timeoutMs,
    );
    // Tickets arrive after the handshake (TLS 1.3), sometimes before 'secureConnect' is handled.
    socket.on('session', (t: Buffer) => {
      ticket = t;
      remember();
    });
    socket.once('secureConnect', () => {
      const protocol = socket.alpnProtocol;
      if (typeof protocol !== 'string' || !offered.includes(protocol)) {
        done({
          ok: false,
          reason: 'not-managed',
          detail: `${target.host}:${target.port} did not answer ALPN ${offered.join(' or ')}`,
          notManaged: true,
        });
        return;
      }
      const resumed = socket.isSessionReused();
      // Read once: on a client, each getPeerX509Certificate() call takes the next certificate of the chain.
      const presented = resumed ? null : (socket.getPeerX509Certificate() ?? null);
      const peer =
        resumed && cached
          ? checkResumedPeer(cached.leaf, trustDomain, allowLists())
          : checkPeer(socket, trustDomain, allowLists(), presented);
      if (!peer.ok) {
        sessions.delete(sessionKey);
        done({ ok: false, reason: peer.reason, detail: peer.detail });
        return;
      }
      leaf = resumed && cached ? cached.leaf : presented;
      remember();
      done({ ok: true, socket, protocol, context, peer: peer.spiffeId, ...(leaf ? { leaf } : {}) });
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      const refused = ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'].includes(
        e.code ?? '',
      );
      done({
        ok: false,
        reason: refused ? 'connect' : 'protocol',
        detail: `mTLS with ${target.host}:${target.port}: ${e.message}`,
        notManaged: !refused,
      });
    });
  });
}

/** Managed-peer memory for mode-null rules: positive results are sticky (no downgrade), negative ones short. */
export class ManagedPeers {
  private readonly known = new Map<string, { managed: boolean; until: number }>();

  constructor(private readonly core: Core) {}

  get(target: Target): boolean | null {
    const hit = this.known.get(this.key(target));
    if (!hit || hit.until < Date.now()) return null;
    return hit.managed;
  }

  set(target: Target, managed: boolean): void {
    if (this.known.size > 10_000) this.known.clear();
    const ttl = managed ? this.core.limits.managedTtlMs : this.core.limits.unmanagedTtlMs;
    this.known.set(this.key(target), { managed, until: Date.now() + ttl });
  }

  private key(target: Target): string {
    return `${address(target)}:${target.port}`;
  }
}
