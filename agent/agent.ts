/**
 * The node agent: joins once, then keeps the node's control interface in line with the program of its
 * scope, over one mutual-TLS Sync stream to the reconciler.
 *
 *   - programs: each update is checked (agent/protocol/program.ts), written to the control interface, and
 *     ACKed once the kernel side enforces it; a refused one is NACKed and the program in force stays;
 *   - attestation: processes are matched against the program's selectors; identities with at least one
 *     process get an SVID (agent/svids.ts), the others none;
 *   - credentials: values arrive only for references in the program; they are loaded into the in-memory
 *     store (and written as sysfs files where the binding asks), never logged;
 *   - live state: program version, SVID serials and expiries, credential versions and fingerprints, attested
 *     processes and control-interface health are reported on the stream when they change;
 *   - the agent SVID is renewed at half its life over the stream; the reconciler being away changes nothing
 *     on the node: the last good program and unexpired SVIDs stay in force, and the agent reconnects with
 *     backoff and jitter, then resyncs.
 */

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { svidDirOf } from '../kernel-module/control/index.ts';
import type { PodSource } from './attest/index.ts';
import { rotationTime } from './backoff.ts';
import type { ChannelIdentity } from './connection.ts';
import { generateKeyAndCsr } from './csr.ts';
import { joinReconciler } from './join.ts';
import { NodeSide, type SvidFact, storeValue } from './node.ts';
import type {
  ControlRepair,
  CredentialState,
  CredentialUpdate,
  DataPlaneState,
  ErrorDetail,
  Hello,
  Out,
  ProgramAck,
  ProgramUpdate,
  Refusal,
  StateReport,
  SvidResponse,
  TrustBundle,
} from './protocol/messages.ts';
import { applyUpdate, type Program } from './protocol/program.ts';
import { bundleVersion, certificatesDer, certificatesPem } from './protocol/version.ts';
import { LIMITS, PROTOCOL_VERSION } from './protocol/wire.ts';
import { type AgentIdentity, AgentStateDir, type AgentSvid, svidFacts } from './state.ts';
import { SvidManager } from './svids.ts';
import { SyncClient } from './sync-client.ts';

export const AGENT_VERSION = '0.1.0';

/** Structured log sink; fields are metadata only. */
export interface AgentLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface AgentOptions {
  stateDir: string;
  /** HOST:PORT; taken from the state dir when the agent already joined. */
  server?: string;
  joinToken?: string;
  /** Asserted at join: the token must grant this daemon group. */
  daemonGroup?: string;
  /** PEM bundle to trust instead of the pin in the join token. */
  bundlePem?: string;
  /** Control interface root; default `<stateDir>/control`. */
  controlRoot?: string;
  kernelSide?: boolean;
  /** Most identities a program may hold (default 10,000). */
  maxIdentities?: number;
  /** Heartbeat report period; reports also go out on every change. Default 30 s. */
  reportIntervalMs?: number;
  procRoot?: string;
  rescanIntervalMs?: number;
  /** Pods of containerised processes (agent/attest KubernetesPodSource); null or absent: no Kubernetes. */
  pods?: PodSource | null;
  backoff?: { initialMs: number; maxMs: number };
  logger?: AgentLogger;
}

export class AgentError extends Error {
  /**
   * `code` is stable (`NOT_JOINED`, `LISTEN_FAILED`, …); `address` is, for `LISTEN_FAILED`, the address that
   * could not be bound, so that a command can name the flag that asked for it.
   */
  constructor(
    readonly code: string,
    message: string,
    readonly address: { host: string; port: number } | null = null,
  ) {
    super(message);
    this.name = 'AgentError';
  }
}

const SILENT: AgentLogger = { info() {}, warn() {}, error() {} };

