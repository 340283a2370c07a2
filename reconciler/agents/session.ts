/**
 * One agent's Sync stream on the reconciler's side: Hello, program updates with ACK/NACK (Envoy's xDS
 * rules: one update in flight, identified by its nonce; a NACK keeps the agent's version), state reports,
 * SVID requests (scope-checked, rate-limited), credential values. Every message from the agent is checked
 * before it changes anything; a refused one is answered with a Refusal, counted, and changes nothing.
 *
 * Sends go through a byte-bounded queue: an agent that stops reading is cut off (it resyncs when it comes
 * back) instead of holding memory or slowing anyone else.
 */
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type {
  AgentMessage,
  CredentialValue,
  ErrorDetail,
  Hello,
  Out,
  ProgramAck,
  ProgramUpdate,
  ServerMessage,
  StateReport,
  SvidRequest,
} from '../../agent/protocol/messages.ts';
import {
  type HeldSummary,
  NOTHING_HELD,
  type Program,
  RESYNC_CODES,
  summaryOf,
} from '../../agent/protocol/program.ts';
import { certificatesDer, programVersion } from '../../agent/protocol/version.ts';
import { encodeServerMessage, LIMITS, PROTOCOL_VERSION } from '../../agent/protocol/wire.ts';
import { toPem } from '../identity/x509.ts';
import type { RefValue } from './credentials.ts';
import type { DaemonRecord } from './registry.ts';
import type { SendBudget } from './send-budget.ts';

export type SyncCall = grpc.ServerDuplexStream<AgentMessage, Buffer | ServerMessage>;

/** The kind the server gives a message that did not decode (the session ends the stream with the reason). */
export const MALFORMED = 'malformed' as const;

/** The reason a request did not decode, when it is the server's MALFORMED value; null otherwise. */
export function malformedReason(m: unknown): string | null {
  const x = m as { kind?: unknown; reason?: unknown } | null;
  return x?.kind === MALFORMED && typeof x.reason === 'string' ? x.reason.slice(0, 512) : null;
}

/** What the reconciler knows of one agent, connected or not. */
export interface AgentStatus {
  daemonId: string;
  spiffeId: string;
  daemonGroup: string | null;
  scopes: string[];
  connected: boolean;
  peer: string | null;
  connectedAt: string | null;
  lastContact: string | null;
  /** The version the agent last ACKed (or announced in its Hello). */
  ackedVersion: string;
  /** The version the desired state gives it ('' before the first publish). */
  desiredVersion: string;
  /** The latest NACK, until a later ACK. */
  nack: { version: string; kept: string; error: ErrorDetail; at: string } | null;
  report: StateReport | null;
  counters: { messagesSent: number; bytesSent: number; refused: number; svidsIssued: number };
}

export interface SessionContext {
  trustDomain: string;
  /** The desired program for these scopes, or null before the first publish. */
  programFor(scopes: readonly string[]): Program | null;
  /** Memoised diffs, shared by agents in the same state. */
  diff(from: HeldSummary, fromTrusted: boolean, to: Program): Out<ProgramUpdate>;
  /** May this agent hold an SVID for `spiffeId`? Returns its TTL and DNS names, or a refusal reason. */
  svidEntitlement(
    daemon: DaemonRecord,
    scopes: readonly string[],
    spiffeId: string,
  ): { ttlSeconds: number; dnsNames: string[] } | string;
  /** Signs for `daemon`; resolves only once the issuance is recorded (nothing leaves unrecorded). */
  sign(
    req: {
      csrPem: string;
      ttlSeconds: number;
      dnsNames: string[];
      authorize: (id: string) => boolean | string;
    },
    daemon: DaemonRecord,
  ): Promise<{
    chainPem: string;
    serial: string;
    notAfter: Date;
  }>;
  credentialValue(refHash: string): RefValue;
  bundleMessage(): Out<ServerMessage>;
  bundleVersion(): string;
  csrPerSecond: number;
  /**
   * Takes one CSR from the daemon's rate budget (csrPerSecond): one budget per daemon, across its streams, so
   * reconnecting does not refill it.
   */
  takeCsr(daemonId: string): boolean;
  sendQueueBytes: number;
  /** Shared by every session: when a program update may start (send-budget.ts). */
  sendBudget: SendBudget;
  /** How long an agent may leave a program update untaken before its stream is ended, milliseconds. */
  programDrainMs: number;
  helloTimeoutMs: number;
  onRefused(status: AgentStatus, kind: string, error: ErrorDetail): void;
  onAck(status: AgentStatus, version: string, latencyMs: number): void;
  onNack(status: AgentStatus, version: string, kept: string, error: ErrorDetail): void;
  onReport(status: AgentStatus): void;
  onSvid(status: AgentStatus, spiffeId: string, serial: string): void;
  onClosed(session: AgentSession, reason: string): void;
}

