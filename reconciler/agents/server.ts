/**
 * The reconciler's agent server: a library the `reconciler` command (and the reconcile loop after it) drives.
 *
 *   const server = await AgentServer.start({ host, port, stateDir, authority, credentials });
 *   server.publish(desiredStateOf(render));   // compile output → programs pushed to every agent in scope
 *   server.agents();                          // what each agent ACKed, NACKed and reported
 *   server.on('ack' | 'nack' | 'report' | 'refused' | …, listener);
 *   await server.close();
 *
 * gRPC (agent/protocol/riptides_agent.proto) over TLS with the trust domain's authority: GetTrustBundle and
 * Join need no client certificate; Sync needs an agent SVID whose daemon is in the registry. Every request
 * is checked against the caller's scope, derived only from the registry (never from what the agent says):
 * its daemon group and its own daemon ID.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { type FSWatcher, watch } from 'chokidar';
import type { ErrorDetail, Out, ProgramUpdate, ServerMessage } from '../../agent/protocol/messages.ts';
import { diffProgram, type HeldSummary, type Program } from '../../agent/protocol/program.ts';
import { certificatesDer } from '../../agent/protocol/version.ts';
import { agentServiceDefinition, CHANNEL_OPTIONS, DAEMON_PATH_PREFIX } from '../../agent/protocol/wire.ts';
import { makeDirs } from '../common/atomic-file.ts';
import type { CredentialManager } from '../credentials/manager.ts';
import type { CredentialSourceSpec } from '../credentials/types.ts';
import { type Authority, DEFAULT_X509_SVID_TTL_SECONDS } from '../identity/authority.ts';
import { reservedWorkloadPath } from '../identity/spiffe-id.ts';
import { parseCertificate } from '../identity/x509.ts';
import { verifyX509Svid } from '../identity/x509-svid.ts';
import type { NodeProgram } from '../policy/compile.ts';
import {
  type CredentialFacts,
  CredentialFanout,
  type CredentialPair,
  credentialPairsOf,
} from './credentials.ts';
import { handleJoin, type JoinCall } from './join.ts';
import { DesiredPrograms, scopesOfDaemon } from './programs.ts';
import { KeyedTokenBuckets } from './rate-limit.ts';
import { type DaemonRecord, DaemonRegistry } from './registry.ts';
import { SendBudget } from './send-budget.ts';
import { ServingIdentity } from './serving-identity.ts';
import {
  AgentSession,
  type AgentStatus,
  MALFORMED,
  malformedReason,
  type SessionContext,
  type SyncCall,
} from './session.ts';
import { JoinTokenStore } from './tokens.ts';

export type { AgentStatus } from './session.ts';

/** What the agents should run: the compiler's programs and the specs of the credential sources they use. */
export interface DesiredState {
  /** The policy revision these programs come from (a commit id, or a label), for status. */
  revision?: string;
  programs: readonly NodeProgram[];
  /** CredentialSource resource key (`CredentialSource/<ns>/<name>`) → provider spec. */
  credentialSources?: ReadonlyMap<string, CredentialSourceSpec>;
}

/** Structured log sink: fields are metadata (IDs, versions, reasons), never credential values or keys. */
export interface AgentServerLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

export interface AgentServerOptions {
  /** Listen address; port 0 lets the OS choose (see `port`). */
  host: string;
  port: number;
  /** Holds `tokens/` and `daemons/`. */
  stateDir: string;
  authority: Authority;
  /** Keeps credentials fresh; without it agents get references but no values. */
  credentials?: CredentialManager | null;
  logger?: AgentServerLogger;
  /** Agent SVID lifetime; default 1 h (SPIRE's default SVID TTL). */
  agentSvidTtlSeconds?: number;
  /** Per agent; default 500 (SPIRE's per-caller signing limit). */
  csrPerSecond?: number;
  /** Per source address: sustained rate and burst; default 1/s (SPIRE's node attestation limit), burst 10. */
  joinsPerSecond?: number;
  joinBurst?: number;
  /** Bytes queued toward one agent before it is cut off as too slow; default 8 MiB. */
  sendQueueBytes?: number;
  /**
   * Bytes queued toward all agents past which a new program update waits for earlier ones to drain (send-budget.ts);
   * default 4 MiB.
   */
  sendBudgetBytes?: number;
  /** How long an agent may leave a program update untaken before its stream is ended; default 30 s. */
  programDrainMs?: number;
  /** How long a new Sync stream may wait before its Hello; default 10 s. */
  helloTimeoutMs?: number;
  /** Overall deadline of one Join call; default 30 s. */
  joinDeadlineMs?: number;
  /**
   * With a credential manager: whether publish() starts and releases the (source, workload) pairs itself
   * (default true). The reconcile loop passes false and does it as its credentials step.
   */
  manageCredentials?: boolean;
  /**
   * Called for every X.509-SVID signed (agent SVIDs at join, workload SVIDs from CSRs) and awaited before the
   * certificate is sent: a write-ahead record (the store's serials). A rejection refuses the request, so no
   * SVID ever leaves unrecorded.
   */
  recordIssued?: (svid: IssuedSvid) => Promise<void>;
}

