/**
 * The reconciler runtime: the git source, the policy, the identity authority, the credential manager and the
 * agent server joined into one loop (DESIGN.md §3), with its triggers, its API and its store. The `reconciler`
 * and `up` commands are thin layers over it.
 *
 *   const r = await Reconciler.start({ repo, path, stateDir, agents: { host, port } });
 *   r.on('pass', (report: PassReport) => …);   // one per pass: steps, timings, result
 *   r.trigger('api');                           // asks for a pass (coalesced; never blocks)
 *   await r.idle();                             // no pass running or pending
 *   r.applied();                                // the last good revision: render, desired programs
 *   r.desiredProgramOf(daemonId); r.agents();   // desired vs live, per agent (drift)
 *   r.heal();                                   // re-push whole programs and credential values
 *   await r.stop();                             // graceful: triggers, API, agents, credentials, store
 *
 * Passes (loop/pass.ts) run one at a time; triggers (webhook, poll with jitter, the local ref or file watch,
 * SIGHUP through trigger('signal'), a due CA rotation, a retry) coalesce into at most one more. A transient
 * failure is retried with the one backoff policy (common/retry.ts); a terminal one waits for the next trigger.
 *
 * Crash safety: the applied revision is written (fsynced) before a pass reports it applied, every SVID is
 * recorded before it leaves (agents/server.ts recordIssued), and at start the last applied revision is
 * rendered and published again before anything else, so a reconciler killed at any instant comes back serving
 * what it served, converges to the branch, and re-issues nothing: agents keep their SVIDs and programs, and
 * an agent that already holds a version is sent nothing.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { type FSWatcher, watch as watchFiles } from 'chokidar';
import type { Program } from '../../agent/protocol/program.ts';
import type { DesiredPrograms } from '../agents/programs.ts';
import { AgentServer, type AgentServerOptions, type IssuedSvid } from '../agents/server.ts';
import { bundlePin } from '../agents/serving-identity.ts';
import type { AgentStatus } from '../agents/session.ts';
import { JoinTokenStore } from '../agents/tokens.ts';
import { makeDirs, writeFileAtomic } from '../common/atomic-file.ts';
import { type BackoffPolicy, backoffDelay, DEFAULT_BACKOFF } from '../common/retry.ts';
import { resolveFingerprintKey } from '../credentials/fingerprint.ts';
import { CredentialManager, type CredentialManagerOptions } from '../credentials/manager.ts';
import type { CredentialSourceSpec, CredentialStatus } from '../credentials/types.ts';
import { type DriftSettings, type RunningDrift, startDrift } from '../drift/service.ts';
import { classify } from '../errors/classify.ts';
import {
  formatError,
  isReconcileError,
  type ReconcileError,
  reconcileError,
} from '../errors/reconcile-error.ts';
import { type ApiServer, type ApiTls, startApiServer } from '../http/server.ts';
import { type Authority, initAuthority, openAuthority } from '../identity/authority.ts';
import { createOidcDiscoveryHandler } from '../identity/oidc-discovery.ts';
import { normaliseIssuer } from '../identity/settings.ts';
import type { Diagnostic } from '../policy/diagnostics.ts';
import { RevisionReader } from '../revision/reader.ts';
import { FILE_QUIET_MS, openPolicyRepository, type PolicyRepository } from '../revision/repository.ts';
import type { SourceAuth } from '../source/index.ts';
import { applyCredentialStatus, StatusSync } from '../status/adapters.ts';
import { StatusBook } from '../status/book.ts';
import { markFailed, markReady, markReconciling } from '../status/conditions.ts';
import { type StatusSnapshot, sourceKey } from '../status/model.ts';
import { StateStore } from '../store/state-store.ts';
import { createLogger, type Logger } from '../telemetry/logger.ts';
import { ReconcilerMetrics } from '../telemetry/metrics.ts';
import { editorFor, type PolicyEditor } from '../working-copy/editor.ts';
import { StoreLeaseLedger } from './lease-ledger.ts';
import { inSync, newIdentityMemo, syncDaemons, syncIdentities } from './live-status.ts';
import {
  type AppliedRevision,
  applyOutcome,
  type CollectResult,
  type CredentialsResult,
  collectStep,
  credentialsStep,
  type DiffResult,
  diffStep,
  type FetchResult,
  fetchStep,
  type IdentitiesResult,
  identitiesStep,
  type PassParts,
  type PushResult,
  pushStep,
  type RenderStepResult,
  releaseCredentials,
  renderStep,
} from './pass.ts';
import { DEFAULT_POLL_INTERVAL_MS, DEFAULT_POLL_JITTER, Poller } from './poller.ts';
import { type RefWatch, watchLocalRef } from './ref-watch.ts';
import { CoalescingTrigger, type TriggerBatch, type TriggerSource } from './trigger.ts';
import { createWebhookHandler, type WebhookOutcome } from './webhook.ts';

export interface ReconcilerOptions {
  /** The policy repository: an http(s) URL, a local git repository, or a plain directory of policy files. */
  repo: string;
  /** The policy path inside it; default the root. */
  path?: string;
  /** The tracked branch; default a working copy's checked-out branch, else the repository's default. */
  branch?: string;
  /** Holds the store, the CA, join tokens, daemons, the API credentials and a remote's clone. */
  stateDir: string;
  /** The trust domain when the CA is created; otherwise the policy's (riptides.config.yaml). */
  trustDomain?: string;
  allowPlaintextSecrets?: boolean;
  maxFileBytes?: number;
  /** A remote's credentials and bounds (source/). */
  git?: { auth?: SourceAuth; caFile?: string; timeoutMs?: number; maxRepoBytes?: number };
  /** Where agents connect; other agent server settings (rates, limits) may be given too. */
  agents: Partial<Omit<AgentServerOptions, 'stateDir' | 'authority' | 'credentials' | 'logger'>> & {
    host: string;
    port: number;
  };
  /** The API (ctl, metrics, probes, webhooks, OIDC discovery); null for none. Default 127.0.0.1, any port. */
  api?: { host: string; port: number; tls?: ApiTls } | null;
  /** The push webhooks' shared secret; without one, /hooks/* answer 404. */
  webhookSecret?: string | Buffer;
  /** Polling interval in ms (default 60 000; 0: no polling) and jitter (default 0.1). */
  pollIntervalMs?: number;
  pollJitter?: number;
  /** Watch a local repository's branch (or a plain directory's files); default true. */
  watch?: boolean;
  /** The OIDC issuer: set when the CA is created, checked against the CA's otherwise. */
  oidcIssuer?: string;
  /** The credential providers' settings (cli/credential-flags.ts); null: no credential manager. */
  credentials?: Omit<CredentialManagerOptions, 'minter' | 'trustDomain'> | null;
  /** Longest wait for agents' ACKs after a push; default 10 s. */
  applyTimeoutMs?: number;
  /** Backoff of retries after a transient failure; default 1 s doubling to 5 min. */
  retry?: BackoffPolicy;
  logger?: Logger;
  metrics?: ReconcilerMetrics;
  /** Drift reports: schedule, heal, history, thresholds, webhook (drift/service.ts); default on request only. */
  drift?: DriftSettings;
  /** Environment for the fingerprint key (RIPTIDES_FINGERPRINT_KEY); default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** A start that cannot work as configured (exit 2 in the CLI). */
