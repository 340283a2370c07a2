/**
 * The credential manager: one state machine per (source, workload).
 *
 *   pending ──ok──► available ──refresh fails──► expiring ──expiry passes──► expired
 *      │               ▲                            │                          │
 *      └─fails─► error ┴──────────── ok ◄───────────┴──────────────────────────┘
 *
 * It schedules refreshes as the provider plans them, keeps the last good value until it expires, backs off
 * with jitter on errors, and reports status for `ctl get`. Values stay in memory: no log line, status field or
 * error message carries one (messages are also scrubbed of the values held, in case a server echoed one).
 */
import { EventEmitter } from 'node:events';
import { Redactor } from '../common/redact.ts';
import { backoffDelay, DEFAULT_BACKOFF } from '../common/retry.ts';
import type { JwtMinter } from '../identity/jwt-svid.ts';
import { ephemeralFingerprintKey, type FingerprintKey } from './fingerprint.ts';
import { type ProviderConfig, Providers } from './providers.ts';
import { type LeaseLedger, NO_LEDGER, type Obtained, type ProviderContext, type Session } from './session.ts';
import {
  type BindingPhase,
  type BindingStatus,
  type Credential,
  CredentialError,
  type CredentialLogger,
  type CredentialSourceSpec,
  type CredentialStatus,
  type CredentialValue,
  credentialValueOf,
  fingerprintOf,
  headerUnsafe,
  makeCredential,
  type SourceStatus,
} from './types.ts';
import { describeTransportError } from './util.ts';

export interface CredentialManagerOptions extends ProviderConfig {
  minter: JwtMinter;
  trustDomain: string;
  /** Bound on every network call; default 10 s. */
  timeoutMs?: number;
  /** Retry backoff after errors; default 1 s doubling to 5 min (Argo CD and SPIRE use the same shape). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Epoch ms; tests move it. Timers still run on real time. */
  now?: () => number;
  random?: () => number;
  logger?: CredentialLogger;
  /**
   * The key of live fingerprints (fingerprint.ts resolveFingerprintKey: the environment's, or the state
   * directory's); default: one for this process alone.
   */
  fingerprintKey?: FingerprintKey;
  /** Records lease metadata (Vault) so that a later run can revoke what this one could not; default none. */
  leases?: LeaseLedger;
}

const SILENT: CredentialLogger = { info() {}, warn() {} };

function contextOf(opts: CredentialManagerOptions): ProviderContext {
  return {
    minter: opts.minter,
    trustDomain: opts.trustDomain,
    timeoutMs: opts.timeoutMs ?? 10_000,
    now: opts.now ?? Date.now,
    random: opts.random ?? Math.random,
    logger: opts.logger ?? SILENT,
    backoff: {
      initialMs: opts.backoff?.initialMs ?? DEFAULT_BACKOFF.initialMs,
      maxMs: opts.backoff?.maxMs ?? DEFAULT_BACKOFF.maxMs,
    },
    fingerprintKey: opts.fingerprintKey ?? ephemeralFingerprintKey(),
    leases: opts.leases ?? NO_LEDGER,
  };
}

/** Replaces any held value that appears in a message (a server may echo what it was sent). */
function scrub(message: string, values: Array<CredentialValue | undefined>): string {
  const redactor = new Redactor();
  for (const v of values) {
    if (!v) continue;
    if (v.kind === 'bearer') redactor.add(v.token);
    else redactor.add(v.aws.secretAccessKey).add(v.aws.sessionToken).add(v.aws.accessKeyId);
  }
  return redactor.redact(message);
}