export class Agent extends EventEmitter {
  program: Program | null = null;
  private svid!: AgentSvid & { receivedAt: Date | null };
  private bundlePem!: string;
  private bundleVer = '';
  private readonly heldCredentials = new Map<string, CredentialState>();
  private lastNack: { version: string; error: ErrorDetail } | null = null;
  private repairedId = '';
  private repairing: Promise<unknown> = Promise.resolve();
  private sync!: SyncClient;
  private svids!: SvidManager;
  private reportTimer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing: { requestId: string; keyPem: string } | null = null;
  /** The reason the last stream could not be opened, logged once until it changes or a stream succeeds. */
  private lastFailure: string | null = null;
  private processCount = new Map<string, number>();
  private processes: StateReport['processes'] = [];
  private stopped = false;
  private enforcing: Promise<unknown> = Promise.resolve();
  private dataPlaneState: (() => Promise<DataPlaneState>) | null = null;
  private readonly log: AgentLogger;

  private constructor(
    private readonly opts: AgentOptions,
    readonly identity: AgentIdentity,
    private readonly state: AgentStateDir,
    readonly node: NodeSide,
  ) {
    super();
    this.log = opts.logger ?? SILENT;
  }

  /** Joins when needed (a token and no saved identity), then starts everything. */
  static async start(opts: AgentOptions): Promise<Agent> {
    const log = opts.logger ?? SILENT;
    const state = new AgentStateDir(opts.stateDir);
    await state.ensure();
    let loaded = await state.load();
    let joined = false;
    if (loaded && loaded.svid.notAfter.getTime() <= Date.now()) {
      if (!opts.joinToken)
        throw new AgentError(
          'SVID_EXPIRED',
          `the agent SVID of ${loaded.identity.spiffeId} expired at ${loaded.svid.notAfter.toISOString()} while the reconciler was away: join again with a new token (--join-token)`,
        );
      log.warn('agent SVID expired: joining again with the token given', {
        spiffeId: loaded.identity.spiffeId,
      });
      loaded = null;
    }
    if (!loaded) {
      if (!opts.joinToken || !opts.server)
        throw new AgentError(
          'NOT_JOINED',
          `no agent identity in ${opts.stateDir}: pass --server HOST:PORT and --join-token (riptides-cli token create)`,
        );
      const identity = await joinReconciler({
        server: opts.server,
        token: opts.joinToken,
        state,
        ...(opts.daemonGroup ? { expectedDaemonGroup: opts.daemonGroup } : {}),
        ...(opts.bundlePem ? { bundlePem: opts.bundlePem } : {}),
      });
      joined = true;
      log.info('joined', {
        spiffeId: identity.spiffeId,
        daemonGroup: identity.daemonGroup,
        server: identity.server,
      });
      loaded = (await state.load())!;
    } else {
      if (opts.joinToken)
        log.info('already joined: the join token is not needed and was not used', {
          spiffeId: loaded.identity.spiffeId,
        });
      if (opts.daemonGroup && opts.daemonGroup !== (loaded.identity.daemonGroup ?? ''))
        throw new AgentError(
          'GROUP_MISMATCH',
          `this agent joined daemon group ${loaded.identity.daemonGroup ?? '(none)'}, not ${opts.daemonGroup}`,
        );
    }
    const identity =
      opts.server && opts.server !== loaded.identity.server
        ? { ...loaded.identity, server: opts.server }
        : loaded.identity;
    const node = await NodeSide.open({
      controlRoot: opts.controlRoot ?? `${opts.stateDir}/control`,
      ...(opts.kernelSide !== undefined ? { kernelSide: opts.kernelSide } : {}),
      attest: {
        ...(opts.procRoot ? { procRoot: opts.procRoot } : {}),
        ...(opts.rescanIntervalMs ? { rescanIntervalMs: opts.rescanIntervalMs } : {}),
        pods: opts.pods ?? null,
      },
    });
    const agent = new Agent(opts, identity, state, node);
    // Just joined: the SVID arrived now (its notBefore is backdated). Loaded after a restart: unknown.
    agent.svid = { ...loaded.svid, receivedAt: joined ? new Date() : null };
    agent.bundlePem = loaded.bundlePem;
    agent.bundleVer = bundleVersion(certificatesDer(loaded.bundlePem));
    await agent.boot();
    return agent;
  }