export class ReconcilerStartError extends Error {}

export type PassResult = 'applied' | 'unchanged' | 'failed' | 'stalled';

/** What one pass did: emitted as 'pass', logged as one line, kept as lastPass(). */
export interface PassReport {
  id: number;
  trigger: { counts: TriggerBatch['counts']; fires: number };
  startedAt: string;
  durationMs: number;
  result: PassResult;
  /** The revision fetched (null when the fetch failed). */
  revision: string | null;
  /** The revision in force after the pass. */
  appliedRevision: string | null;
  error: ReconcileError | null;
  steps: {
    fetch?: FetchResult;
    render?: Omit<RenderStepResult, 'result' | 'desired'>;
    identities?: IdentitiesResult;
    credentials?: CredentialsResult;
    diff?: DiffResult;
    push?: PushResult;
    collect?: CollectResult;
  };
  /** Milliseconds per step. */
  timings: Partial<Record<'fetch' | 'render' | 'identities' | 'apply' | 'collect' | 'status', number>>;
}

const SOURCE_NAME = 'policy';
const REFRESH_DEBOUNCE_MS = 200;
/**
 * The status is written at most this often (and once more on stop): each write compares every entry with what
 * was written (tens of milliseconds with 10,000 resources); the API serves the live status, and the store's
 * copy is what a restart starts from.
 */
const STATUS_WRITE_INTERVAL_MS = 2_000;

/** The pino logger as the agent server's and credential manager's `(message, fields)` interface. */
function fieldsLogger(log: Logger) {
  return {
    info: (message: string, fields?: Record<string, unknown>) => log.info(fields ?? {}, message),
    warn: (message: string, fields?: Record<string, unknown>) => log.warn(fields ?? {}, message),
    debug: (message: string, fields?: Record<string, unknown>) => log.debug(fields ?? {}, message),
  };
}

export class Reconciler extends EventEmitter {
  readonly store: StateStore;
  readonly book: StatusBook;
  readonly metrics: ReconcilerMetrics;
  readonly logger: Logger;
  readonly repository: PolicyRepository;
  readonly authority: Authority;
  readonly credentials: CredentialManager | null;
  readonly agentServer: AgentServer;
  api: ApiServer | null = null;
  /** Drift reports over this reconciler's agents (POST /api/v1/drift, --drift-schedule). */
  readonly drift: RunningDrift;

  readonly #opts: ReconcilerOptions;
  readonly #reader: RevisionReader;
  readonly #parts: PassParts;
  readonly #trigger: CoalescingTrigger;
  readonly #retry: BackoffPolicy;
  #applied: AppliedRevision | null = null;
  /** The last revision refused (it does not validate), so that it is not rendered again. */
  #refused: { revision: string; error: ReconcileError; diagnostics: Diagnostic[] } | null = null;
  /** Why the source is not in force as fetched (fetch or render failure); null when it is. */
  #sourceError: ReconcileError | null = null;
  #failures = 0;
  #passes = 0;
  #lastPass: PassReport | null = null;
  #firstPassDone = false;
  #stopping = false;
  readonly #heldCredentials = new Map<string, CredentialSourceSpec>();
  /** Brings the book to each applied revision at the cost of what it changed. */
  readonly #statusSync = new StatusSync();
  /** What the identities' runtime fields were last set from (syncIdentities). */
  readonly #identityMemo = newIdentityMemo();
  #retryTimer: NodeJS.Timeout | undefined;
  #rotationTimer: NodeJS.Timeout | undefined;
  #refreshTimer: NodeJS.Timeout | undefined;
  /**
   * A pass renders and applies a new revision (after its fetch, before its collect): a status refresh that falls
   * due then waits for the pass, which refreshes the status itself when it starts waiting for ACKs and when it
   * ends, rather than walking every resource in the middle of the pass it would slow down. Never during a fetch,
   * which a slow git server can make last its whole deadline.
   */
  #holdRefresh = false;
  #refreshOwed = false;
  /** What the statuses last showed of the credential manager: its status object, the revision, the book's generation. */
  #credentialsShown: { status: CredentialStatus; revision: string | null; generation: number } | undefined;
  #poller: Poller | null = null;
  #refWatch: RefWatch | null = null;
  #fileWatch: FSWatcher | null = null;
  #webhook: ReturnType<typeof createWebhookHandler> | null = null;
  #persisting: Promise<void> | null = null;
  #persistAgain = false;
  #lastPersist = 0;
  /** Ends the wait before the next status write (on stop). */
  #persistNow: (() => void) | null = null;

