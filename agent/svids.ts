/**
 * Workload SVIDs on the node: one per identity that has at least one attested process, none for the others.
 * For each, the agent generates a key here, sends a CSR, checks what comes back (its key, the right SPIFFE
 * ID), installs it in the control interface, and renews it at half its life ±10% (SPIRE's rotation rule).
 * When an identity's last process exits its SVID is removed; when a process returns, a new one is issued.
 * A refused or unanswered request is retried with backoff; an SVID still valid keeps being used meanwhile.
 */
import { randomBytes } from 'node:crypto';
import { type BackoffOptions, backoffDelay, rotationTime } from './backoff.ts';
import { generateKeyAndCsr } from './csr.ts';
import type { AgentMessage, Out, SvidResponse } from './protocol/messages.ts';
import { certificatesPem } from './protocol/version.ts';
import { svidFacts } from './state.ts';

export interface InstalledSvid {
  spiffeId: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** When to renew. */
  renewAt: Date;
}

export interface SvidSink {
  install(spiffeId: string, chainPem: string, keyPem: string): Promise<void>;
  remove(spiffeId: string): Promise<void>;
}

export interface SvidManagerOptions {
  send: (m: Out<AgentMessage>) => boolean;
  sink: SvidSink;
  onChange: () => void;
  onError: (spiffeId: string, reason: string) => void;
  retry?: BackoffOptions;
  /** A request not answered within this is sent again (a lost stream drops it). */
  requestTimeoutMs?: number;
}

const DEFAULT_RETRY: BackoffOptions = { initialMs: 1000, maxMs: 60_000 };

export class SvidManager {
  readonly installed = new Map<string, InstalledSvid>();
  private wanted = new Set<string>();
  private readonly pending = new Map<string, { spiffeId: string; keyPem: string; sentAt: number }>();
  private readonly failures = new Map<string, { attempts: number; retryAt: number }>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private working: Promise<void> = Promise.resolve();
  /** Called after every install and every failure (reissue waits on them). */
  private readonly settled = new Set<() => void>();

  constructor(private readonly opts: SvidManagerOptions) {}

  /** SVIDs found installed at start (after a restart): kept while valid and wanted. */
  adopt(svids: Iterable<Omit<InstalledSvid, 'renewAt'>>): void {
    for (const s of svids)
      if (s.notAfter.getTime() > Date.now())
        this.installed.set(s.spiffeId, { ...s, renewAt: rotationTime(s.notBefore, s.notAfter) });
  }

  /** The identities that have attested processes now. */
  setWanted(spiffeIds: Iterable<string>): void {
    this.wanted = new Set(spiffeIds);
    this.kick();
  }

  /** Re-evaluate now (after a reconnect, when requests can go out again). */
  kick(): void {
    if (this.stopped) return;
    this.working = this.working.then(() => this.reconcile()).catch(() => {});
  }

  private async reconcile(): Promise<void> {
    if (this.stopped) return;
    const now = Date.now();
    let changed = false;
    for (const id of [...this.installed.keys()]) {
      if (this.wanted.has(id)) continue;
      this.installed.delete(id);
      this.failures.delete(id);
      await this.opts.sink.remove(id);
      changed = true;
    }
    const timeout = this.opts.requestTimeoutMs ?? 30_000;
    for (const [rid, p] of this.pending)
      if (now - p.sentAt > timeout || !this.wanted.has(p.spiffeId)) this.pending.delete(rid);
    for (const id of this.wanted) {
      const have = this.installed.get(id);
      if (have && have.renewAt.getTime() > now) continue;
      if ([...this.pending.values()].some((p) => p.spiffeId === id)) continue;
      const f = this.failures.get(id);
      if (f && f.retryAt > now) continue;
      const { keyPem, csrDer } = await generateKeyAndCsr(id);
      const requestId = randomBytes(8).toString('hex');
      if (this.opts.send({ svidRequest: { requestId, spiffeId: id, csrDer } }))
        this.pending.set(requestId, { spiffeId: id, keyPem, sentAt: Date.now() });
    }
    if (changed) this.opts.onChange();
    this.schedule();
  }