/** One X.509-SVID issued by the server. */
export interface IssuedSvid {
  /** Hex, as the certificate carries it. */
  serial: string;
  spiffeId: string;
  /** The daemon it was issued to (for an agent SVID, the joining daemon). */
  daemonId: string;
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 (hex) of the certificate's SubjectPublicKeyInfo. */
  publicKeyHash: string;
}

/** What publishing a desired state would do, computed without changing anything (see AgentServer.plan). */
export interface PublishPlan {
  readonly desired: DesiredState;
  readonly programs: DesiredPrograms;
  /** Scopes whose program hash differs from the one in force (or that appear or disappear). */
  readonly scopesChanged: string[];
  /** Every registered daemon: the version it holds (ACKed or announced) and the one it would be given. */
  readonly agents: Array<{
    daemonId: string;
    daemonGroup: string | null;
    connected: boolean;
    from: string;
    to: string;
  }>;
  /** The (source, workload) pairs the programs reference. */
  readonly credentialPairs: Map<string, CredentialPair>;
}

export interface AgentServerCounters {
  joins: number;
  joinsRefused: Record<string, number>;
  syncRefused: Record<string, number>;
  /** Messages refused on established streams, by error code. */
  messagesRefused: Record<string, number>;
  /** Messages that did not decode as the protocol's protobuf. */
  malformed: number;
  acks: number;
  nacks: number;
  svidsIssued: number;
}

export interface PublishSummary {
  revision: string | null;
  /** Scope → program hash (the compiler's). */
  scopes: Record<string, string>;
  /** Connected agents whose ACKed version differs from their new desired version. */
  agentsToUpdate: number;
}

const SILENT: AgentServerLogger = { info() {}, warn() {} };

const bump = (m: Record<string, number>, k: string) => {
  m[k] = (m[k] ?? 0) + 1;
};

export class AgentServer extends EventEmitter {
  private readonly grpcServer: grpc.Server;
  private readonly sessions = new Map<string, AgentSession>();
  private readonly statuses = new Map<string, AgentStatus>();
  private readonly diffMemo = new Map<string, Out<ProgramUpdate>>();
  private readonly fanout: CredentialFanout;
  private readonly joinBuckets: KeyedTokenBuckets;
  private registryWatch: FSWatcher | null = null;
  /** CSR budgets per daemon ID (not per stream: a reconnect must not refill it). */
  private readonly csrBuckets: KeyedTokenBuckets;
  /** Program bytes in flight toward all agents (send-budget.ts). */
  readonly sendBudget: SendBudget;
  private readonly logger: AgentServerLogger;
  private desired: DesiredPrograms | null = null;
  private revision: string | null = null;
  private boundPort = 0;
  readonly counters: AgentServerCounters = {
    joins: 0,
    joinsRefused: {},
    syncRefused: {},
    messagesRefused: {},
    malformed: 0,
    acks: 0,
    nacks: 0,
    svidsIssued: 0,
  };