  private constructor(
    opts: ReconcilerOptions,
    parts: {
      store: StateStore;
      logger: Logger;
      metrics: ReconcilerMetrics;
      repository: PolicyRepository;
      authority: Authority;
      credentials: CredentialManager | null;
      agentServer: AgentServer;
      reader: RevisionReader;
    },
  ) {
    super();
    this.#opts = opts;
    this.store = parts.store;
    this.logger = parts.logger;
    this.metrics = parts.metrics;
    this.repository = parts.repository;
    this.authority = parts.authority;
    this.credentials = parts.credentials;
    this.agentServer = parts.agentServer;
    this.metrics.followAgents(() => parts.agentServer.counters);
    this.#reader = parts.reader;
    this.#retry = opts.retry ?? DEFAULT_BACKOFF;
    this.book = new StatusBook({}, parts.store.status.get());
    this.#parts = {
      repository: parts.repository,
      reader: parts.reader,
      authority: parts.authority,
      credentials: parts.credentials,
      agents: parts.agentServer,
      applyTimeoutMs: opts.applyTimeoutMs ?? 10_000,
    };
    this.#trigger = new CoalescingTrigger((batch) => this.#runPass(batch), {
      onError: (err) => this.logger.error({ err }, 'reconcile pass failed unexpectedly'),
    });
    this.#initSource();
    this.drift = startDrift(
      {
        stateDir: opts.stateDir,
        source: parts.agentServer,
        store: parts.store,
        metrics: parts.metrics,
        logger: fieldsLogger(parts.logger.child({ part: 'drift' })),
      },
      opts.drift,
    );
  }

  /**
   * Opens the state directory (one reconciler per directory), the CA (created on first start, for the
   * policy's trust domain), the credential manager and the agent server; serves the last applied revision
   * again; starts the API and the triggers, and asks for the first pass. Throws ReconcilerStartError when it
   * cannot work as configured (another reconciler holds the state directory, a CA of another trust domain or
   * issuer, no trust domain to create the CA with).
   */
  static async start(opts: ReconcilerOptions): Promise<Reconciler> {
    const logger = opts.logger ?? createLogger({ base: { component: 'reconciler' } });
    const metrics = opts.metrics ?? new ReconcilerMetrics();
    const path = opts.path ?? '';
    await makeDirs(opts.stateDir, 0o700);
    const store = await StateStore.open({ stateDir: opts.stateDir }).catch((err: Error) => {
      throw new ReconcilerStartError(err.message);
    });
    const undo: Array<() => Promise<unknown>> = [() => store.close()];
    try {
      const repository = await openPolicyRepository({
        repo: opts.repo,
        path,
        ...(opts.branch ? { branch: opts.branch } : {}),
        cacheDir: join(opts.stateDir, 'git'),
        ...(opts.git?.auth ? { auth: opts.git.auth } : {}),
        ...(opts.git?.caFile ? { caFile: opts.git.caFile } : {}),
        ...(opts.git?.timeoutMs ? { timeoutMs: opts.git.timeoutMs } : {}),
        ...(opts.git?.maxRepoBytes ? { maxRepoBytes: opts.git.maxRepoBytes } : {}),
        ...(opts.maxFileBytes ? { maxFileBytes: opts.maxFileBytes } : {}),
      });
      const reader = RevisionReader.inMemory({
        path,
        ...(opts.trustDomain ? { trustDomain: opts.trustDomain } : {}),
        ...(opts.allowPlaintextSecrets ? { allowSecrets: true } : {}),
        ...(opts.maxFileBytes ? { maxFileBytes: opts.maxFileBytes } : {}),
      });
      const authority = await openOrInitCa(opts, repository, reader, logger);
      const leases = await StoreLeaseLedger.open(store, logger);
      const credentials =
        opts.credentials === null
          ? null
          : new CredentialManager({
              ...opts.credentials,
              minter: authority.jwt,
              trustDomain: authority.trustDomain,
              fingerprintKey:
                opts.credentials?.fingerprintKey ??
                resolveFingerprintKey({ env: opts.env ?? process.env, stateDir: opts.stateDir }),
              logger: fieldsLogger(logger.child({ part: 'credentials' })),
              leases,
            });
      if (credentials) undo.push(() => credentials.close());
      const agentServer = await AgentServer.start({
        ...opts.agents,
        stateDir: opts.stateDir,
        authority,
        credentials,
        manageCredentials: false,
        logger: fieldsLogger(logger.child({ part: 'agents' })),
        recordIssued: (svid) => recordSerial(store, svid),
      });
      undo.push(() => agentServer.close());
      const r = new Reconciler(opts, {
        store,
        logger,
        metrics,
        repository,
        authority,
        credentials,
        agentServer,
        reader,
      });
      await r.#serve();
      return r;
    } catch (err) {
      for (const u of undo.reverse()) await u().catch(() => {});
      throw err;
    }
  }

  /** Where agents connect (`host:port`). */
  get agentAddress(): string {
    const host = this.#opts.agents.host;
    return `${host.includes(':') ? `[${host}]` : host}:${this.agentServer.port}`;
  }

  /** Asks for a pass; never blocks. Several requests while one runs make exactly one more. */
  trigger(source: TriggerSource, detail?: string): void {
    this.metrics.triggers.inc({ source });
    this.#trigger.fire(source, detail);
  }

  /** Resolves when no pass runs and none is pending. */
  idle(): Promise<void> {
    return this.#trigger.idle();
  }

  lastPass(): PassReport | null {
    return this.#lastPass;
  }

  /** The last good revision in force (its render and desired state), or null before one was applied. */
  applied(): AppliedRevision | null {
    return this.#applied;
  }

  /** The desired programs in force per scope (null before the first publish). */
  desiredPrograms(): DesiredPrograms | null {
    return this.agentServer.desiredPrograms()?.programs ?? null;
  }

  /** The program `daemonId` should enforce (null for an unknown daemon or before the first publish). */
  desiredProgramOf(daemonId: string): Program | null {
    return this.agentServer.desiredProgramOf(daemonId);
  }

  /** Every registered agent with what it holds, ACKed, NACKed and last reported (its live state). */
  agents(): AgentStatus[] {
    return this.agentServer.agents();
  }

  /**
   * Re-pushes whole programs and credential values to these daemons (default: every connected one) so that
   * each node rewrites what it enforces; for drift healing. Returns the daemons it went to.
   */
  heal(daemonIds?: Iterable<string>): { resynced: string[] } {
    const resynced = this.agentServer.resync(daemonIds);
    this.logger.info({ daemons: resynced.length }, 'heal: programs and credentials sent again');
    return { resynced };
  }

  /**
   * A single-use join token for a new agent (as `riptides-cli token create`): in `daemonGroup`, or for the
   * daemon ID given; default lifetime 1 h.
   */
  async createJoinToken(
    opts: { daemonGroup?: string; daemonId?: string; ttlSeconds?: number } = {},
  ): Promise<string> {
    const tokens = new JoinTokenStore(join(this.#opts.stateDir, 'tokens'));
    await tokens.init();
    const { token } = await tokens.create({
      pin: bundlePin(this.authority),
      ttlSeconds: opts.ttlSeconds ?? 3600,
      daemonGroup: opts.daemonGroup ?? null,
      daemonId: opts.daemonId ?? null,
    });
    return token;
  }

  /** The status as the API serves it. */
  status(): StatusSnapshot {
    return this.book.snapshot();
  }

  /**
   * Graceful stop: triggers stop and the running pass ends, the API finishes requests in flight, agents'
   * streams end (they keep enforcing what they hold), credentials are released, the status is written and
   * the state directory released.
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    // How long each step took, in ms: a slow stop says which part held it.
    const timings: Record<string, number> = {};
    const step = async (name: string, f: () => Promise<unknown> | unknown) => {
      const t = performance.now();
      try {
        await f();
      } catch (err) {
        this.logger.warn({ err, step: name }, 'shutdown step failed');
      } finally {
        timings[name] = Math.round(performance.now() - t);
      }
    };
    await step('triggers', async () => {
      this.#poller?.stop();
      for (const t of [this.#retryTimer, this.#rotationTimer, this.#refreshTimer]) clearTimeout(t);
      await this.#refWatch?.close();
      await this.#fileWatch?.close();
      await this.#trigger.stop();
    });
    await step('api', () => this.api?.close(graceMs));
    await step('drift', () => this.drift.stop());
    await step('agents', () => this.agentServer.close());
    await step('credentials', () => this.credentials?.close());
    await step('status', async () => {
      this.#refreshStatus();
      this.#persistNow?.();
      await this.#persistStatus();
    });
    await step('store', () => this.store.close());
    this.logger.info({ timings }, 'reconciler stopped');
  }

  // ---------------------------------------------------------------------------------------------------------
  // Start-up

  async #serve(): Promise<void> {
    const opts = this.#opts;
    await this.#restore();
    await writeFileAtomic(
      join(opts.stateDir, 'reconciler.json'),
      `${JSON.stringify(
        {
          listen: this.agentAddress,
          pid: process.pid,
          trustDomain: this.authority.trustDomain,
          bundlePin: bundlePin(this.authority),
          startedAt: new Date().toISOString(),
        },
        null,
        2,
      )}\n`,
      { mode: 0o644 },
    );
    this.#wireEvents();
    if (opts.api !== null) {
      const api = opts.api ?? { host: '127.0.0.1', port: 0 };
      const editor = this.#editor();
      this.api = await startApiServer({
        host: api.host,
        port: api.port,
        stateDir: opts.stateDir,
        ...(api.tls ? { tls: api.tls } : {}),
        status: () => this.status(),
        ready: () =>
          this.#firstPassDone ? { ready: true } : { ready: false, reason: 'the first pass has not finished' },
        metrics: this.metrics,
        ...(opts.webhookSecret ? { webhook: (req, res, p) => this.#onWebhook(req, res, p) } : {}),
        editor,
        drift: (o) => this.drift.runner.run(o),
        oidc: createOidcDiscoveryHandler(this.authority.jwt),
        logger: this.logger.child({ part: 'api' }),
      });
    }
    await this.#startTriggers();
    if (this.repository.notice) this.logger.warn(this.repository.notice);
    this.logger.info(
      {
        listen: this.agentAddress,
        api: this.api?.url ?? null,
        repository: this.repository.description,
        kind: this.repository.kind,
        branch: this.repository.branch,
        path: opts.path ?? '',
        trustDomain: this.authority.trustDomain,
        issuer: this.authority.jwt.issuer,
        bundlePin: bundlePin(this.authority),
        stateDir: opts.stateDir,
      },
      'serving agents',
    );
    this.trigger('startup');
  }

  /** The last applied revision (from the store), rendered and published before the first pass. */
  async #restore(): Promise<void> {
    const saved = this.store.applied.get();
    if (!saved) return;
    try {
      if (this.repository.kind === 'directory') await this.repository.update();
      const rendered = await renderStep(this.#parts, saved.revision);
      if (!rendered.ok) {
        this.logger.warn(
          { revision: saved.revision, error: formatError(rendered.error) },
          'the last applied revision could not be rendered again; the first pass decides what is in force',
        );
        return;
      }
      const plan = this.agentServer.plan(rendered.value.desired);
      const creds = credentialsStep(this.#parts, plan, this.#heldCredentials);
      this.agentServer.publish(plan);
      this.#applied = {
        revision: saved.revision,
        appliedAt: saved.appliedAt,
        result: rendered.value.result,
        desired: rendered.value.desired,
        trustDomain: rendered.value.trustDomain,
      };
      this.metrics.setAppliedRevision(saved.revision, new Date(saved.appliedAt));
      // The status is written every few seconds, the applied revision at once: killed in between, the status read
      // back still shows the revision before. It shows the one served now.
      const shown = this.book.source()?.lastAppliedRevision ?? null;
      this.#showApplied(saved.revision, saved.appliedAt, rendered.value);
      if (shown !== saved.revision)
        this.book.events.record(
          sourceKey(SOURCE_NAME),
          'Normal',
          'Applied',
          `applied ${saved.revision.slice(0, 12)}: ${rendered.value.resources} resource(s) (served again after a restart)`,
          saved.revision,
        );
      this.logger.info(
        {
          revision: saved.revision,
          scopes: plan.programs.scopes.size,
          credentials: creds.ok ? creds.value.pairs : 0,
        },
        'serving the last applied revision',
      );
    } catch (err) {
      this.logger.warn({ err, revision: saved.revision }, 'could not serve the last applied revision again');
    }
  }

  /**
   * Shows `revision` (applied at `appliedAt`, ISO 8601) in the status: its resources and the source's applied
   * revision. After an apply, and after a restart that serves it again.
   */
  #showApplied(
    revision: string,
    appliedAt: string,
    r: Pick<RenderStepResult, 'result' | 'trustDomain'>,
  ): void {
    this.#statusSync.sync(this.book, r.result.resources, { trustDomain: r.trustDomain, revision });
    this.book.updateSource(
      () => this.book.source()!,
      (s) => {
        s.lastAppliedRevision = revision;
        s.lastAppliedAt = appliedAt;
      },
    );
  }

  #initSource(): void {
    this.book.updateSource(
      () => ({
        name: SOURCE_NAME,
        url: this.repository.description,
        branch: this.repository.branch ?? '',
        path: this.#opts.path ?? '',
        lastFetchedRevision: null,
        lastFetchedAt: null,
        lastAppliedRevision: null,
        lastAppliedAt: null,
        conditions: [],
        diagnostics: [],
        omittedDiagnostics: 0,
      }),
      (s) => {
        // The repository may have changed between runs: what it is now, what was applied is kept.
        s.url = this.repository.description;
        s.branch = this.repository.branch ?? s.branch;
        s.path = this.#opts.path ?? '';
      },
    );
  }

  #editor(): PolicyEditor {
    let editor: Promise<PolicyEditor> | null = null;
    const get = () => {
      editor ??= editorFor({
        repo: this.repository.dir ?? this.#opts.repo,
        ...(this.#opts.path ? { path: this.#opts.path } : {}),
        branch: this.repository.branch ?? 'main',
        trustDomain: this.authority.trustDomain,
        ...(this.#opts.allowPlaintextSecrets ? { allowPlaintextSecrets: true } : {}),
      });
      return editor;
    };
    return {
      apply: async (req) => (await get()).apply(req),
      delete: async (req) => (await get()).delete(req),
    };
  }

  async #startTriggers(): Promise<void> {
    const opts = this.#opts;
    const interval = opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    if (interval > 0) {
      this.#poller = new Poller(() => this.trigger('poll'), {
        intervalMs: interval,
        jitter: opts.pollJitter ?? DEFAULT_POLL_JITTER,
      });
      this.#poller.start();
    }
    if (opts.watch === false) return;
    const dir = this.repository.dir;
    if (this.repository.kind === 'git' && dir) {
      // The branch of a bare repository without --branch is its default: read it once.
      if (!this.repository.branch) await this.repository.update().catch(() => undefined);
      const branch = this.repository.branch;
      if (!branch) return;
      this.#refWatch = await watchLocalRef({
        repo: dir,
        branch,
        onCommit: (commit) => this.trigger('watch', commit ?? 'deleted'),
        onError: (err) => this.logger.warn({ err }, 'watching the local branch failed'),
      }).catch((err: unknown) => {
        this.logger.warn({ err }, 'cannot watch the local branch; polling only');
        return null;
      });
    } else if (this.repository.kind === 'directory' && dir) {
      const root = join(dir, this.#opts.path ?? '');
      this.#fileWatch = watchFiles(root, {
        ignoreInitial: true,
        // Dot-files and node_modules are never policy (the reader skips them too).
        ignored: (p: string) => /(^|[/\\])(\.[^/\\]|node_modules([/\\]|$))/.test(p.slice(root.length)),
      });
      // Files are not written atomically by every editor or script: a pass starts once they have been
      // quiet for a moment, so it does not read half a save.
      let quiet: NodeJS.Timeout | undefined;
      this.#fileWatch.on('all', () => {
        clearTimeout(quiet);
        quiet = setTimeout(() => this.trigger('watch'), FILE_QUIET_MS);
        quiet.unref();
      });
      this.#fileWatch.on('error', (err) => this.logger.warn({ err }, 'watching the policy files failed'));
    }
  }

  #onWebhook(req: IncomingMessage, res: ServerResponse, provider: string): void {
    // Until the first fetch names the default branch, an authenticated push of any branch starts a pass.
    this.#webhook ??= createWebhookHandler(
      { secret: this.#opts.webhookSecret!, branch: () => this.repository.branch },
      (o) => this.#onWebhookOutcome(o),
    );
    this.#webhook(req, res, provider);
  }

  #onWebhookOutcome(o: WebhookOutcome): void {
    this.metrics.countWebhook(o);
    if (o.result === 'accepted') this.trigger('webhook', o.delivery ?? undefined);
    if (o.result === 'rejected')
      this.logger.warn({ provider: o.provider, reason: o.reason, status: o.status }, 'webhook refused');
    else this.logger.info({ provider: o.provider, result: o.result }, 'webhook');
  }

  #wireEvents(): void {
    const server = this.agentServer;
    const connected = () =>
      this.metrics.agentsConnected.set(server.agents().filter((a) => a.connected).length);
    server.on('connected', () => {
      connected();
      this.#scheduleRefresh();
    });
    server.on('disconnected', () => {
      connected();
      this.#scheduleRefresh();
    });
    server.on('ack', () => this.#scheduleRefresh());
    server.on('nack', () => {
      this.metrics.programNacks.inc();
      this.#scheduleRefresh();
    });
    server.on('report', () => this.#scheduleRefresh());
    this.credentials?.on('update', () => this.#scheduleRefresh());
  }

  // ---------------------------------------------------------------------------------------------------------
  // The pass

  async #runPass(batch: TriggerBatch): Promise<void> {
    const id = ++this.#passes;
    const started = performance.now();
    const report: PassReport = {
      id,
      trigger: { counts: batch.counts, fires: batch.fires },
      startedAt: new Date().toISOString(),
      durationMs: 0,
      result: 'unchanged',
      revision: null,
      appliedRevision: this.#applied?.revision ?? null,
      error: null,
      steps: {},
      timings: {},
    };
    const timed = async <T>(name: keyof PassReport['timings'], f: () => Promise<T> | T): Promise<T> => {
      const t = performance.now();
      try {
        return await f();
      } finally {
        report.timings[name] = Math.round(performance.now() - t);
      }
    };
    try {
      await this.#pass(report, timed);
    } finally {
      const statusStarted = performance.now();
      // This refresh is the one any refresh held during the pass was waiting for.
      this.#holdRefresh = false;
      this.#refreshOwed = false;
      this.#refreshStatus();
      report.timings.status = Math.round(performance.now() - statusStarted);
      report.durationMs = Math.round(performance.now() - started);
      report.appliedRevision = this.#applied?.revision ?? null;
      this.#lastPass = report;
      this.#firstPassDone = true;
      const result = report.result === 'applied' || report.result === 'unchanged' ? 'success' : report.result;
      this.metrics.reconcileDuration.observe({ result }, report.durationMs / 1000);
      this.metrics.triggersCoalesced.inc(Math.max(0, batch.fires - 1));
      this.#logPass(report);
      void this.#persistStatus();
      this.emit('pass', report);
    }
  }

  async #pass(
    report: PassReport,
    timed: <T>(name: keyof PassReport['timings'], f: () => Promise<T> | T) => Promise<T>,
  ): Promise<void> {
    const known = { applied: this.#applied?.revision ?? null, refused: this.#refused?.revision ?? null };
    const fetched = await timed('fetch', () => fetchStep(this.#parts, known));
    if (!fetched.ok) return this.#failed(report, fetched.error);
    const f = fetched.value;
    report.revision = f.revision;
    report.steps.fetch = f;
    this.#noteFetch(f);

    const ids = await timed('identities', () => identitiesStep(this.#parts));
    if (!ids.ok) return this.#failed(report, ids.error);
    report.steps.identities = ids.value;
    this.#armRotation(ids.value.nextRotation?.at ?? null);
    if (ids.value.rotated) this.logger.info({ step: ids.value.rotated }, 'identity authority rotated');

    if (!f.changed) {
      if (f.revision === this.#refused?.revision) {
        // The same commit that did not validate: its diagnostics stand, nothing is rendered again.
        this.#sourceError = this.#refused.error;
        report.result = 'stalled';
        report.error = this.#refused.error;
        return;
      }
      this.#recovered();
      return;
    }

    // A new revision: a refresh between its render and apply would compete with them for the one thread.
    this.#holdRefresh = true;
    const rendered = await timed('render', () => renderStep(this.#parts, f.revision));
    if (!rendered.ok) {
      if (rendered.error.code === 'ValidationFailed')
        this.#refused = {
          revision: f.revision,
          error: rendered.error,
          diagnostics: rendered.diagnostics ?? [],
        };
      return this.#failed(report, rendered.error);
    }
    const r = rendered.value;
    const { result: _result, desired: _desired, ...renderSummary } = r;
    report.steps.render = renderSummary;

    let applied: { diff: DiffResult; release: string[] };
    try {
      applied = await timed('apply', () => this.#apply(report, r));
    } catch (err) {
      return this.#failed(report, isReconcileError(err) ? err : classify(err));
    }
    this.#releaseRefresh();
    const collect = await timed('collect', () => collectStep(this.#parts, applied.diff));
    report.steps.collect = collect;
    await releaseCredentials(this.#parts, applied.release, this.#heldCredentials);
    this.#recovered();
    const outcome = applyOutcome(f.revision, collect, applied.diff.unreachable.length);
    report.result = outcome?.code === 'ProgramRejected' ? 'stalled' : 'applied';
    report.error = outcome;
  }

  /**
   * diff → credentials → push for a rendered revision, then the applied revision made durable and the
   * resources' status set to it. Returns the diff (for collect) and the credential pairs to release.
   */
  async #apply(report: PassReport, r: RenderStepResult): Promise<{ diff: DiffResult; release: string[] }> {
    const plan = this.agentServer.plan(r.desired);
    const diff = diffStep(plan);
    report.steps.diff = diff;
    const creds = credentialsStep(this.#parts, plan, this.#heldCredentials);
    if (!creds.ok) throw creds.error;
    const { release, ...credSummary } = creds.value;
    report.steps.credentials = credSummary;
    const pushed = pushStep(this.#parts, plan);
    if (!pushed.ok) throw pushed.error;
    report.steps.push = pushed.value;
    const appliedAt = new Date().toISOString();
    // Durable before it is reported applied: a restart serves this revision again.
    await this.store.applied.set({
      revision: r.revision,
      appliedAt,
      programVersions: Object.fromEntries([...plan.programs.scopes.values()].map((s) => [s.scope, s.hash])),
    });
    this.#applied = {
      revision: r.revision,
      appliedAt,
      result: r.result,
      desired: r.desired,
      trustDomain: r.trustDomain,
    };
    this.#refused = null;
    this.metrics.setAppliedRevision(r.revision, new Date(appliedAt));
    this.metrics.programPushes.inc(pushed.value.agentsUpdated);
    this.#showApplied(r.revision, appliedAt, r);
    this.book.setSourceDiagnostics([]);
    this.book.events.record(
      sourceKey(SOURCE_NAME),
      'Normal',
      'Applied',
      `applied ${r.revision.slice(0, 12)}: ${r.resources} resource(s), ${diff.scopesChanged.length} scope(s) changed, ${diff.toUpdate.length} daemon(s) to update`,
      r.revision,
    );
    this.logger.info(
      {
        revision: r.revision,
        scopesChanged: diff.scopesChanged.length,
        agentsToUpdate: diff.toUpdate.length,
        unreachable: diff.unreachable.length,
        bytes: pushed.value.bytes,
      },
      'published',
    );
    return { diff, release };
  }

  /** A step failed: the source says why; transient failures are retried with backoff. */
  #failed(report: PassReport, error: ReconcileError): void {
    report.error = error;
    report.result = error.terminal ? 'stalled' : 'failed';
    this.#sourceError = error;
    const revision = report.revision;
    const key = sourceKey(SOURCE_NAME);
    this.book.events.record(key, 'Warning', error.code, error.reason, revision);
    if (error.code === 'ValidationFailed' && this.#refused?.revision === revision)
      this.book.setSourceDiagnostics(this.#refused.diagnostics);
    if (error.code === 'ValidationFailed')
      this.logger.warn(
        {
          revision,
          code: error.code,
          reason: error.reason,
          diagnostics: (error.details ?? [])
            .slice(0, 10)
            .map((d) => `${d.file}:${d.line}:${d.column}: ${d.code} ${d.message}`),
          inForce: this.#applied?.revision ?? null,
        },
        'policy does not validate: nothing applied, agents keep the last good program',
      );
    if (error.terminal) {
      this.#failures = 0;
      clearTimeout(this.#retryTimer);
      return;
    }
    this.#failures++;
    const delay = backoffDelay(this.#failures, this.#retry);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.trigger('retry'), delay);
    this.#retryTimer.unref();
    this.logger.warn(
      { code: error.code, reason: error.reason, attempt: this.#failures, retryInMs: Math.round(delay) },
      'pass failed; retrying',
    );
  }

  #recovered(): void {
    this.#sourceError = null;
    this.#failures = 0;
    clearTimeout(this.#retryTimer);
  }

  #noteFetch(f: FetchResult): void {
    const before = this.book.source()?.lastFetchedRevision ?? null;
    this.book.updateSource(
      () => this.book.source()!,
      (s) => {
        s.lastFetchedRevision = f.revision;
        s.lastFetchedAt = f.fetchedAt;
        s.branch = this.repository.branch ?? s.branch;
      },
    );
    if (before !== f.revision)
      this.book.events.record(
        sourceKey(SOURCE_NAME),
        'Normal',
        'NewRevision',
        `${this.repository.branch ? `${this.repository.branch}@` : ''}${f.revision}`,
        f.revision,
      );
    if (f.historyRewritten) {
      this.book.events.record(
        sourceKey(SOURCE_NAME),
        'Warning',
        'HistoryRewritten',
        `${this.repository.branch} no longer contains ${this.#applied?.revision.slice(0, 12)} (a force-push): following the branch`,
        f.revision,
      );
      this.logger.warn(
        { branch: this.repository.branch, from: this.#applied?.revision, to: f.revision },
        'the tracked branch was rewritten (force-push); following it',
      );
    }
  }

  #armRotation(at: string | null): void {
    clearTimeout(this.#rotationTimer);
    if (!at || this.#stopping) return;
    const delay = Math.min(Math.max(1000, Date.parse(at) - Date.now()), 2 ** 31 - 1);
    this.#rotationTimer = setTimeout(() => this.trigger('schedule', 'rotation'), delay);
    this.#rotationTimer.unref();
  }

  #logPass(report: PassReport): void {
    const s = report.steps;
    const fields = {
      pass: report.id,
      result: report.result,
      revision: report.revision,
      applied: report.appliedRevision,
      durationMs: report.durationMs,
      timings: report.timings,
      triggers: report.trigger.counts,
      ...(s.render ? { files: s.render.files, parsed: s.render.parsed, resources: s.render.resources } : {}),
      ...(s.diff
        ? { scopesChanged: s.diff.scopesChanged.length, agentsToUpdate: s.diff.toUpdate.length }
        : {}),
      ...(s.push ? { bytesPushed: s.push.bytes } : {}),
      ...(s.collect
        ? {
            acked: s.collect.acked.length,
            nacked: s.collect.nacked.length,
            pending: s.collect.pending.length,
          }
        : {}),
      ...(report.error ? { code: report.error.code, reason: report.error.reason } : {}),
    };
    if (report.result === 'failed' || report.result === 'stalled') this.logger.warn(fields, 'pass');
    else this.logger.info(fields, 'pass');
  }

  // ---------------------------------------------------------------------------------------------------------
  // Status

  /** Ends a hold (#holdRefresh): a refresh that fell due meanwhile is scheduled now. */
  #releaseRefresh(): void {
    this.#holdRefresh = false;
    if (this.#refreshOwed) {
      this.#refreshOwed = false;
      this.#scheduleRefresh();
    }
  }

  #scheduleRefresh(): void {
    if (this.#refreshTimer || this.#stopping) return;
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = undefined;
      if (this.#holdRefresh) {
        this.#refreshOwed = true;
        return;
      }
      this.#refreshStatus();
      void this.#persistStatus();
    }, REFRESH_DEBOUNCE_MS);
    this.#refreshTimer.unref();
  }

  /** Daemons, identities' runtime fields, credentials and the source's conditions from what is known now. */
  #refreshStatus(): void {
    const revision = this.#applied?.revision ?? null;
    const agents = this.agentServer.agents();
    syncDaemons(this.book, agents, revision);
    syncIdentities(this.book, agents, this.desiredPrograms(), revision, this.#identityMemo);
    if (this.credentials) {
      // The same status object (credentials retrying as before), revision and resources: already shown.
      const status = this.credentials.status();
      const seen = this.#credentialsShown;
      if (seen?.status !== status || seen.revision !== revision || seen.generation !== this.book.generation) {
        // A new commit and the same credential states: the entries the sync moved to the new revision as a whole
        // show them still; only those it made, merged or could not move are looked at, not all 10,000.
        const onlyResynced = seen?.status === status && seen.generation === this.book.generation - 1;
        applyCredentialStatus(this.book, status, revision, onlyResynced ? this.book.resynced() : undefined);
        this.metrics.setCredentialStates(status);
        this.#credentialsShown = { status, revision, generation: this.book.generation };
      }
    }
    this.#sourceConditions(agents);
  }

  #sourceConditions(agents: readonly AgentStatus[]): void {
    const now = this.book.now();
    const applied = this.#applied;
    const fetched = this.book.source()?.lastFetchedRevision ?? null;
    this.book.updateSource(
      () => this.book.source()!,
      (s) => {
        const error = this.#sourceError;
        if (error) {
          s.conditions = markFailed(s.conditions, fetched, error, now);
          return;
        }
        if (!applied) {
          s.conditions = markReconciling(s.conditions, fetched, 'waiting for the first revision', now);
          return;
        }
        const connected = agents.filter((a) => a.connected);
        const refused = connected.filter((a) => a.nack && a.nack.version === a.desiredVersion);
        const behind = connected.filter((a) => !inSync(a) && !refused.includes(a));
        const unreachable = agents.length - connected.length;
        const short = applied.revision.slice(0, 12);
        if (refused.length) {
          const first = refused[0]!;
          s.conditions = markFailed(
            s.conditions,
            applied.revision,
            reconcileError(
              'ProgramRejected',
              `${short} is in force; ${refused.length} daemon(s) refused it and keep their previous program (${first.daemonId}: ${first.nack!.error.code} ${first.nack!.error.message})`,
            ),
            now,
          );
        } else if (behind.length)
          s.conditions = markReconciling(
            s.conditions,
            applied.revision,
            `applying ${short}: ${behind.length} of ${connected.length} connected daemon(s) not in sync yet`,
            now,
          );
        else
          s.conditions = markReady(
            s.conditions,
            applied.revision,
            `applied ${short}: ${connected.length} daemon(s) in sync${unreachable ? `, ${unreachable} unreachable` : ''}`,
            now,
          );
      },
    );
  }

  /**
   * Writes the status snapshot, at most once per STATUS_WRITE_INTERVAL_MS (at once when stopping); calls
   * while a write waits or runs make one more write after it.
   */
  #persistStatus(): Promise<void> {
    if (this.#persisting) {
      this.#persistAgain = true;
      return this.#persisting;
    }
    this.#persisting = (async () => {
      do {
        this.#persistAgain = false;
        const wait = this.#lastPersist + STATUS_WRITE_INTERVAL_MS - Date.now();
        if (wait > 0 && !this.#stopping)
          await new Promise<void>((resolve) => {
            this.#persistNow = resolve;
            setTimeout(resolve, wait).unref();
          });
        this.#persistNow = null;
        this.#lastPersist = Date.now();
        try {
          await this.store.status.set(this.book.view(), this.book.takeChanges());
        } catch (err) {
          this.logger.warn({ err }, 'could not write the status to the store');
        }
      } while (this.#persistAgain);
    })().finally(() => {
      this.#persisting = null;
    });
    return this.#persisting;
  }
}

/** The store's record of an issued SVID, fsynced before the SVID is sent. */
function recordSerial(store: StateStore, svid: IssuedSvid): Promise<void> {
  return store.serials.put(svid.serial, {
    spiffeId: svid.spiffeId,
    daemonId: svid.daemonId,
    notBefore: svid.notBefore.toISOString(),
    notAfter: svid.notAfter.toISOString(),
    publicKeyHash: svid.publicKeyHash,
  });
}

/**
 * The CA in `<state-dir>/ca`: opened, and checked against --trust-domain and --oidc-issuer; or created for the
 * policy's trust domain (from --trust-domain, else riptides.config.yaml at the tracked revision).
 */
async function openOrInitCa(
  opts: ReconcilerOptions,
  repository: PolicyRepository,
  reader: RevisionReader,
  logger: Logger,
): Promise<Authority> {
  const dir = join(opts.stateDir, 'ca');
  let issuer: string | undefined;
  if (opts.oidcIssuer !== undefined) {
    try {
      issuer = normaliseIssuer(opts.oidcIssuer);
    } catch (err) {
      throw new ReconcilerStartError(`--oidc-issuer: ${(err as Error).message}`);
    }
  }
  if (existsSync(join(dir, 'authority.json'))) {
    const authority = await openAuthority(dir);
    if (opts.trustDomain && authority.trustDomain !== opts.trustDomain)
      throw new ReconcilerStartError(
        `the CA in ${dir} is for trust domain ${authority.trustDomain}, not ${opts.trustDomain}: use another --state-dir`,
      );
    if (issuer && authority.jwt.issuer !== issuer)
      throw new ReconcilerStartError(
        `--oidc-issuer ${issuer} is not the issuer the CA in ${dir} signs JWT-SVIDs with (${authority.jwt.issuer}): relying parties would refuse every token; pass --oidc-issuer ${authority.jwt.issuer}, or use a new --state-dir`,
      );
    return authority;
  }
  let trustDomain = opts.trustDomain;
  if (!trustDomain) {
    // The policy names it: read the tracked revision's riptides.config.yaml.
    try {
      const { revision } = await repository.update();
      const source = repository.sourceFor(revision);
      trustDomain = source ? (await reader.render(source, revision)).trustDomain : undefined;
    } catch (err) {
      throw new ReconcilerStartError(
        `cannot read the policy to learn its trust domain (${(err as Error).message}): pass --trust-domain`,
      );
    }
  }
  if (!trustDomain)
    throw new ReconcilerStartError(
      'no trust domain to create the CA with: pass --trust-domain, or commit "trustDomain: <name>" in riptides.config.yaml',
    );
  const authority = await initAuthority({ trustDomain, dir, ...(issuer ? { issuer } : {}) });
  logger.info({ trustDomain, dir, issuer: authority.jwt.issuer }, 'created the trust domain CA');
  return authority;
}