  private channel(): ChannelIdentity {
    return {
      bundlePem: this.bundlePem,
      reconcilerSpiffeId: this.identity.reconcilerSpiffeId,
      keyPem: this.svid.keyPem,
      chainPem: this.svid.chainPem,
    };
  }

  private async boot(): Promise<void> {
    await this.node.init(
      { trustDomain: this.identity.trustDomain, daemonId: this.identity.daemonId },
      this.bundlePem,
    );
    const held = await this.state.loadProgram();
    this.program = held && held.trustDomain === this.identity.trustDomain ? held : null;
    this.svids = new SvidManager({
      send: (m) => this.sync.send(m),
      sink: {
        install: async (id, chainPem, keyPem) => {
          await this.serialized(() => this.node.installSvid(id, chainPem, keyPem));
          this.log.info('SVID installed', { spiffeId: id, serial: svidFacts(chainPem).serial });
        },
        remove: async (id) => {
          await this.serialized(() => this.node.removeSvid(id));
          this.log.info('SVID removed: no attested process left', { spiffeId: id });
        },
      },
      onChange: () => this.svidsChanged(),
      onError: (id, reason) => this.log.warn('SVID request failed', { spiffeId: id, reason }),
    });
    if (this.program) {
      // After a restart: adopt the SVIDs still installed and valid, and enforce the program held.
      const found = [];
      for (const id of this.program.identities.keys()) {
        const s = await this.node.installedSvid(id);
        if (s)
          found.push({
            spiffeId: id,
            serial: s.serial,
            notBefore: new Date(s.notBefore),
            notAfter: new Date(s.notAfter),
          });
      }
      this.svids.adopt(found);
      const r = await this.node.enforce(this.program, this.svidFacts());
      if (!r.ok) this.log.warn('the held program was refused by the kernel side', { reason: r.reason });
    }
    this.node.attestor.on('change', () => this.attestationChanged());
    this.setAttestorIdentities();
    await this.node.attestor.start();
    this.sync = new SyncClient({
      server: this.identity.server,
      identity: () => this.channel(),
      ...(this.opts.backoff ? { backoff: this.opts.backoff } : {}),
      handler: {
        hello: () => this.hello(),
        program: (u) => this.onProgram(u),
        svid: (r) => this.onSvid(r),
        credentials: (c) => this.onCredentials(c),
        bundle: (b) => this.onBundle(b),
        refusal: (r) => this.onRefusal(r),
        repair: (r) => this.onRepair(r),
        connected: () => {
          this.lastFailure = null;
          this.log.info('connected to the reconciler', { server: this.identity.server });
          this.emit('connected');
          this.svids.kick();
          this.scheduleReport(0);
          this.maybeRenewAgentSvid();
        },
        disconnected: (reason) => {
          this.svids.disconnected();
          this.renewing = null;
          this.lastFailure = null;
          if (!this.stopped)
            this.log.warn('disconnected from the reconciler: enforcing the last good program', { reason });
          this.emit('disconnected', reason);
        },
        failed: (reason) => {
          // Once per distinct reason: an agent retrying for hours says why once, not on every attempt.
          if (this.stopped || reason === this.lastFailure) return;
          this.lastFailure = reason;
          this.log.warn(
            'cannot reach the reconciler: enforcing the last good program, retrying with backoff',
            {
              reason,
              hint: /PERMISSION_DENIED|UNAUTHENTICATED|not registered|evicted/.test(reason)
                ? 'this node is not (or no longer) registered: join again with a new token (riptides-cli token create)'
                : `check that the reconciler is running and listening at ${this.identity.server}`,
            },
          );
        },
      },
    });
    this.sync.start();
    this.heartbeat = setInterval(() => this.scheduleReport(0), this.opts.reportIntervalMs ?? 30_000);
    this.heartbeat.unref();
    this.armAgentSvidRenewal();
  }