  private constructor(
    private readonly opts: AgentServerOptions,
    private readonly identity: ServingIdentity,
    private readonly registry: DaemonRegistry,
    private readonly tokens: JoinTokenStore,
  ) {
    super();
    this.logger = opts.logger ?? SILENT;
    this.joinBuckets = new KeyedTokenBuckets(opts.joinsPerSecond ?? 1, opts.joinBurst ?? 10);
    this.csrBuckets = new KeyedTokenBuckets(opts.csrPerSecond ?? 500, opts.csrPerSecond ?? 500);
    this.sendBudget = new SendBudget(opts.sendBudgetBytes ?? 4 * 1024 * 1024);
    this.fanout = new CredentialFanout(opts.credentials ?? null, (refs) => {
      for (const s of this.sessions.values()) s.sendCredentials(refs);
    });
    identity.on('bundle', () => {
      this.logger.info('trust bundle changed', { version: identity.bundle.version });
      for (const s of this.sessions.values()) s.sendBundle();
    });
    identity.on('error', (err: Error) =>
      this.logger.warn('could not renew the reconciler SVID', { error: err.message }),
    );
    this.grpcServer = new grpc.Server({ ...CHANNEL_OPTIONS, 'grpc.max_concurrent_streams': 16 });
    // Every method's request decoder: bytes that are not the protocol become a MALFORMED value the handler
    // answers with INVALID_ARGUMENT and this reason (thrown, grpc-js would answer INTERNAL "Error
    // deserializing request" and drop it), counted.
    const service: grpc.ServiceDefinition = Object.fromEntries(
      Object.entries(agentServiceDefinition).map(([name, method]) => {
        const decode = method.requestDeserialize;
        return [
          name,
          {
            ...method,
            requestDeserialize: (b: Buffer) => {
              try {
                return decode(b);
              } catch (err) {
                this.counters.malformed++;
                return { kind: MALFORMED, reason: `malformed message refused: ${(err as Error).message}` };
              }
            },
          },
        ];
      }),
    );
    this.grpcServer.addService(service, {
      GetTrustBundle: (call: { request: unknown }, cb: grpc.sendUnaryData<unknown>) => {
        const malformed = malformedReason(call.request);
        if (malformed) cb({ code: grpc.status.INVALID_ARGUMENT, details: malformed });
        else cb(null, this.bundleMessage().bundle);
      },
      Join: (call: JoinCall) => this.join(call),
      Sync: (call: SyncCall) => this.sync(call),
    });
  }