function detail(code: string, message: string, hint = ''): ErrorDetail {
  return { code, message, hint };
}

const isStr = (s: unknown, max: number = LIMITS.maxIdLength): s is string =>
  typeof s === 'string' && s.length <= max;

export class AgentSession {
  private held: HeldSummary = NOTHING_HELD;
  /** True when `held` came from a program this server sent (so it can key the diff memo). */
  private heldTrusted = false;
  private heldProgram: Program | null = null;
  private inFlight: { nonce: string; program: Program; full: boolean; sentAt: number } | null = null;
  private nackedVersion: string | null = null;
  /** The next update is the whole program, whatever the agent holds (heal). */
  private forceFull = false;
  private helloSeen = false;
  private closed = false;
  private pendingBytes = 0;
  /** Of pendingBytes, the program updates' (counted in the shared send budget). */
  private budgetedBytes = 0;
  /** Ends the stream when a program update is not taken in time (programDrainMs). */
  private drainTimer: NodeJS.Timeout | null = null;
  private pendingSvids = 0;
  /** Credential values the agent holds: ref hash → fingerprint. */
  private readonly credHeld = new Map<string, string>();
  /**
   * `held>desired` versions at the last full sendCredentials: while both stay, values that change reach the
   * agent through the fanout (sendCredentials with the changed references), so a publish that leaves this
   * agent's program as it is need not look at every reference again (200 agents × 100 bindings per pass).
   */
  private credentialsSyncedFor: string | null = null;
  private bundleSent = '';
  private readonly helloTimer: NodeJS.Timeout;

  constructor(
    private readonly ctx: SessionContext,
    readonly call: SyncCall,
    readonly daemon: DaemonRecord,
    readonly scopes: string[],
    readonly status: AgentStatus,
  ) {
    call.on('data', (m: AgentMessage) => this.onMessage(m));
    call.on('end', () => this.close('agent closed the stream'));
    call.on('error', (err: Error) => this.close(`stream error: ${err.message}`));
    call.on('cancelled', () => this.close('stream cancelled'));
    this.helloTimer = setTimeout(() => {
      if (!this.helloSeen) this.end('DEADLINE_EXCEEDED', 'no Hello within the deadline');
    }, ctx.helloTimeoutMs);
    this.helloTimer.unref();
  }

  // ---------------------------------------------------------------------------------------------------------
  // Receiving

  private refuse(kind: string, error: ErrorDetail, requestId = ''): void {
    this.status.counters.refused++;
    this.ctx.onRefused(this.status, kind, error);
    this.send({ refusal: { requestId, messageKind: kind, error } });
  }

  private onMessage(m: AgentMessage | { kind: typeof MALFORMED; reason: string }): void {
    if (this.closed) return;
    const reason = malformedReason(m);
    if (reason !== null) {
      this.refuse('message', detail('MALFORMED', reason));
      this.end('INVALID_ARGUMENT', reason);
      return;
    }
    this.status.lastContact = new Date().toISOString();
    if (!this.helloSeen && m.kind !== 'hello') {
      this.refuse(
        m.kind ?? 'message',
        detail('PROTOCOL', 'the first message of a Sync stream must be a Hello'),
      );
      this.end('FAILED_PRECONDITION', 'the first message of a Sync stream must be a Hello');
      return;
    }
    switch (m.kind) {
      case 'hello':
        this.onHello(m.hello!);
        return;
      case 'ack':
        this.onAck(m.ack!);
        return;
      case 'report':
        this.onReport(m.report!);
        return;
      case 'svidRequest':
        this.onSvidRequest(m.svidRequest!);
        return;
      default:
        this.refuse('message', detail('UNKNOWN_MESSAGE', 'empty or unknown message kind: nothing was done'));
    }
  }