/** The longest delay setTimeout holds (2^31 − 1 ms, about 24.8 days); a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

type UpdateListener = (sourceName: string, workloadID: string, credential: Credential | undefined) => void;

class Binding {
  phase: BindingPhase = 'pending';
  current: Credential | undefined;
  lastError: string | undefined;
  failures = 0;
  closed = false;
  private refreshTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private unsubscribe: (() => void) | undefined;
  private version = 0;

  constructor(
    readonly spec: CredentialSourceSpec,
    readonly specKey: string,
    readonly workloadID: string,
    private readonly session: Session | CredentialError,
    private readonly ctx: ProviderContext,
    private readonly emit: UpdateListener,
    /** Called whenever what status() returns may have changed (see CredentialManager.changes). */
    private readonly touched: () => void,
  ) {}

  start(): void {
    const s = this.session;
    if (s instanceof CredentialError) {
      this.fail(s);
      return;
    }
    if (s.kind === 'watched')
      this.unsubscribe = s.subscribe((u) => (u instanceof CredentialError ? this.fail(u) : this.succeed(u)));
    else this.run();
  }

  /** Valid now, or undefined. */
  valid(): Credential | undefined {
    const c = this.current;
    if (!c) return undefined;
    if (c.expiresAt && c.expiresAt.getTime() <= this.ctx.now()) return undefined;
    return c;
  }

  private run(): void {
    const s = this.session;
    if (this.closed || this.inFlight || s instanceof CredentialError || s.kind !== 'polled') return;
    const op = this.valid() ? s.refresh() : s.obtain();
    this.inFlight = op
      .then(
        (r) => this.succeed(r),
        (err: unknown) =>
          this.fail(err instanceof CredentialError ? err : new CredentialError(describeTransportError(err))),
      )
      .finally(() => {
        this.inFlight = undefined;
      });
  }

  private log(): Record<string, unknown> {
    return { source: this.spec.name, workload: this.workloadID };
  }

  private succeed(r: Obtained): void {
    if (this.closed) return;
    const unsafe = headerUnsafe(r.value, this.spec.name);
    if (unsafe) {
      // Not withdrawn: a value served before stays in force until it expires, as after any failed refresh.
      this.fail(unsafe);
      return;
    }
    const recovered = this.lastError !== undefined;
    this.failures = 0;
    this.lastError = undefined;
    this.phase = 'available';
    const fp = fingerprintOf(this.ctx.fingerprintKey, r.value);
    const expiresAt =
      r.expiresAt !== undefined && Number.isFinite(r.expiresAt) ? new Date(r.expiresAt) : undefined;
    const changed = !this.current || this.current.fingerprint !== fp;
    if (changed) this.version++;
    this.current = makeCredential(r.value, {
      version: this.version,
      obtainedAt: changed || !this.current ? new Date(this.ctx.now()) : this.current.obtainedAt,
      fingerprint: fp,
      ...(expiresAt ? { expiresAt } : {}),
    });
    if (changed || recovered)
      this.ctx.logger.info(changed ? 'credential obtained' : 'credential source recovered', {
        ...this.log(),
        version: this.version,
        fingerprint: fp,
        expiresAt: expiresAt?.toISOString(),
      });
    this.schedule(r.refreshAt);
    this.armExpiry();
    this.touched();
    if (changed) this.emit(this.spec.name, this.workloadID, this.current);
  }

  private fail(err: CredentialError): void {
    if (this.closed) return;
    const message = scrub(err.message, [this.current ? credentialValueOf(this.current) : undefined]);
    // Warn when a pair starts failing or fails differently; a retry failing as before is a debug line (a
    // fleet of pairs behind one unreachable Vault would otherwise warn thousands of times per backoff round).
    const repeated = this.failures > 0 && message === this.lastError;
    const phaseBefore = this.phase;
    this.failures++;
    this.lastError = message;
    const withdrawn = err.opts.withdraw === true && this.current !== undefined;
    if (withdrawn) {
      this.current = undefined;
      this.clearExpiry();
      this.emit(this.spec.name, this.workloadID, undefined);
    }
    const held = this.valid();
    this.phase = held ? 'expiring' : this.phase === 'expired' ? 'expired' : 'error';
    if (!repeated || withdrawn || this.phase !== phaseBefore) this.touched();
    const logger = this.ctx.logger;
    (repeated ? (logger.debug ?? (() => {})) : logger.warn).call(logger, 'credential fetch failed', {
      ...this.log(),
      attempt: this.failures,
      error: message,
      servingUntil: held ? (held.expiresAt?.toISOString() ?? 'replaced') : undefined,
    });
    const s = this.session;
    if (s instanceof CredentialError || s.kind !== 'polled') return; // watched sources retry inside their store
    let delay = backoffDelay(this.failures, this.ctx.backoff, this.ctx.random);
    // Keep trying often enough to replace the value before it runs out.
    const left = held?.expiresAt ? held.expiresAt.getTime() - this.ctx.now() : Number.POSITIVE_INFINITY;
    delay = Math.min(delay, Math.max(this.ctx.backoff.initialMs, left / 2));
    this.schedule(this.ctx.now() + delay);
  }

  /**
   * Arms the next refresh for `at` (epoch ms). The wait is held between the retry policy's first step (a
   * provider whose answer says "now", such as a lease of 0 or fewer seconds or an expiry already past, must
   * not make a loop of logins) and what setTimeout can hold: a longer delay would fire at once, so a far
   * refresh (a Vault KV secret's 768-hour TTL) re-arms when the timer ends early, and one at +Infinity never
   * comes. A time that is not a number counts as "now".
   */
  private schedule(at: number | undefined): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (at === undefined || this.closed) return;
    const wait = at - this.ctx.now();
    const delay = Number.isNaN(wait)
      ? this.ctx.backoff.initialMs
      : Math.max(this.ctx.backoff.initialMs, wait);
    this.refreshTimer = setTimeout(
      () => (delay > MAX_TIMER_MS ? this.schedule(at) : this.run()),
      Math.min(delay, MAX_TIMER_MS),
    );
    this.refreshTimer.unref();
  }

  private clearExpiry(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
  }

  private armExpiry(): void {
    this.clearExpiry();
    const exp = this.current?.expiresAt?.getTime();
    if (exp === undefined) return;
    // Far expiries re-arm when the timer ends (see MAX_TIMER_MS).
    const delay = Math.min(Math.max(0, exp - this.ctx.now()), MAX_TIMER_MS);
    this.expiryTimer = setTimeout(() => {
      if (this.closed || !this.current) return;
      if (this.valid()) {
        this.armExpiry();
        return;
      }
      this.current = undefined;
      this.phase = 'expired';
      this.touched();
      this.ctx.logger.warn('credential expired before it could be replaced', {
        ...this.log(),
        error: this.lastError,
      });
      this.emit(this.spec.name, this.workloadID, undefined);
      this.run();
    }, delay);
    this.expiryTimer.unref();
  }

  status(): BindingStatus {
    const held = this.valid();
    const state = held ? 'OK' : this.phase === 'pending' ? 'PENDING' : 'FAILED';
    let message = this.lastError;
    if (held && this.lastError)
      message = `refresh failing, serving the last good credential${held.expiresAt ? ` until ${held.expiresAt.toISOString()}` : ''}: ${this.lastError}`;
    if (!held && this.phase === 'expired')
      message = `credential expired; last error: ${this.lastError ?? 'none'}`;
    return {
      source: this.spec.name,
      workloadID: this.workloadID,
      state,
      phase: held || this.phase !== 'available' ? this.phase : 'expired',
      ...(message ? { message } : {}),
      ...(held
        ? {
            fingerprint: held.fingerprint,
            version: held.version,
            ...(held.expiresAt ? { expiresAt: held.expiresAt.toISOString() } : {}),
          }
        : {}),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.schedule(undefined);
    this.clearExpiry();
    this.unsubscribe?.();
    // Let a fetch in flight land so that a lease it obtained is revoked too.
    await this.inFlight;
    this.current = undefined;
    if (!(this.session instanceof CredentialError)) await this.session.release();
  }
}