  /** Opens the state directory, gets the reconciler's SVID, and listens. */
  static async start(opts: AgentServerOptions): Promise<AgentServer> {
    const identity = await ServingIdentity.start(opts.authority);
    const registry = await DaemonRegistry.open(join(opts.stateDir, 'daemons'));
    const tokens = new JoinTokenStore(join(opts.stateDir, 'tokens'));
    await tokens.init();
    const server = new AgentServer(opts, identity, registry, tokens);
    const creds = grpc.experimental.createCertificateProviderServerCredentials(identity, identity, false);
    const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    server.boundPort = await new Promise<number>((resolve, reject) =>
      server.grpcServer.bindAsync(`${host}:${opts.port}`, creds, (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
    // The certificate provider hands grpc-js its first identity on the next tick.
    await new Promise((r) => setImmediate(r));
    await makeDirs(registry.dir, 0o700);
    // Only a record removed can mean an eviction (`daemon evict` writes its marker first, then removes the
    // record): joins, renewals and the atomic writer's temp files must not each cost a sweep over every daemon.
    server.registryWatch = watch(registry.dir, { ignoreInitial: true, depth: 0 }).on('unlink', (path) => {
      if (path.endsWith('.json')) server.sweepEvicted();
    });
    return server;
  }

  get port(): number {
    return this.boundPort;
  }

  /** The revision of the last `publish` (null before any, or when it named none). */
  get publishedRevision(): string | null {
    return this.revision;
  }

  get trustDomain(): string {
    return this.opts.authority.trustDomain;
  }

  get reconcilerSpiffeId(): string {
    return this.identity.spiffeId;
  }

  /** The trust bundle agents verify the reconciler with (PEM), and its version. */
  bundle(): { pem: string; version: string } {
    return { pem: this.identity.bundle.pem, version: this.identity.bundle.version };
  }

  /**
   * What publishing `desired` would do: the programs per scope (conversions reused from the state in force),
   * the scopes that change, each registered daemon's current and next version, the credential pairs. Changes
   * nothing. Throws if a program is for another trust domain.
   */
  plan(desired: DesiredState): PublishPlan {
    for (const p of desired.programs)
      if (p.trustDomain !== this.trustDomain)
        throw new Error(
          `program for scope ${p.scope.kind}:${p.scope.id} is for trust domain ${p.trustDomain}, this reconciler's CA is for ${this.trustDomain}`,
        );
    const programs = new DesiredPrograms(this.trustDomain, desired.programs, this.desired);
    const before = this.desired?.scopes;
    const scopesChanged = [...programs.scopes.values()]
      .filter((sp) => before?.get(sp.scope)?.hash !== sp.hash)
      .map((sp) => sp.scope);
    for (const s of before?.keys() ?? []) if (!programs.scopes.has(s)) scopesChanged.push(s);
    const agents = this.registry.all().map((d) => {
      const status = this.statusOf(d);
      return {
        daemonId: d.daemonId,
        daemonGroup: d.daemonGroup,
        connected: status.connected,
        from: status.ackedVersion,
        to: programs.programFor(status.scopes).version,
      };
    });
    return {
      desired,
      programs,
      scopesChanged: scopesChanged.sort(),
      agents,
      credentialPairs: credentialPairsOf(programs, desired.credentialSources ?? new Map()),
    };
  }

  /**
   * Makes `desired` (or a plan of it) the state every agent converges to. Each connected agent gets an update
   * only if its own program (its scopes merged) changed; credential sources start or stop being kept fresh
   * accordingly (unless `manageCredentials` is false). Throws if a program is for another trust domain
   * (nothing changes then).
   */
  publish(desiredOrPlan: DesiredState | PublishPlan): PublishSummary {
    const plan =
      'programs' in desiredOrPlan && desiredOrPlan.programs instanceof DesiredPrograms
        ? (desiredOrPlan as PublishPlan)
        : this.plan(desiredOrPlan as DesiredState);
    const desired = plan.desired;
    this.desired = plan.programs;
    this.revision = desired.revision ?? null;
    this.diffMemo.clear();
    this.fanout.update(
      this.desired,
      desired.credentialSources ?? new Map(),
      this.opts.manageCredentials !== false,
      plan.credentialPairs,
    );
    let agentsToUpdate = 0;
    for (const s of this.sessions.values()) {
      if (this.desired.programFor(s.scopes).version !== s.status.ackedVersion) agentsToUpdate++;
      s.sync();
    }
    return {
      revision: this.revision,
      scopes: Object.fromEntries([...this.desired.scopes.values()].map((sp) => [sp.scope, sp.hash])),
      agentsToUpdate,
    };
  }

  /**
   * Sends the whole desired program, then every credential value, again to these daemons (default: every
   * connected one), even when they hold the desired version, so that each node rewrites what it enforces
   * (drift healing). Returns the daemons it went to.
   */
  resync(daemonIds?: Iterable<string>): string[] {
    const wanted = daemonIds ? new Set(daemonIds) : null;
    const sent: string[] = [];
    for (const [id, session] of this.sessions)
      if ((!wanted || wanted.has(id)) && session.resync()) sent.push(id);
    return sent.sort();
  }

  /** The desired programs in force (null before the first publish) and the revision they come from. */
  desiredPrograms(): { programs: DesiredPrograms; revision: string | null } | null {
    return this.desired ? { programs: this.desired, revision: this.revision } : null;
  }

  /** Every registered daemon, connected or not, with what it last ACKed, NACKed and reported. */
  agents(): AgentStatus[] {
    for (const d of this.registry.all()) this.statusOf(d);
    return [...this.statuses.values()].map((s) => ({ ...s, counters: { ...s.counters } }));
  }

  /** The desired program of one daemon (null before the first publish or for an unknown daemon). */
  desiredProgramOf(daemonId: string): Program | null {
    const d = this.registry.get(daemonId);
    if (!d || !this.desired) return null;
    return this.desired.programFor(scopesOfDaemon(d.daemonId, d.daemonGroup));
  }

  /** Version, keyed fingerprint and expiry of a credential reference's current value (never the value). */
  credentialFacts(refHash: string): CredentialFacts | null | undefined {
    return this.fanout.facts(refHash);
  }

  /**
   * A drift heal for one connected daemon: `program` or `credentials` sends the whole desired program and
   * every credential value again (a NACK is forgotten), `repair` asks the agent to rewrite its control
   * interface (ControlRepair with this request ID). Returns what was sent, or null when the daemon has no
   * open stream (an unreachable node cannot be healed from here).
   */
  heal(
    daemonId: string,
    what: { program?: boolean; credentials?: readonly string[]; repair?: string },
  ): string[] | null {
    const s = this.sessions.get(daemonId);
    if (!s || s.isClosed) return null;
    const sent: string[] = [];
    if ((what.program || what.credentials?.length) && s.resync())
      sent.push(...(what.program ? ['program'] : []), ...(what.credentials?.length ? ['credentials'] : []));
    if (what.repair && s.repair(what.repair)) sent.push('repair');
    this.logger.info('drift heal', { daemonId, sent });
    return sent;
  }

  /**
   * Ends the streams of daemons whose registry record is gone (evicted): they get PERMISSION_DENIED with the
   * reason, and every later stream is refused (NOT_REGISTERED). Called when the registry directory changes.
   */
  sweepEvicted(): void {
    for (const d of this.registry.sweep()) {
      this.logger.warn('daemon evicted', { daemonId: d.daemonId, daemonGroup: d.daemonGroup });
      // Gone from status too; a daemon ID that joins again starts from nothing (scopes, state).
      this.statuses.delete(d.daemonId);
      this.sessions
        .get(d.daemonId)
        ?.end(
          'PERMISSION_DENIED',
          `daemon ${d.spiffeId} was evicted (its registration is gone): join again with a new token`,
        );
    }
  }

  /** Stops listening and ends every stream (agents keep enforcing what they hold). */
  async close(): Promise<void> {
    await this.registryWatch?.close();
    for (const s of [...this.sessions.values()]) s.end('UNAVAILABLE', 'the reconciler is shutting down');
    this.identity.stop();
    this.fanout.close();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.grpcServer.forceShutdown();
        resolve();
      }, 2000);
      force.unref();
      this.grpcServer.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  // ---------------------------------------------------------------------------------------------------------

  private bundleMessage(): Out<ServerMessage> & { bundle: Out<ServerMessage>['bundle'] } {
    const b = this.identity.bundle;
    return { bundle: { trustDomain: this.trustDomain, version: b.version, x509Authorities: b.der } };
  }

  private statusOf(d: DaemonRecord): AgentStatus {
    let s = this.statuses.get(d.daemonId);
    if (!s) {
      s = {
        daemonId: d.daemonId,
        spiffeId: d.spiffeId,
        daemonGroup: d.daemonGroup,
        scopes: scopesOfDaemon(d.daemonId, d.daemonGroup),
        connected: false,
        peer: null,
        connectedAt: null,
        lastContact: null,
        ackedVersion: '',
        desiredVersion: '',
        nack: null,
        report: null,
        counters: { messagesSent: 0, bytesSent: 0, refused: 0, svidsIssued: 0 },
      };
      this.statuses.set(d.daemonId, s);
    }
    return s;
  }

  private join(call: JoinCall): void {
    handleJoin(call, {
      trustDomain: this.trustDomain,
      tokens: this.tokens,
      deadlineMs: this.opts.joinDeadlineMs ?? 30_000,
      agentSvidTtlSeconds: this.opts.agentSvidTtlSeconds ?? DEFAULT_X509_SVID_TTL_SECONDS,
      reconcilerSpiffeId: this.identity.spiffeId,
      bundleDer: () => this.identity.bundle.der,
      bundleVersion: () => this.identity.bundle.version,
      admit: (addr) => this.joinBuckets.take(addr),
      sign: async (csrPem, spiffeId, ttlSeconds) => {
        const svid = await this.opts.authority.signX509Svid({
          csrPem,
          ttlSeconds,
          authorize: (id) => (id === spiffeId ? true : `this join token is for ${spiffeId}`),
        });
        // The token assigns spiffe://<td>/riptides/daemon/<id>: the daemon is the ID's last part.
        await this.recordIssued(
          svid,
          spiffeId.slice(`spiffe://${this.trustDomain}/${DAEMON_PATH_PREFIX}`.length),
        );
        return { chainDer: certificatesDer(svid.chainPem), serial: svid.serial };
      },
      register: (record) => this.registry.add(record),
      onRefused: (code, message, peer) => {
        bump(this.counters.joinsRefused, code);
        this.logger.warn('join refused', { code, reason: message, peer });
        this.emit('refused', { daemonId: null, kind: 'join', error: { code, message, hint: '' } });
      },
      onJoined: (record, peer) => {
        this.counters.joins++;
        this.logger.info('agent joined', {
          daemonId: record.daemonId,
          daemonGroup: record.daemonGroup,
          tokenId: record.tokenId,
          peer,
        });
        this.emit('joined', record);
      },
    });
  }

  /** Who is on the other end of a Sync stream: a registered daemon with a valid agent SVID, or a reason. */
  private authenticate(
    call: SyncCall,
  ): DaemonRecord | { code: grpc.status; reason: string; message: string } {
    const cert = call.getAuthContext().sslPeerCertificate;
    if (!cert?.raw)
      return {
        code: grpc.status.UNAUTHENTICATED,
        reason: 'NO_SVID',
        message: 'Sync needs mutual TLS with an agent SVID from this trust domain: join first',
      };
    let spiffeId: string;
    let serial: string;
    try {
      const leaf = parseCertificate(cert.raw);
      serial = leaf.serial;
      spiffeId = verifyX509Svid(
        [leaf],
        new Map([[this.trustDomain, this.identity.bundle.authorities]]),
      ).spiffeId;
    } catch (err) {
      return { code: grpc.status.UNAUTHENTICATED, reason: 'BAD_SVID', message: (err as Error).message };
    }
    const prefix = `spiffe://${this.trustDomain}/${DAEMON_PATH_PREFIX}`;
    if (!spiffeId.startsWith(prefix))
      return {
        code: grpc.status.PERMISSION_DENIED,
        reason: 'NOT_AN_AGENT',
        message: `${spiffeId} is not an agent SVID (spiffe://${this.trustDomain}/${DAEMON_PATH_PREFIX}<id>)`,
      };
    const d = this.registry.get(spiffeId.slice(prefix.length));
    if (!d)
      return {
        code: grpc.status.PERMISSION_DENIED,
        reason: 'NOT_REGISTERED',
        message: `daemon ${spiffeId} is not registered with this reconciler: join again with a new token`,
      };
    if (d.svidSerials && !d.svidSerials.includes(serial))
      return {
        code: grpc.status.PERMISSION_DENIED,
        reason: 'NOT_REGISTERED',
        message: `the SVID presented for ${spiffeId} (serial ${serial.slice(0, 32)}) was not issued to its current registration (evicted, then joined again): join again with a new token`,
      };
    return d;
  }

  private sync(call: SyncCall): void {
    const who = this.authenticate(call);
    if (!('daemonId' in who)) {
      bump(this.counters.syncRefused, who.reason);
      this.logger.warn('sync refused', { code: who.reason, reason: who.message, peer: call.getPeer() });
      this.emit('refused', {
        daemonId: null,
        kind: 'sync',
        error: { code: who.reason, message: who.message, hint: '' },
      });
      call.emit('error', { code: who.code, details: who.message });
      return;
    }
    // Response headers now: the agent sees its stream accepted even when nothing needs sending.
    call.sendMetadata(new grpc.Metadata());
    const status = this.statusOf(who);
    const previous = this.sessions.get(who.daemonId);
    if (previous) {
      // An agent that reconnects before its old stream timed out does this once; two nodes holding one
      // daemon's key (a copied state directory, a stolen key) do it over and over.
      this.logger.warn("a newer stream replaced this daemon's stream", {
        daemonId: who.daemonId,
        previousPeer: previous.status.peer,
        peer: call.getPeer(),
        hint: "if this repeats, two nodes hold this daemon's key: evict it (riptides-cli daemon evict) and join the nodes again",
      });
      previous.end('ABORTED', 'replaced by a newer stream from the same daemon');
    }
    const session = new AgentSession(this.sessionContext(), call, who, status.scopes, status);
    this.sessions.set(who.daemonId, session);
    status.connected = true;
    status.peer = call.getPeer();
    status.connectedAt = new Date().toISOString();
    status.lastContact = status.connectedAt;
    this.logger.info('agent connected', {
      daemonId: who.daemonId,
      daemonGroup: who.daemonGroup,
      peer: status.peer,
    });
    this.emit('connected', status);
  }

  /** The write-ahead record of an issued SVID (recordIssued), before it is sent anywhere. */
  private async recordIssued(
    svid: { certPem: string; serial: string; spiffeId: string; notAfter: Date },
    daemonId: string,
  ): Promise<void> {
    const record = this.opts.recordIssued;
    if (!record) return;
    const cert = new X509Certificate(svid.certPem);
    await record({
      serial: svid.serial,
      spiffeId: svid.spiffeId,
      daemonId,
      notBefore: new Date(cert.validFrom),
      notAfter: svid.notAfter,
      publicKeyHash: createHash('sha256')
        .update(cert.publicKey.export({ type: 'spki', format: 'der' }))
        .digest('hex'),
    });
  }

  private sessionContextCache: SessionContext | null = null;

  private sessionContext(): SessionContext {
    if (this.sessionContextCache) return this.sessionContextCache;
    const refused = (status: AgentStatus, kind: string, error: ErrorDetail) => {
      bump(this.counters.messagesRefused, error.code);
      this.logger.warn('agent message refused', {
        daemonId: status.daemonId,
        kind,
        code: error.code,
        reason: error.message,
      });
      this.emit('refused', { daemonId: status.daemonId, kind, error });
    };
    this.sessionContextCache = {
      trustDomain: this.trustDomain,
      programFor: (scopes) => this.desired?.programFor(scopes) ?? null,
      diff: (from: HeldSummary, trusted: boolean, to: Program) => {
        if (!trusted) return diffProgram(from, to);
        const key = `${from.version}>${to.version}`;
        const d = this.diffMemo.get(key) ?? diffProgram(from, to);
        this.diffMemo.set(key, d);
        return d;
      },
      svidEntitlement: (daemon, scopes, spiffeId) => {
        if (spiffeId === daemon.spiffeId)
          return { ttlSeconds: this.opts.agentSvidTtlSeconds ?? DEFAULT_X509_SVID_TTL_SECONDS, dnsNames: [] };
        if (!this.desired) return "no policy has been published yet: only the agent's own SVID can be issued";
        // Validation refuses these workload IDs; this holds even for a program compiled without it.
        const path = spiffeId.slice(`spiffe://${this.trustDomain}/`.length);
        const reserved = spiffeId.startsWith(`spiffe://${this.trustDomain}/`) && reservedWorkloadPath(path);
        if (reserved) return `${spiffeId} ${reserved}: it is issued only to the agent or reconciler it names`;
        const compiled = this.desired.compiledIdentity(scopes, spiffeId);
        if (!compiled)
          return `${spiffeId} is not in the program of daemon ${daemon.daemonId}${daemon.daemonGroup ? ` (daemon group ${daemon.daemonGroup})` : ''}: an agent gets SVIDs only for identities in its scope`;
        return {
          ttlSeconds: compiled.x509.ttlSeconds ?? DEFAULT_X509_SVID_TTL_SECONDS,
          dnsNames: compiled.x509.dnsNames,
        };
      },
      sign: async (req, daemon) => {
        const svid = await this.opts.authority.signX509Svid(req);
        await this.recordIssued(svid, daemon.daemonId);
        // The agent's own SVID renewed: its registration accepts the new serial on the next stream.
        if (svid.spiffeId === daemon.spiffeId) await this.registry.addSerial(daemon.daemonId, svid.serial);
        return svid;
      },
      credentialValue: (h) => this.fanout.value(h),
      bundleMessage: () => this.bundleMessage(),
      bundleVersion: () => this.identity.bundle.version,
      csrPerSecond: this.opts.csrPerSecond ?? 500,
      takeCsr: (daemonId) => this.csrBuckets.take(daemonId),
      sendQueueBytes: this.opts.sendQueueBytes ?? 8 * 1024 * 1024,
      sendBudget: this.sendBudget,
      programDrainMs: this.opts.programDrainMs ?? 30_000,
      helloTimeoutMs: this.opts.helloTimeoutMs ?? 10_000,
      onRefused: refused,
      onAck: (status, version, latencyMs) => {
        this.counters.acks++;
        this.logger.info('program acknowledged', { daemonId: status.daemonId, version });
        this.emit('ack', status, version, latencyMs);
      },
      onNack: (status, version, kept, error) => {
        this.counters.nacks++;
        this.logger.warn('program refused by agent', {
          daemonId: status.daemonId,
          version,
          kept,
          code: error.code,
          reason: error.message,
        });
        this.emit('nack', status, version, kept, error);
      },
      onReport: (status) => this.emit('report', status),
      onSvid: (status, spiffeId, serial) => {
        this.counters.svidsIssued++;
        this.emit('svid', status, spiffeId, serial);
      },
      onClosed: (session, reason) => {
        if (this.sessions.get(session.daemon.daemonId) === session) {
          this.sessions.delete(session.daemon.daemonId);
          session.status.connected = false;
        }
        this.logger.info('agent disconnected', { daemonId: session.daemon.daemonId, reason });
        this.emit('disconnected', session.status, reason);
      },
    };
    return this.sessionContextCache;
  }
}