  // ---------------------------------------------------------------------------------------------------------
  // Programs

  private hello(): Out<Hello> {
    const p = this.program;
    return {
      protocolVersion: PROTOCOL_VERSION,
      agentVersion: AGENT_VERSION,
      programVersion: p?.version ?? '',
      identityVersions: Object.fromEntries(
        [...(p?.identities.values() ?? [])].map((i) => [i.spiffeId, i.hash]),
      ),
      ruleHashes: [...(p?.rules.keys() ?? [])],
      credentialRefHashes: [...(p?.credentialRefs.keys() ?? [])],
      credentials: [...this.heldCredentials.values()],
      bundleVersion: this.bundleVer,
    };
  }

  private svidFacts(): Map<string, SvidFact> {
    return new Map(
      [...this.svids.installed].map(([id, s]) => [id, { serial: s.serial, notAfter: s.notAfter }]),
    );
  }

  private async onProgram(update: ProgramUpdate): Promise<Out<ProgramAck>> {
    const kept = this.program?.version ?? '';
    const nack = (error: ErrorDetail): Out<ProgramAck> => {
      this.lastNack = { version: update.versionInfo, error };
      this.log.warn('program refused (NACK): the program in force stays', {
        version: update.versionInfo,
        kept,
        code: error.code,
        reason: error.message,
      });
      this.emit('nack', update.versionInfo, error);
      this.scheduleReport();
      return { versionInfo: kept, errorDetail: error };
    };
    const applied = applyUpdate(this.program, update, this.identity.trustDomain, {
      maxIdentities: this.opts.maxIdentities ?? LIMITS.maxIdentities,
    });
    if (!applied.ok) return nack(applied.error);
    const next = applied.program;
    const result = await this.serialized(() => this.node.enforce(next, this.svidFacts()));
    if (!result.ok) {
      // Put back the table in force, so that what is written is what is enforced.
      if (this.program) await this.serialized(() => this.node.enforce(this.program!, this.svidFacts()));
      return nack({
        code: 'CONTROL_REFUSED',
        message: result.reason,
        hint: 'the kernel side keeps the table in force',
      });
    }
    const previous = this.program;
    this.program = next;
    this.lastNack = null;
    await this.state.saveProgram(next);
    this.dropStale(previous, next);
    this.setAttestorIdentities();
    this.log.info('program enforced (ACK)', { version: next.version, identities: next.identities.size });
    this.emit('program', next);
    this.scheduleReport();
    return { versionInfo: next.version };
  }

  /** Runs control-interface writes one at a time. */
  private serialized<T>(f: () => Promise<T>): Promise<T> {
    const run = this.enforcing.then(f, f);
    this.enforcing = run.catch(() => {});
    return run;
  }

  /** Unloads credentials and removes sysfs files of references the new program dropped. */
  private dropStale(previous: Program | null, next: Program): void {
    if (!previous) return;
    for (const [h, ref] of previous.credentialRefs) {
      if (next.credentialRefs.has(h)) continue;
      this.node.credentials.unload(h);
      this.heldCredentials.delete(h);
      const dir = ref.sysfs?.dir;
      if (dir) void this.serialized(() => this.node.removeSysfs(dir)).catch(() => {});
    }
  }

  private setAttestorIdentities(): void {
    const p = this.program;
    this.node.attestor.setIdentities(
      [...(p?.identities.values() ?? [])].map((i) => ({
        spiffeId: i.spiffeId,
        selectors: i.selectors.map((s) =>
          Object.fromEntries(Object.entries(s.match).map(([k, v]) => [k, v.values])),
        ),
      })),
    );
  }

  // ---------------------------------------------------------------------------------------------------------
  // Attestation and SVIDs