  /** The next renewal, retry or request timeout. */
  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.stopped) return;
    const times: number[] = [];
    for (const s of this.installed.values()) times.push(s.renewAt.getTime());
    for (const f of this.failures.values()) times.push(f.retryAt);
    for (const p of this.pending.values()) times.push(p.sentAt + (this.opts.requestTimeoutMs ?? 30_000));
    if (times.length === 0) return;
    const delay = Math.min(Math.max(50, Math.min(...times) - Date.now()), 2 ** 31 - 1);
    this.timer = setTimeout(() => this.kick(), delay);
    this.timer.unref();
  }

  /**
   * Issues new SVIDs now for identities whose files were edited by hand (a key that others may have read or
   * replaced is not trusted again): each gets a new key and CSR, as at rotation. Resolves with the identities
   * that got a new SVID once each is installed or refused, or after `timeoutMs`; identities without an
   * attested process are skipped (their SVID is removed anyway).
   */
  reissue(spiffeIds: Iterable<string>, timeoutMs = 10_000): Promise<string[]> {
    const targets = [...new Set(spiffeIds)].filter((id) => this.wanted.has(id));
    if (targets.length === 0 || this.stopped) return Promise.resolve([]);
    const before = new Map(targets.map((id) => [id, this.installed.get(id)?.serial]));
    for (const id of targets) {
      const s = this.installed.get(id);
      if (s) s.renewAt = new Date(0);
      this.failures.delete(id);
    }
    const renewed = () => targets.filter((id) => this.installed.get(id)?.serial !== before.get(id));
    // Settled: a new SVID is installed, or the request failed (a failure is recorded afresh).
    const done = () =>
      targets.every((id) => this.installed.get(id)?.serial !== before.get(id) || this.failures.has(id));
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        this.settled.delete(check);
        resolve(renewed());
      };
      const check = () => {
        if (done()) finish();
      };
      const timer = setTimeout(finish, timeoutMs);
      timer.unref();
      this.settled.add(check);
      this.kick();
    });
  }

  private notifySettled(): void {
    for (const f of [...this.settled]) f();
  }

  /** An SvidResponse for one of our requests; anything else is ignored. */
  onResponse(r: SvidResponse): void {
    const p = this.pending.get(r.requestId);
    if (!p) return;
    this.pending.delete(r.requestId);
    this.working = this.working.then(async () => {
      try {
        const chainPem = certificatesPem(r.certChainDer);
        const facts = svidFacts(chainPem);
        if (facts.uris.length !== 1 || facts.uris[0] !== p.spiffeId)
          throw new Error(`the SVID names ${facts.uris.join(', ') || 'nothing'}, not ${p.spiffeId}`);
        if (!this.wanted.has(p.spiffeId)) return;
        await this.opts.sink.install(p.spiffeId, chainPem, p.keyPem);
        this.installed.set(p.spiffeId, {
          spiffeId: p.spiffeId,
          serial: facts.serial,
          notBefore: facts.notBefore,
          notAfter: facts.notAfter,
          // From when it arrived: notBefore is backdated, which for a short lifetime would renew at once.
          renewAt: rotationTime(new Date(Math.max(facts.notBefore.getTime(), Date.now())), facts.notAfter),
        });
        this.failures.delete(p.spiffeId);
        this.opts.onChange();
      } catch (err) {
        this.failed(p.spiffeId, (err as Error).message);
      }
      this.notifySettled();
      this.schedule();
    });
  }

  /** A refusal of one of our requests: retried with backoff. */
  onRefused(requestId: string, reason: string): void {
    const p = this.pending.get(requestId);
    if (!p) return;
    this.pending.delete(requestId);
    this.failed(p.spiffeId, reason);
    this.notifySettled();
    this.schedule();
  }

  private failed(spiffeId: string, reason: string): void {
    const attempts = (this.failures.get(spiffeId)?.attempts ?? 0) + 1;
    this.failures.set(spiffeId, {
      attempts,
      retryAt: Date.now() + backoffDelay(attempts, this.opts.retry ?? DEFAULT_RETRY),
    });
    this.opts.onError(spiffeId, reason);
  }

  /** Drops requests in flight (the stream they went out on is gone). */
  disconnected(): void {
    this.pending.clear();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}