const keyOf = (sourceName: string, workloadID: string) => `${sourceName}\u0000${workloadID}`;

export class CredentialManager {
  private readonly ctx: ProviderContext;
  private readonly providers: Providers;
  private readonly bindings = new Map<string, Binding>();
  private readonly events = new EventEmitter();
  /** Moves whenever status() may answer differently (see status()). */
  #changes = 0;
  /** The last status() and until when it holds (the earliest expiry of a value it shows as held, epoch ms). */
  #status: { changes: number; until: number; value: CredentialStatus } | undefined;

  constructor(opts: CredentialManagerOptions) {
    this.ctx = contextOf(opts);
    this.providers = new Providers(opts, this.ctx);
  }

  /** Starts keeping (source, workload) fresh; a changed spec for a tracked pair replaces its session. */
  ensure(source: CredentialSourceSpec, workloadID: string): void {
    const key = keyOf(source.name, workloadID);
    const specKey = JSON.stringify(source);
    const existing = this.bindings.get(key);
    if (existing?.specKey === specKey) return;
    if (existing) void existing.close();
    const binding = new Binding(
      source,
      specKey,
      workloadID,
      this.providers.open(source, workloadID),
      this.ctx,
      (s, w, c) => this.events.emit('update', s, w, c),
      () => this.#changes++,
    );
    this.#changes++;
    this.bindings.set(key, binding);
    binding.start();
  }

  /** Stops tracking and revokes what the pair held (Vault leases). */
  async release(sourceName: string, workloadID: string): Promise<void> {
    const key = keyOf(sourceName, workloadID);
    const b = this.bindings.get(key);
    if (!b) return;
    this.bindings.delete(key);
    this.#changes++;
    await b.close();
  }

  /** The last good credential, never past its expiry. */
  get(sourceName: string, workloadID: string): Credential | undefined {
    return this.bindings.get(keyOf(sourceName, workloadID))?.valid();
  }

  /**
   * Whether a kept pair has had its first answer (a value or a failure): false while its first fetch is
   * pending, undefined when the pair is not kept. O(1) and allocation-free: asked once per credential
   * reference per agent on every push.
   */
  pairSettled(sourceName: string, workloadID: string): boolean | undefined {
    const b = this.bindings.get(keyOf(sourceName, workloadID));
    return b ? b.phase !== 'pending' : undefined;
  }