  private attestationChanged(): void {
    const snap = this.node.attestor.snapshot();
    const counts = new Map<string, number>();
    for (const [id, pids] of snap.byIdentity) counts.set(id, pids.length);
    this.processCount = counts;
    this.processes = [...snap.processes]
      .filter(([, p]) => p.spiffeId || p.conflict)
      .slice(0, LIMITS.maxProcesses)
      .map(([pid, p]) => ({ pid, spiffeId: p.spiffeId ?? '', conflicts: p.conflict ?? [] }));
    void this.serialized(() => this.node.writeProcesses(this.node.attestor.processRecords())).catch(
      (err: unknown) => this.log.warn('could not write the process table', { error: (err as Error).message }),
    );
    const wanted = [...counts]
      .filter(([id, n]) => n > 0 && this.program?.identities.has(id))
      .map(([id]) => id);
    this.svids.setWanted(wanted);
    this.scheduleReport();
  }

  /** An SVID was installed or removed: the rule table names SVIDs, so it is written again. */
  private svidsChanged(): void {
    const p = this.program;
    if (p)
      void this.serialized(() => this.node.enforce(p, this.svidFacts())).then((r) => {
        if (!r.ok)
          this.log.warn('rule table with new SVIDs refused by the kernel side', { reason: r.reason });
      });
    this.emit('svids');
    this.scheduleReport();
  }

  private onSvid(r: SvidResponse): void {
    if (this.renewing && r.requestId === this.renewing.requestId) {
      void this.finishAgentRenewal(r, this.renewing.keyPem);
      this.renewing = null;
      return;
    }
    this.svids.onResponse(r);
  }