  private onHello(h: Hello): void {
    if (this.helloSeen) {
      this.refuse(
        'hello',
        detail('PROTOCOL', 'a second Hello on one stream is refused: open a new stream to resync'),
      );
      return;
    }
    if (h.protocolVersion !== PROTOCOL_VERSION) {
      const e = detail(
        'PROTOCOL_VERSION',
        `protocol version ${h.protocolVersion} is not supported: this reconciler speaks ${PROTOCOL_VERSION}`,
        'upgrade the agent or the reconciler so that they match',
      );
      this.refuse('hello', e);
      this.end('FAILED_PRECONDITION', e.message);
      return;
    }
    const ids = Object.entries(h.identityVersions);
    if (
      ids.length > LIMITS.maxIdentities ||
      h.ruleHashes.length > LIMITS.maxIdentities * 16 ||
      h.credentialRefHashes.length > LIMITS.maxCredentials ||
      h.credentials.length > LIMITS.maxCredentials ||
      !ids.every(([k, v]) => isStr(k) && isStr(v, 64)) ||
      !isStr(h.programVersion, 64)
    ) {
      const e = detail('LIMIT', 'Hello is over the protocol limits (identities, hashes or lengths)');
      this.refuse('hello', e);
      this.end('RESOURCE_EXHAUSTED', e.message);
      return;
    }
    this.helloSeen = true;
    clearTimeout(this.helloTimer);
    // What the agent says it holds: believed only to choose what to send, never to widen what it may get.
    const version = programVersion(this.ctx.trustDomain, ids);
    this.held =
      h.programVersion && version === h.programVersion
        ? {
            version,
            identities: new Map(ids),
            rules: new Set(h.ruleHashes),
            credentialRefs: new Set(h.credentialRefHashes),
          }
        : NOTHING_HELD;
    this.heldTrusted = false;
    this.status.ackedVersion = this.held.version;
    for (const c of h.credentials) if (isStr(c.refHash, 64)) this.credHeld.set(c.refHash, c.fingerprint);
    this.credentialsSyncedFor = null;
    if (h.bundleVersion !== this.ctx.bundleVersion()) this.sendBundle();
    else this.bundleSent = h.bundleVersion;
    this.sync();
  }

  private onAck(a: ProgramAck): void {
    const f = this.inFlight;
    if (!f || a.responseNonce !== f.nonce) {
      this.refuse(
        'ack',
        detail(
          'STALE_NONCE',
          `ACK/NACK for nonce "${String(a.responseNonce).slice(0, 64)}", which is not the update in flight: ignored`,
        ),
      );
      return;
    }
    this.inFlight = null;
    if (!a.errorDetail) {
      if (a.versionInfo !== f.program.version) {
        this.refuse(
          'ack',
          detail(
            'VERSION_MISMATCH',
            `ACK names version ${String(a.versionInfo).slice(0, 64)}, the update was ${f.program.version}`,
          ),
        );
        // We no longer know what it holds: the next update is a full one.
        this.setHeld(NOTHING_HELD, null, false);
      } else {
        this.setHeld(summaryOf(f.program), f.program, true);
        this.nackedVersion = null;
        this.status.nack = null;
        // The agent drops the value of a reference its program no longer holds: one that comes back (a revert,
        // a binding renamed back) must be sent again, however equal its fingerprint.
        for (const h of this.credHeld.keys()) if (!f.program.credentialRefs.has(h)) this.credHeld.delete(h);
        this.ctx.onAck(this.status, f.program.version, performance.now() - f.sentAt);
        this.sendCredentials(null);
      }
    } else {
      const error: ErrorDetail = {
        code: String(a.errorDetail.code).slice(0, 64),
        message: String(a.errorDetail.message).slice(0, 4096),
        hint: String(a.errorDetail.hint).slice(0, 1024),
      };
      const kept = String(a.versionInfo).slice(0, 64);
      this.status.nack = { version: f.program.version, kept, error, at: new Date().toISOString() };
      this.ctx.onNack(this.status, f.program.version, kept, error);
      if (kept !== this.held.version) this.setHeld(NOTHING_HELD, null, false);
      if (RESYNC_CODES.has(error.code) && !f.full) {
        // The delta did not fit what the agent holds: send everything once.
        this.setHeld(NOTHING_HELD, null, false);
      } else {
        this.nackedVersion = f.program.version;
      }
    }
    this.sync();
  }

  private setHeld(held: HeldSummary, program: Program | null, trusted: boolean): void {
    this.held = held;
    this.heldProgram = program;
    this.heldTrusted = trusted;
    this.status.ackedVersion = held.version;
  }

