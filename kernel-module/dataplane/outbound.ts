/**
 * One outbound connection of an application, however it was intercepted (proxy CONNECT, transparent redirect,
 * or an explicit outbound mapping): attribute the process, match the destination, then pass it through, upgrade
 * it to mTLS toward the peer's data plane, or intercept its HTTP to inject a credential.
 *
 * Transport by the rule's TLS mode: MUTUAL → mTLS (a failed handshake or a peer outside the allow lists closes
 * the connection with a logged reason); SIMPLE → the application's own TLS passes through, plaintext is
 * originated as TLS to the upstream; PERMISSIVE or null → mTLS when the peer is managed (ALPN `riptides`
 * answered; see README "Managed peers"), plain TCP otherwise. mTLS goes through the session pool (`mux.ts`): a
 * CONNECT stream of a pooled session toward a peer that multiplexes, a connection of its own toward one that
 * answers only `riptides`.
 */
import { constants as h2 } from 'node:http2';
import { isIP, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { type ConnectionRecord, tlsName } from './connections.ts';
import type { Core } from './core.ts';
import { dialMtls, dialPlain, dialTls, type ManagedPeers, outboundAllowLists } from './dial.ts';
import type { HttpRelay, UpstreamKind } from './http-relay.ts';
import type { EgressRule, RuleIdentity, TlsMode } from './inputs.ts';
import { decide, decisionKey, findIdentity, type ManagedDecision, type Target } from './match.ts';
import { peerCheck, type SessionPool, spliceStream } from './mux.ts';
import { splice } from './pipe.ts';
import { type Sniffed, sniff } from './sniff.ts';

export type Via = 'connect' | 'transparent' | 'mapped';

export interface Hooks {
  /** The connection will be served: a proxy answers `200 Connection Established`. */
  accept(): void;
  /** It will not: a proxy answers with `status` and the reason; otherwise the socket is closed. */
  refuse(status: number, reason: string): void;
}

export class Outbound {
  constructor(
    private readonly core: Core,
    private readonly relay: HttpRelay,
    private readonly managed: ManagedPeers,
    private readonly pool: SessionPool,
  ) {}

  async handle(client: Socket, initial: Target, via: Via, hooks: Hooks): Promise<void> {
    const core = this.core;
    client.pause();
    // The client's socket is connected to the original destination when redirected, else to this listener.
    const peerOfClient =
      via === 'transparent' && initial.ip
        ? { address: initial.ip, port: initial.port }
        : { address: client.localAddress ?? '', port: client.localPort ?? 0 };
    const owner = core.attributor.owner(
      client.remoteAddress ?? '',
      client.remotePort ?? 0,
      core.inputs.attestedPids(),
      peerOfClient,
    );
    const process = owner ? await core.inputs.identityOf(owner.pid) : null;
    let target = initial;
    let sniffed: Sniffed | null = null;
    // Transparent connections carry only an IP: the ClientHello's SNI names the host for matching and minting.
    if (via === 'transparent') {
      sniffed = await sniff(client, core.limits.sniffTimeoutMs);
      if (sniffed.closed) return void client.destroy();
      if (sniffed.sni) target = { ...target, host: sniffed.sni };
    }
    const decision = decide(core.inputs.rules(), process, target);
    const identity = decision.identity;
    const record = core.table.open({
      direction: 'outbound',
      mode: 'pending',
      src: client.remoteAddress ?? '',
      src_port: client.remotePort ?? 0,
      dst: target.host,
      dst_port: target.port,
      tls_version: 'NONE',
      mtls_version: 'NONE',
      spiffe_id: identity?.spiffeId ?? process?.spiffeId ?? null,
      peer_spiffe_id: null,
      pid: owner?.pid ?? null,
      binding: null,
    });
    core.metrics.active.inc({ direction: 'outbound' });
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      core.table.close(record);
      core.metrics.active.dec({ direction: 'outbound' });
    };
    client.once('close', finish);
    // Gone during attribution or sniffing: its 'close' may have been emitted before the listener was added.
    if (client.destroyed) {
      finish();
      return;
    }

    if (decision.kind === 'passthrough') {
      core.table.update(record, { mode: 'passthrough', reason: decision.reason });
      core.metrics.connections.inc({ direction: 'outbound', mode: 'passthrough' });
      core.log({
        level: 'info',
        event: 'passthrough',
        reason: decision.reason,
        pid: record.pid,
        dst: target.host,
        port: target.port,
      });
      return this.pipePlain(client, target, hooks);
    }

    const rule = decision.rule;
    const id = decision.identity;
    // A kept-alive HTTP connection carries many requests: each after an input change must still be decided so.
    const decidedFor = target;
    const key = decisionKey(decision);
    const recheck = (): ManagedDecision | null => {
      const now = decide(core.inputs.rules(), process, decidedFor);
      return now.kind === 'managed' && decisionKey(now) === key ? now : null;
    };
    // A connection known only by its IP: a Host name is accepted where the policy, deciding for that name
    // alone, binds the same credential (the name is what an upstream routes by).
    const sameDecision = (name: string): boolean => {
      const now = decide(core.inputs.rules(), process, { host: name, ip: null, port: decidedFor.port });
      return now.kind === 'managed' && decisionKey(now) === key;
    };
    const mode = rule?.tls.mode ?? null;
    // `connection.tls.intercept` on the identity covers every destination it reaches (as the validator's RT049
    // reads it); on an egress rule, that rule's destinations.
    const intercept = (rule?.tls.intercept ?? false) || id.inbound.intercept;
    const credential = decision.credential;
    const allowLists = () => this.allowLists(id, rule);

    if (!sniffed && (intercept || credential || mode === 'SIMPLE')) {
      hooks.accept();
      sniffed = await sniff(client, core.limits.sniffTimeoutMs);
      if (sniffed.closed) return void client.destroy();
      // A connection decided for an IP takes the application's server name only where the policy, deciding
      // for that name, gives the same decision: else the name would choose where the credential goes.
      if (sniffed.sni && isIP(target.host) && sameDecision(sniffed.sni))
        target = { ...target, host: sniffed.sni };
      hooks = { accept: () => {}, refuse: () => client.destroy() };
    }

    if (sniffed?.silent && credential) {
      // A client slower than the sniff to speak first where a credential is owed to what it will send (HTTP and
      // TLS clients speak first): it gets the handshake's time, and never a path to the upstream without it (a
      // slow ClientHello reached the upstream uninjected, and an application could choose that). Without a
      // credential, a silent client is a server-first protocol (SMTP, MySQL) and is piped after the sniff, even
      // under an identity that intercepts every destination (found by the second review).
      sniffed = await sniff(client, Math.max(0, core.limits.handshakeTimeoutMs - core.limits.sniffTimeoutMs));
      if (sniffed.closed) return void client.destroy();
      if (sniffed.silent) {
        core.metrics.requestsRefused.inc({ reason: 'client-silent' });
        core.log({
          level: 'warn',
          event: 'credential-not-injected',
          reason: `the application sent nothing within ${core.limits.handshakeTimeoutMs} ms`,
          binding: credential?.name ?? null,
          dst: target.host,
        });
        return void client.destroy();
      }
      if (sniffed.sni && isIP(target.host) && sameDecision(sniffed.sni))
        target = { ...target, host: sniffed.sni };
    }

    if (sniffed?.tls && intercept)
      return this.intercept(client, target, id, rule, credential, record, sniffed, recheck, sameDecision);
    if (sniffed && !sniffed.tls && !sniffed.silent && credential) {
      const upstream = await this.httpUpstream(mode, id, target, allowLists);
      if (!upstream) return this.fail(client, hooks, record, 'mtls', 'not-managed');
      core.table.update(record, { mode: 'inject', binding: null });
      core.metrics.connections.inc({ direction: 'outbound', mode: 'inject' });
      this.relay.attach(client, {
        identity: id,
        credential,
        target,
        upstream,
        allowLists,
        record,
        recheck,
        defaultPort: 80,
        sameDecision,
      });
      client.resume();
      return;
    }
    if (credential && sniffed?.tls) {
      core.metrics.requestsRefused.inc({ reason: 'tls-without-intercept' });
      core.log({
        level: 'warn',
        event: 'credential-not-injected',
        reason: 'the application speaks TLS and the rule has no intercept',
        binding: credential.name,
        dst: target.host,
      });
    }
    return this.pipeByMode(client, target, id, mode, sniffed, record, hooks, allowLists);
  }

  private allowLists(identity: RuleIdentity, rule: EgressRule | null): string[][] {
    const current = findIdentity(this.core.inputs.rules(), identity.spiffeId);
    if (!current) return [['identity removed from the program']];
    const currentRule = rule ? current.egress.find((e) => e.hash === rule.hash) : undefined;
    return outboundAllowLists(current, currentRule?.allowedSpiffeIds ?? rule?.allowedSpiffeIds ?? []);
  }

  private async pipePlain(client: Socket, target: Target, hooks: Hooks): Promise<void> {
    const up = await dialPlain(this.core, target);
    if (!up.ok) {
      hooks.refuse(502, up.detail);
      return;
    }
    hooks.accept();
    splice(client, up.socket, () => {});
  }

  private fail(
    client: Socket,
    hooks: Hooks,
    record: ConnectionRecord,
    mode: string,
    reason: string,
    detail?: string,
  ) {
    this.core.table.update(record, { mode, reason });
    this.core.metrics.handshakesFailed.inc({ direction: 'outbound', reason });
    this.core.log({
      level: 'warn',
      event: 'handshake-failed',
      direction: 'outbound',
      reason,
      detail,
      pid: record.pid,
      spiffe_id: record.spiffe_id,
      dst: record.dst,
      port: record.dst_port,
    });
    hooks.refuse(502, `${reason}: ${detail ?? ''}`);
    client.destroy();
  }

  /** mTLS when the peer is managed: MUTUAL always, PERMISSIVE/null after a (cached) probe. */
  private async pipeByMode(
    client: Socket,
    target: Target,
    identity: RuleIdentity,
    mode: TlsMode | null,
    sniffed: Sniffed | null,
    record: ConnectionRecord,
    hooks: Hooks,
    allowLists: () => string[][],
  ): Promise<void> {
    const core = this.core;
    if (mode === 'SIMPLE') {
      if (sniffed?.tls) {
        core.table.update(record, { mode: 'passthrough', reason: 'application-tls' });
        core.metrics.connections.inc({ direction: 'outbound', mode: 'passthrough' });
        return this.pipePlain(client, target, hooks);
      }
      const up = await dialTls(core, target);
      if (!up.ok) return this.fail(client, hooks, record, 'tls', up.reason, up.detail);
      core.table.update(record, { mode: 'tls', tls_version: tlsName(up.socket.getProtocol()) });
      core.metrics.connections.inc({ direction: 'outbound', mode: 'tls' });
      hooks.accept();
      return splice(client, up.socket, () => {});
    }
    const known = mode === 'MUTUAL' ? true : this.managed.get(target);
    if (known === false) {
      core.table.update(record, { mode: 'plain', reason: 'peer-not-managed' });
      core.metrics.connections.inc({ direction: 'outbound', mode: 'plain' });
      return this.pipePlain(client, target, hooks);
    }
    const up = await this.pool.connect(identity, target, allowLists, {
      ...(known ? {} : { timeoutMs: core.limits.probeTimeoutMs }),
      waitForSvid: mode === 'MUTUAL',
    });
    if (!up.ok) {
      // Without an SVID yet, a mode-null/PERMISSIVE rule cannot upgrade: plain TCP, not remembered.
      if (up.reason === 'no-svid' && mode !== 'MUTUAL') {
        core.table.update(record, { mode: 'plain', reason: 'no-svid' });
        core.metrics.connections.inc({ direction: 'outbound', mode: 'plain' });
        return this.pipePlain(client, target, hooks);
      }
      if (known === null && up.notManaged) {
        this.managed.set(target, false);
        core.table.update(record, { mode: 'plain', reason: 'peer-not-managed' });
        core.metrics.connections.inc({ direction: 'outbound', mode: 'plain' });
        return this.pipePlain(client, target, hooks);
      }
      return this.fail(client, hooks, record, 'mtls', up.reason, up.detail);
    }
    if (mode !== 'MUTUAL') this.managed.set(target, true);
    // The application may have gone while the dial was under way (its record is closed already): the stream
    // or connection just obtained is given back, else the peer would hold it and the workload's socket forever.
    if (client.destroyed) {
      if (up.kind === 'stream') up.stream.close(h2.NGHTTP2_CANCEL);
      else up.socket.destroy();
      return;
    }
    core.metrics.connections.inc({ direction: 'outbound', mode: 'mtls' });
    const check = peerCheck(core, up.leaf, allowLists);
    if (up.kind === 'stream') {
      const stream = up.stream;
      core.table.update(record, {
        mode: 'mtls',
        mtls_version: up.version,
        peer_spiffe_id: up.peer,
        session: up.session,
      });
      hooks.accept();
      const guard = {
        direction: 'outbound' as const,
        check,
        close: () => {
          stream.destroy(new Error('revoked'));
          client.destroy();
        },
      };
      core.guarded.set(guard, guard);
      return spliceStream(client, stream, () => core.guarded.delete(guard));
    }
    const socket = up.socket;
    core.table.update(record, {
      mode: 'mtls',
      mtls_version: tlsName(socket.getProtocol()),
      peer_spiffe_id: up.peer,
    });
    hooks.accept();
    const guard = {
      direction: 'outbound' as const,
      check,
      close: () => {
        socket.destroy();
        client.destroy();
      },
    };
    core.guarded.set(guard, guard);
    splice(client, socket, () => core.guarded.delete(guard));
  }

  /**
   * Where a managed plain-HTTP request goes: mTLS for MUTUAL, TLS for SIMPLE; without a mode, mTLS when the peer
   * is managed (a probe, remembered per destination), plain when it is known not to be; null when neither is
   * known (the probe failed otherwise).
   */
  async httpUpstream(
    mode: TlsMode | null,
    identity: RuleIdentity,
    target: Target,
    allowLists: () => string[][],
  ): Promise<UpstreamKind | null> {
    if (mode === 'MUTUAL') return 'mtls';
    if (mode === 'SIMPLE') return 'tls';
    const known = this.managed.get(target);
    if (known !== null) return known ? 'mtls' : 'plain';
    const probe = await dialMtls(this.core, identity, target, allowLists, {
      timeoutMs: this.core.limits.probeTimeoutMs,
    });
    if (probe.ok) {
      probe.socket.destroy();
      this.managed.set(target, true);
      return 'mtls';
    }
    if (probe.notManaged) {
      this.managed.set(target, false);
      return 'plain';
    }
    if (probe.reason === 'no-svid') return 'plain';
    return null;
  }

  /** TLS toward the application terminated with a minted certificate; its HTTP goes to the relay. */
  private async intercept(
    client: Socket,
    target: Target,
    identity: RuleIdentity,
    rule: EgressRule | null,
    credential: Parameters<HttpRelay['attach']>[1]['credential'],
    record: ConnectionRecord,
    sniffed: Sniffed,
    recheck: () => ManagedDecision | null,
    sameDecision: (host: string) => boolean,
  ): Promise<void> {
    const core = this.core;
    const host = sniffed.sni ?? target.host;
    let context: Awaited<ReturnType<Core['minter']['context']>>;
    try {
      context = await core.minter.context(host);
    } catch (e) {
      return this.fail(
        client,
        { accept() {}, refuse() {} },
        record,
        'intercept',
        'no-intercept-ca',
        (e as Error).message,
      );
    }
    const app = new TLSSocket(client, { isServer: true, secureContext: context });
    const timer = setTimeout(
      () => app.destroy(new Error('handshake timed out')),
      core.limits.handshakeTimeoutMs,
    );
    let secured = false;
    app.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!secured) {
        const reason = /timed out/.test(e.message) ? 'timeout' : 'protocol';
        core.metrics.handshakesFailed.inc({ direction: 'intercept', reason });
        core.log({
          level: 'warn',
          event: 'handshake-failed',
          direction: 'intercept',
          reason,
          detail: e.code ?? e.message,
          pid: record.pid,
        });
      }
      app.destroy();
      client.destroy();
    });
    app.once('secure', async () => {
      secured = true;
      clearTimeout(timer);
      const upstream =
        (await this.httpUpstream(rule?.tls.mode === 'MUTUAL' ? 'MUTUAL' : 'SIMPLE', identity, target, () =>
          this.allowLists(identity, rule),
        )) ?? 'tls';
      core.table.update(record, { mode: 'intercept', tls_version: tlsName(app.getProtocol()) });
      core.metrics.connections.inc({ direction: 'outbound', mode: 'intercept' });
      this.relay.attach(app as unknown as Socket, {
        identity,
        credential,
        target,
        upstream,
        allowLists: () => this.allowLists(identity, rule),
        record,
        recheck,
        defaultPort: 443,
        sameDecision,
      });
    });
    client.resume();
  }
}