  private onRefusal(r: Refusal): void {
    this.log.warn('the reconciler refused a message', {
      kind: r.messageKind,
      code: r.error?.code,
      reason: r.error?.message,
    });
    if (this.renewing && r.requestId === this.renewing.requestId) {
      this.renewing = null;
      this.armAgentSvidRenewal(60_000);
      return;
    }
    if (r.requestId) this.svids.onRefused(r.requestId, r.error?.message ?? 'refused');
    this.emit('refusal', r);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Repairs (a drift report's heal)

  private onRepair(r: ControlRepair): void {
    const requestId = String(r.requestId).slice(0, 128);
    this.repairing = this.repairing
      .then(() => this.repairControl())
      .catch((err: unknown) =>
        this.log.warn('control interface repair failed', { error: (err as Error).message }),
      )
      .finally(() => {
        this.repairedId = requestId;
        this.scheduleReport(0);
      });
  }

  /**
   * Puts the control interface back as this agent wrote it: every file it owns written again from what it
   * holds, the rule table enforced again (a new generation, so a table edited by hand is replaced), and new
   * SVIDs (new keys) for identities whose files were edited, changed mode or went missing. Files it did not
   * write outside the identity and credential directories are left and stay in the drift report.
   */
  async repairControl(): Promise<{ rewrote: string[]; reissued: string[]; pruned: string[] }> {
    const { before, pruned } = await this.serialized(() =>
      this.node.repair({
        config: { trustDomain: this.identity.trustDomain, daemonId: this.identity.daemonId },
        bundlePem: this.bundlePem,
        program: this.program,
        svids: this.svids.installed.keys(),
        processes: this.node.attestor.processRecords(),
      }),
    );
    if (this.program) {
      const p = this.program;
      const r = await this.serialized(() => this.node.enforce(p, this.svidFacts()));
      if (!r.ok) this.log.warn('repair: the kernel side refused the rule table', { reason: r.reason });
    }
    const touched = [...before.changed, ...before.removed, ...before.modes];
    const sids = new Set(
      touched.filter((p) => p.startsWith('identities/')).map((p) => p.split('/').slice(0, 2).join('/')),
    );
    const edited = [...this.svids.installed.keys()].filter((id) => sids.has(svidDirOf(id)));
    const reissued = edited.length ? await this.svids.reissue(edited) : [];
    this.log.info('control interface repaired', {
      rewrote: touched.length,
      reissued: reissued.length,
      pruned: pruned.length,
    });
    return { rewrote: touched, reissued, pruned };
  }

  // ---------------------------------------------------------------------------------------------------------
  // Credentials and the trust bundle

  private onCredentials(c: CredentialUpdate): void {
    const p = this.program;
    for (const v of c.values) {
      const ref = p?.credentialRefs.get(v.refHash);
      const value = storeValue(v);
      if (!ref || !value) {
        this.log.warn('credential value for a reference outside the program: dropped', { ref: v.refHash });
        continue;
      }
      try {
        this.node.credentials.load(v.refHash, value, {
          binding: ref.resource,
          fingerprint: v.fingerprint,
          version: v.version,
          ...(v.expiresAtUnix ? { expiresAt: new Date(v.expiresAtUnix * 1000) } : {}),
        });
      } catch (err) {
        this.log.warn('credential value refused', {
          ref: v.refHash,
          binding: ref.resource,
          reason: (err as Error).message,
        });
        continue;
      }
      if (ref.sysfs) {
        const dir = ref.sysfs.dir;
        void this.serialized(() => this.node.writeSysfs(dir, value)).catch((err: unknown) =>
          this.log.warn('could not write sysfs credential files', {
            binding: ref.resource,
            reason: (err as Error).message,
          }),
        );
      }
      this.heldCredentials.set(v.refHash, {
        refHash: v.refHash,
        version: v.version,
        fingerprint: v.fingerprint,
        expiresAtUnix: v.expiresAtUnix,
      });
      this.log.info('credential loaded', {
        binding: ref.resource,
        version: v.version,
        fingerprint: v.fingerprint,
      });
    }
    for (const h of c.withdrawn) {
      const ref = p?.credentialRefs.get(h);
      this.node.credentials.unload(h);
      this.heldCredentials.delete(h);
      const dir = ref?.sysfs?.dir;
      if (dir) void this.serialized(() => this.node.removeSysfs(dir)).catch(() => {});
      this.log.warn('credential withdrawn by the reconciler', { binding: ref?.resource ?? h });
    }
    this.emit('credentials');
    this.scheduleReport();
  }

  private onBundle(b: TrustBundle): void {
    if (b.trustDomain !== this.identity.trustDomain || b.version !== bundleVersion(b.x509Authorities)) {
      this.log.warn('trust bundle refused: wrong trust domain or version', { trustDomain: b.trustDomain });
      return;
    }
    if (b.version === this.bundleVer) return;
    const pem = certificatesPem(b.x509Authorities);
    this.bundlePem = pem;
    this.bundleVer = b.version;
    void this.state.saveBundle(pem);
    void this.serialized(() => this.node.setTrustBundle(pem));
    this.log.info('trust bundle updated', { version: b.version });
    this.scheduleReport();
  }

  // ---------------------------------------------------------------------------------------------------------
  // The agent's own SVID

  /** When the agent SVID is due: half its life (±10%), counted from when this agent got it. */
  private agentRenewAt = 0;

  private armAgentSvidRenewal(delayMs?: number): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    if (delayMs === undefined)
      this.agentRenewAt = rotationTime(validFrom(this.svid), this.svid.notAfter).getTime();
    const at = delayMs !== undefined ? Date.now() + delayMs : this.agentRenewAt;
    this.renewTimer = setTimeout(
      () => this.maybeRenewAgentSvid(true),
      Math.min(Math.max(1000, at - Date.now()), 2 ** 31 - 1),
    );
    this.renewTimer.unref();
  }

  private maybeRenewAgentSvid(due = false): void {
    if (this.renewing || this.stopped || (!due && Date.now() < this.agentRenewAt)) return;
    if (!this.sync.connected) return; // retried on the next connect
    const requestId = `agent-${randomBytes(6).toString('hex')}`;
    this.renewing = { requestId, keyPem: '' };
    void generateKeyAndCsr(this.identity.spiffeId).then(({ keyPem, csrDer }) => {
      if (this.renewing?.requestId !== requestId) return;
      this.renewing.keyPem = keyPem;
      if (!this.sync.send({ svidRequest: { requestId, spiffeId: this.identity.spiffeId, csrDer } }))
        this.renewing = null;
    });
  }

  private async finishAgentRenewal(r: SvidResponse, keyPem: string): Promise<void> {
    const chainPem = certificatesPem(r.certChainDer);
    const facts = svidFacts(chainPem);
    if (facts.uris.length !== 1 || facts.uris[0] !== this.identity.spiffeId) {
      this.log.warn('renewed agent SVID refused: wrong SPIFFE ID', { got: facts.uris.join(', ') });
      this.armAgentSvidRenewal(60_000);
      return;
    }
    await this.state.saveSvid(keyPem, chainPem);
    this.svid = { keyPem, chainPem, ...facts, receivedAt: new Date() };
    this.log.info('agent SVID renewed', { serial: facts.serial, notAfter: facts.notAfter.toISOString() });
    this.armAgentSvidRenewal();
    // New streams present the new SVID.
    this.sync.reconnect();
  }

  // ---------------------------------------------------------------------------------------------------------
  // Reports

  private scheduleReport(delayMs = 200): void {
    if (this.stopped || this.reportTimer) return;
    this.reportTimer = setTimeout(() => {
      this.reportTimer = undefined;
      void this.sendReport();
    }, delayMs);
    this.reportTimer.unref();
  }

  /** What this agent reports: the truth of the node, built from the control interface and its own state. */
  async report(): Promise<StateReport> {
    const p = this.program;
    return {
      programVersion: p?.version ?? '',
      identities: [...(p?.identities.keys() ?? [])].map((id) => {
        const s = this.svids.installed.get(id);
        return {
          spiffeId: id,
          svidSerial: s?.serial ?? '',
          svidNotAfterUnix: s ? Math.floor(s.notAfter.getTime() / 1000) : 0,
          processCount: this.processCount.get(id) ?? 0,
          hash: p?.identities.get(id)?.hash ?? '',
        };
      }),
      credentials: [...this.heldCredentials.values()],
      processes: this.processes,
      // Between the agent's own writes, so that a file half-way through being replaced is not drift.
      control: await this.serialized(() => this.node.health()),
      atUnixMs: Date.now(),
      bundleVersion: this.bundleVer,
      rejectedVersion: this.lastNack?.version ?? '',
      rejectedError: this.lastNack?.error ?? null,
      dataPlane: this.dataPlaneState ? await this.dataPlaneState() : null,
      repairedId: this.repairedId,
    };
  }

  /**
   * The data plane running beside this agent (agent/start-node.ts): its state goes into every report from
   * now on (null: none). Counters change with every connection, so they travel with the periodic report and
   * with reports sent for other changes, not one report per connection.
   */
  setDataPlaneState(source: (() => Promise<DataPlaneState>) | null): void {
    this.dataPlaneState = source;
    this.scheduleReport();
  }

  private async sendReport(): Promise<void> {
    if (!this.sync.connected) return;
    this.sync.send({ report: await this.report() });
  }

  get connected(): boolean {
    return this.sync?.connected ?? false;
  }

  /** Stops talking to the reconciler; what the node enforces stays as it is. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of [this.reportTimer, this.renewTimer]) if (t) clearTimeout(t);
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.svids?.stop();
    this.sync?.stop();
    await this.enforcing;
    await this.node.close();
  }
}

/**
 * Where an SVID's life starts for renewal: its notBefore, or when it arrived if later (the authority backdates
 * notBefore a little, which for a short lifetime would put half-life in the past and renew at once, again).
 */
function validFrom(svid: { notBefore: Date; receivedAt: Date | null }): Date {
  return svid.receivedAt && svid.receivedAt > svid.notBefore ? svid.receivedAt : svid.notBefore;
}