  private onReport(r: StateReport): void {
    if (
      r.identities.length > LIMITS.maxIdentities ||
      r.processes.length > LIMITS.maxProcesses ||
      r.credentials.length > LIMITS.maxCredentials
    ) {
      this.refuse('report', detail('LIMIT', 'state report is over the protocol limits: not recorded'));
      return;
    }
    // What a Hello claims is not evidence: only a program this server sent and the agent ACKed, or the one
    // it should hold now, names the identities it may report on.
    const known = (id: string) =>
      (this.heldTrusted && this.held.identities.has(id)) ||
      this.ctx.programFor(this.scopes)?.identities.has(id) === true;
    const unknown = r.identities.find((i) => !known(i.spiffeId));
    if (unknown) {
      this.refuse(
        'report',
        detail(
          'UNKNOWN_IDENTITY',
          `state report names identity ${unknown.spiffeId.slice(0, 256)}, which is not in this agent's program: not recorded`,
        ),
      );
      return;
    }
    this.status.report = r;
    this.ctx.onReport(this.status);
  }

  private onSvidRequest(req: SvidRequest): void {
    const id = isStr(req.requestId, 128) ? req.requestId : '';
    if (this.pendingSvids >= LIMITS.maxPendingSvidRequests) {
      this.refuse(
        'svid_request',
        detail('LIMIT', `more than ${LIMITS.maxPendingSvidRequests} SVID requests outstanding`),
        id,
      );
      return;
    }
    if (!this.ctx.takeCsr(this.daemon.daemonId)) {
      this.refuse(
        'svid_request',
        detail(
          'RATE_LIMITED',
          `more than ${this.ctx.csrPerSecond} CSRs per second from this agent`,
          "the limit is per agent (SPIRE's default is 500/s per caller); retry with backoff",
        ),
        id,
      );
      return;
    }
    if (req.csrDer.length === 0 || req.csrDer.length > LIMITS.maxCsrBytes) {
      this.refuse(
        'svid_request',
        detail('INVALID', `CSR of ${req.csrDer.length} bytes (1..${LIMITS.maxCsrBytes} accepted)`),
        id,
      );
      return;
    }
    if (!isStr(req.spiffeId)) {
      this.refuse('svid_request', detail('INVALID', 'SPIFFE ID over the length limit'), id);
      return;
    }
    const entitlement = this.ctx.svidEntitlement(this.daemon, this.scopes, req.spiffeId);
    if (typeof entitlement === 'string') {
      this.refuse('svid_request', detail('OUT_OF_SCOPE', entitlement), id);
      return;
    }
    this.pendingSvids++;
    this.ctx
      .sign(
        {
          csrPem: toPem('CERTIFICATE REQUEST', req.csrDer),
          ttlSeconds: entitlement.ttlSeconds,
          dnsNames: entitlement.dnsNames,
          // The ID inside the CSR is what gets signed: it must be the one asked for, and entitled.
          authorize: (csrId) =>
            csrId === req.spiffeId ? true : `the CSR carries ${csrId}, the request names ${req.spiffeId}`,
        },
        this.daemon,
      )
      .then(
        (svid) => {
          if (this.closed) return;
          this.status.counters.svidsIssued++;
          this.send({
            svid: {
              requestId: id,
              spiffeId: req.spiffeId,
              certChainDer: certificatesDer(svid.chainPem),
              serial: svid.serial,
              notAfterUnix: Math.floor(svid.notAfter.getTime() / 1000),
            },
          });
          this.ctx.onSvid(this.status, req.spiffeId, svid.serial);
        },
        (err: unknown) => this.refuse('svid_request', detail('CSR_REFUSED', (err as Error).message), id),
      )
      .finally(() => {
        this.pendingSvids--;
      });
  }

  // ---------------------------------------------------------------------------------------------------------
  // Sending

  /** Admitted by the send budget after waiting: sends at once. */
  private readonly admitted = () => this.sync(true);

  /**
   * Sends what the agent lacks: the desired program (one update in flight at a time), once the send budget
   * admits it (`admitted`: it already has).
   */
  sync(admitted = false): void {
    if (this.closed || !this.helloSeen || this.inFlight) return;
    const desired = this.ctx.programFor(this.scopes);
    this.status.desiredVersion = desired?.version ?? '';
    if (!desired) return; // nothing published yet: the agent keeps what it has
    const full = this.forceFull;
    if (desired.version === this.held.version && !full) {
      this.heldProgram ??= desired;
      if (this.credentialsSyncedFor !== `${this.held.version}>${desired.version}`) this.sendCredentials(null);
      return;
    }
    if (desired.version === this.nackedVersion && !full) return;
    if (!admitted && !this.ctx.sendBudget.admit(this.admitted)) return;
    this.forceFull = false;
    const update = full
      ? this.ctx.diff(NOTHING_HELD, false, desired)
      : this.ctx.diff(this.held, this.heldTrusted, desired);
    const nonce = randomBytes(8).toString('hex');
    this.inFlight = { nonce, program: desired, full: update.full === true, sentAt: performance.now() };
    this.send({ program: { ...update, nonce } }, true);
  }