  /**
   * Every pair's state and every source's, sorted by name. The same object until something it shows may have
   * changed (a pair kept or released, a value obtained, a failure that changes a pair's message or phase, an
   * expiry) or a value it shows runs out: a fleet of pairs retrying as before answers with it, so the status
   * refresh (several times a second) can tell by identity that there is nothing new.
   */
  status(): CredentialStatus {
    const cached = this.#status;
    if (cached?.changes === this.#changes && this.ctx.now() < cached.until) return cached.value;
    const changes = this.#changes;
    const value = this.#computeStatus();
    let until = Number.POSITIVE_INFINITY;
    for (const b of value.bindings) if (b.expiresAt) until = Math.min(until, Date.parse(b.expiresAt));
    this.#status = { changes, until, value };
    return value;
  }

  #computeStatus(): CredentialStatus {
    const bindings = [...this.bindings.values()].map((b) => b.status());
    const bySource = new Map<string, BindingStatus[]>();
    for (const b of bindings) {
      const list = bySource.get(b.source);
      if (list) list.push(b);
      else bySource.set(b.source, [b]);
    }
    const sources: SourceStatus[] = [];
    for (const [name, list] of bySource) {
      const failing = list.filter((b) => b.message !== undefined && b.phase !== 'available');
      if (failing.length) {
        const first = failing[0]!;
        const same = failing.every((f) => f.message === first.message);
        const detail = first.message!;
        sources.push({
          name,
          state: 'ERROR',
          message:
            same && failing.length === list.length
              ? detail
              : `${failing.length} of ${list.length} workloads failing; ${first.workloadID}: ${detail}`,
        });
      } else if (list.every((b) => b.state === 'PENDING')) sources.push({ name, state: 'PENDING' });
      else sources.push({ name, state: 'AVAILABLE' });
    }
    sources.sort((a, b) => a.name.localeCompare(b.name));
    bindings.sort((a, b) => a.source.localeCompare(b.source) || a.workloadID.localeCompare(b.workloadID));
    return { sources, bindings };
  }

  on(event: 'update', listener: UpdateListener): this {
    this.events.on(event, listener);
    return this;
  }

  off(event: 'update', listener: UpdateListener): this {
    this.events.off(event, listener);
    return this;
  }

  /** Releases every pair (revoking leases) and stops watches. */
  async close(): Promise<void> {
    const all = [...this.bindings.values()];
    this.bindings.clear();
    this.#changes++;
    await Promise.all(all.map((b) => b.close()));
    await this.providers.close();
  }
}

export interface FetchOnceResult {
  source: string;
  workload: string;
  state: 'AVAILABLE' | 'ERROR';
  message?: string;
  /** `hmac-sha256:<16 hex>` under the key in force (fingerprint.ts). */
  fingerprint?: string;
  /** Where that key came from: fingerprints compare with the reconciler's only under its key. */
  fingerprintKey?: FingerprintKey['origin'];
  /** ISO 8601. */
  expiresAt?: string;
}

/**
 * Obtains the credential once through the same provider code as the manager, then gives back what it got
 * (a Vault lease is revoked: a check must not leave secrets behind). For `riptides-cli credentials check`.
 */
export async function fetchOnce(
  source: CredentialSourceSpec,
  workloadID: string,
  opts: CredentialManagerOptions,
): Promise<FetchOnceResult> {
  const ctx = contextOf(opts);
  const providers = new Providers(opts, ctx);
  const base = { source: source.name, workload: workloadID };
  try {
    const session = providers.open(source, workloadID);
    if (session instanceof CredentialError) return { ...base, state: 'ERROR', message: session.message };
    try {
      const r = await session.obtain();
      const unsafe = headerUnsafe(r.value, source.name);
      if (unsafe) return { ...base, state: 'ERROR', message: unsafe.message };
      return {
        ...base,
        state: 'AVAILABLE',
        fingerprint: fingerprintOf(ctx.fingerprintKey, r.value),
        fingerprintKey: ctx.fingerprintKey.origin,
        ...(r.expiresAt !== undefined && Number.isFinite(r.expiresAt)
          ? { expiresAt: new Date(r.expiresAt).toISOString() }
          : {}),
      };
    } catch (err) {
      return {
        ...base,
        state: 'ERROR',
        message: err instanceof CredentialError ? err.message : describeTransportError(err),
      };
    } finally {
      await session.release();
    }
  } finally {
    await providers.close();
  }
}