  /**
   * Sends the whole desired program again, then every credential value, even when the agent holds that
   * version: the node rewrites what it enforces (drift healing). False when the stream cannot take it yet.
   */
  resync(): boolean {
    if (this.closed || !this.helloSeen) return false;
    this.forceFull = true;
    this.nackedVersion = null;
    this.credHeld.clear();
    this.credentialsSyncedFor = null;
    this.sync(); // with an update in flight, after its ACK
    return true;
  }

  /** A drift heal: asks the agent to put its control interface back as it wrote it (ControlRepair). */
  repair(requestId: string): boolean {
    if (this.closed || !this.helloSeen) return false;
    this.send({ repair: { requestId } });
    return true;
  }

  sendBundle(): void {
    const v = this.ctx.bundleVersion();
    if (this.bundleSent === v) return;
    this.bundleSent = v;
    this.send(this.ctx.bundleMessage());
  }

  /**
   * Sends the values of credential references in the agent's program that it lacks or holds stale
   * (`only`: limited to these reference hashes). Only references in both the ACKed and the desired program
   * qualify: an agent never receives a value for a binding outside its scope.
   */
  sendCredentials(only: ReadonlySet<string> | null): void {
    if (this.closed || !this.heldProgram) return;
    const desired = this.ctx.programFor(this.scopes);
    if (only === null) this.credentialsSyncedFor = `${this.held.version}>${desired?.version ?? ''}`;
    const values: CredentialValue[] = [];
    const withdrawn: string[] = [];
    const refs = only ?? this.heldProgram.credentialRefs.keys();
    for (const h of refs) {
      if (!this.heldProgram.credentialRefs.has(h) || !desired?.credentialRefs.has(h)) continue;
      const v = this.ctx.credentialValue(h);
      if (v === undefined) continue;
      if (v === null) {
        if (this.credHeld.has(h)) {
          this.credHeld.delete(h);
          withdrawn.push(h);
        }
        continue;
      }
      if (this.credHeld.get(h) === v.fingerprint) continue;
      this.credHeld.set(h, v.fingerprint);
      values.push(v);
    }
    if (values.length || withdrawn.length) this.send({ credentials: { values, withdrawn } });
  }

  /**
   * Writes one message. A program update (`budgeted`) counts against the shared send budget until the stream
   * takes it, and must be taken within programDrainMs: an agent that holds its stream open without reading
   * would otherwise keep its share of the budget, and with it other agents' updates, for ever.
   */
  private send(m: Out<ServerMessage>, budgeted = false): void {
    if (this.closed) return;
    const buf = encodeServerMessage(m as ServerMessage);
    this.pendingBytes += buf.length;
    if (budgeted) {
      this.budgetedBytes += buf.length;
      this.ctx.sendBudget.take(buf.length);
      this.drainTimer ??= setTimeout(
        () =>
          this.end(
            'DEADLINE_EXCEEDED',
            `the agent did not take its program update within ${this.ctx.programDrainMs} ms; it resyncs when it reconnects`,
          ),
        this.ctx.programDrainMs,
      );
    }
    this.status.counters.messagesSent++;
    this.status.counters.bytesSent += buf.length + 5; // gRPC length prefix
    if (this.pendingBytes > this.ctx.sendQueueBytes) {
      this.end(
        'RESOURCE_EXHAUSTED',
        `send queue over ${this.ctx.sendQueueBytes} bytes: the agent is not reading; it resyncs when it reconnects`,
      );
      return;
    }
    this.call.write(buf, () => {
      // After close, what was pending has been given back already.
      if (this.closed) return;
      this.pendingBytes -= buf.length;
      if (!budgeted) return;
      this.budgetedBytes -= buf.length;
      if (this.budgetedBytes === 0) {
        clearTimeout(this.drainTimer ?? undefined);
        this.drainTimer = null;
      }
      this.ctx.sendBudget.release(buf.length);
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // Ending

  /** Ends the stream with a gRPC status and a reason. */
  end(code: keyof typeof grpc.status, message: string): void {
    if (this.closed) return;
    const call = this.call;
    this.close(message);
    call.emit('error', { code: grpc.status[code], details: message });
  }

  private close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.helloTimer);
    clearTimeout(this.drainTimer ?? undefined);
    this.ctx.sendBudget.cancel(this.admitted);
    this.ctx.sendBudget.release(this.budgetedBytes);
    this.budgetedBytes = 0;
    this.pendingBytes = 0;
    this.ctx.onClosed(this, reason);
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
