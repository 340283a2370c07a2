/**
 * The Attestor keeps the mapping process → identity current as processes come and go and as the program's
 * identities change. It learns about processes from
 *  - proc events (the kernel's proc connector: fork, exec, uid/gid/comm changes, exit) where the host gives
 *    them (proc-events.ts): a changed process is re-read within one drain interval;
 *  - a rescan of /proc every `rescanIntervalMs`: the whole truth where there are no events, a safety net where
 *    there are (events can be dropped). A rescan reads each process's `stat` (~12 µs) and re-reads the rest
 *    only for new processes, processes whose exec signature changed, and a rolling fifth of the others (a uid
 *    change without exec, an argv rewrite);
 *  - `resolve(pid)`: on demand, for a connection from a process the Attestor has not seen yet.
 *
 * A process is named by pid AND start time: a pid reused by a new process is a new process, it never inherits
 * the identity of the one before. A process that matches two identities on overlapping ports is a conflict
 * and gets neither; a process inside a pod whose pod is not (yet) known gets none until it is (fail closed).
 */
import { EventEmitter } from 'node:events';
import type { ProcessRecord } from '../../kernel-module/control/abi.ts';
import { type CgroupFacts, parseCgroup } from './cgroup.ts';
import { type KubeOptions, KubernetesPodSource, type PodSource } from './kubernetes.ts';
import { type Labels, type PodLabels, processLabels, withPod } from './labels.ts';
import {
  type IdentitySelectors,
  type Resolution,
  resolveMatches,
  SelectorIndex,
  UNMATCHED,
} from './match.ts';
import { isKernelThread, listPids, type ProcStat, readProcess, readStat } from './proc.ts';
import { openProcEvents, type ProcEventSource } from './proc-events.ts';

export interface ProcessAttestation extends Resolution {
  pid: number;
  startTime: number;
  /** Why a process in a pod has no identity yet (its pod is not known to the Kubernetes API yet). */
  pending?: string;
}

export interface AttestationSnapshot {
  /** Grows by one with every change of the mapping. */
  generation: number;
  /**
   * Processes that match at least one identity (with an identity, per-port routes, or a conflict), and
   * processes in pods waiting for their pod to be known (`pending`, no identity meanwhile).
   */
  processes: ReadonlyMap<number, ProcessAttestation>;
  /** SPIFFE ID → pids holding it (directly or through a route); conflicted processes hold none. */
  byIdentity: ReadonlyMap<string, number[]>;
}

export interface AttestorEvents {
  change: [AttestationSnapshot];
  /** A process newly in conflict: two or more identities claim it. */
  conflict: [ProcessAttestation];
  /** A problem worth a log line (Kubernetes unreachable, /proc truncated); attestation goes on. */
  warning: [string];
}

export interface AttestorOptions {
  /** Default /proc. */
  procRoot?: string;
  /** Full rescan interval. Default 2 s without proc events, 30 s with them. */
  rescanIntervalMs?: number;
  /** Proc events: 'auto' (the proc connector when the host allows it), 'off'. Default 'auto'. */
  events?: 'auto' | 'off';
  /** How often queued proc events are drained. Default 50 ms. */
  eventDrainMs?: number;
  /**
   * Kubernetes access for processes in pods: options for the API client (`--kubeconfig`, node name), or null
   * for none. Default: the environment's (KUBECONFIG or the in-cluster service account), none when neither.
   */
  kube?: KubeOptions | null;
  /** A pod source of the caller's instead (started and stopped with the Attestor); wins over `kube`. */
  pods?: PodSource | null;
  /** At most this many processes are tracked; more are reported once and ignored. Default 200,000. */
  maxProcesses?: number;
}

interface Tracked {
  pid: number;
  startTime: number;
  execSignature: string;
  /** What /proc says; `labels` adds the pod's. */
  base: Labels;
  labels: Labels;
  cgroup: CgroupFacts;
  pending: string | null;
  resolution: Resolution;
  /** JSON of the resolution and pending reason: what a change is detected on. */
  key: string;
}

/** Processes read per slice of a rescan before the event loop gets a turn. */
const SLICE = 256;
/** A rescan re-reads a known process whose stat did not change once in this many rescans. */
const REFRESH_EVERY = 5;

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

function keyOf(r: Resolution, pending: string | null): string {
  return JSON.stringify([r.spiffeId, r.destinationPorts, r.conflict, r.routes ?? null, pending]);
}

/** In the snapshot: holds an identity, routes or a conflict, or waits for its pod. */
function isVisible(t: { resolution: Resolution; pending: string | null }): boolean {
  return (
    t.resolution.spiffeId !== null ||
    t.resolution.conflict !== null ||
    t.resolution.routes !== undefined ||
    t.pending !== null
  );
}

export class Attestor extends EventEmitter<AttestorEvents> {
  readonly #procRoot: string;
  readonly #opts: AttestorOptions;
  readonly #pods: PodSource | null;
  readonly #tracked = new Map<number, Tracked>();
  #index = new SelectorIndex([]);
  #generation = 0;
  #snapshot: AttestationSnapshot | null = null;
  #scanNo = 0;
  #scanning: Promise<void> | null = null;
  #scanAgain = false;
  #rescanTimer: NodeJS.Timeout | undefined;
  #drainTimer: NodeJS.Timeout | undefined;
  #events: ProcEventSource | null = null;
  #running = false;
  #warnedTruncated = false;
  #onPods = () => this.#podsChanged();
  #onPodsWarning = (message: string) => this.emit('warning', message);
  #podsTimer: NodeJS.Timeout | undefined;

  constructor(opts: AttestorOptions = {}) {
    super();
    this.#procRoot = opts.procRoot ?? '/proc';
    this.#opts = opts;
    this.#pods =
      opts.pods !== undefined
        ? opts.pods
        : opts.kube === null
          ? null
          : KubernetesPodSource.fromEnvironment(opts.kube ?? {});
  }

  /** Where pods come from (null: no Kubernetes). */
  get podSource(): PodSource | null {
    return this.#pods;
  }

  /** Where process changes come from: the proc connector, or rescans alone. */
  get eventSource(): 'proc-connector' | 'rescan' {
    return this.#events ? 'proc-connector' : 'rescan';
  }

  /** The program's identities. Every tracked process is matched again; a change of the mapping emits `change`. */
  setIdentities(identities: readonly IdentitySelectors[]): void {
    this.#index = new SelectorIndex(identities);
    const changed: Tracked[] = [];
    for (const t of this.#tracked.values()) if (this.#rematch(t)) changed.push(t);
    this.#publish(changed);
  }

  /** First scan, then keeps the mapping current. Resolves when the first scan is done. */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    if (this.#pods) {
      this.#pods.on('change', this.#onPods);
      this.#pods.on('warning', this.#onPodsWarning);
      await this.#pods.start();
    }
    if ((this.#opts.events ?? 'auto') === 'auto') {
      const opened = openProcEvents();
      if (opened.ok) this.#events = opened.source;
      else
        this.emit(
          'warning',
          `proc events unavailable (${opened.reason}); rescanning every ${this.#rescanMs()} ms`,
        );
    }
    await this.rescan();
    this.#rescanTimer = setInterval(() => void this.rescan(), this.#rescanMs());
    if (this.#events) this.#drainTimer = setInterval(() => this.#drain(), this.#opts.eventDrainMs ?? 50);
  }

  async stop(): Promise<void> {
    this.#running = false;
    clearInterval(this.#rescanTimer);
    clearInterval(this.#drainTimer);
    clearTimeout(this.#podsTimer);
    this.#events?.close();
    this.#events = null;
    if (this.#pods) {
      this.#pods.off('change', this.#onPods);
      this.#pods.off('warning', this.#onPodsWarning);
      await this.#pods.stop();
    }
    await this.#scanning?.catch(() => {});
  }

  #rescanMs(): number {
    return this.#opts.rescanIntervalMs ?? (this.#events ? 30_000 : 2_000);
  }

  /** The current mapping (the same object until it changes). */
  snapshot(): AttestationSnapshot {
    if (this.#snapshot) return this.#snapshot;
    const processes = new Map<number, ProcessAttestation>();
    const byIdentity = new Map<string, number[]>();
    const add = (id: string, pid: number) => {
      const list = byIdentity.get(id) ?? [];
      list.push(pid);
      byIdentity.set(id, list);
    };
    for (const t of this.#tracked.values()) {
      if (!isVisible(t)) continue;
      processes.set(t.pid, this.#attestation(t));
      if (t.resolution.spiffeId) add(t.resolution.spiffeId, t.pid);
      for (const r of t.resolution.routes ?? []) add(r.spiffeId, t.pid);
    }
    for (const list of byIdentity.values()) list.sort((a, b) => a - b);
    this.#snapshot = { generation: this.#generation, processes, byIdentity };
    return this.#snapshot;
  }

  /** The matched processes as the control interface's `processes` table wants them, by pid. */
  processRecords(): ProcessRecord[] {
    return [...this.snapshot().processes.values()]
      .filter((p) => p.spiffeId !== null || p.conflict !== null || p.routes !== undefined)
      .sort((a, b) => a.pid - b.pid)
      .map((p) => ({
        pid: p.pid,
        startTime: p.startTime,
        spiffeId: p.spiffeId,
        conflict: p.conflict,
        destinationPorts: p.destinationPorts,
        ...(p.routes ? { routes: p.routes } : {}),
      }));
  }

  /** The labels last collected for a process (for `augment` on a running agent). */
  labels(pid: number): Labels | undefined {
    return this.#tracked.get(pid)?.labels;
  }

  /**
   * The attestation of a process now: from what is known when its start time still matches, else read and
   * matched on the spot (a connection from a process born after the last event drain). Null when it is gone.
   */
  async resolve(pid: number): Promise<ProcessAttestation | null> {
    const stat = readStat(this.#procRoot, pid);
    if (!stat) return null;
    const known = this.#tracked.get(pid);
    if (known && known.startTime === stat.startTime && known.execSignature === stat.execSignature)
      return this.#attestation(known);
    const read = this.#read(pid, stat);
    if (read.changed) this.#publish([read.changed]);
    const now = this.#tracked.get(pid);
    return read.alive && now ? this.#attestation(now) : null;
  }

  /** One full pass over /proc now (also what the timer runs). Concurrent calls coalesce. */
  rescan(): Promise<void> {
    if (this.#scanning) {
      this.#scanAgain = true;
      return this.#scanning;
    }
    this.#scanning = (async () => {
      try {
        do {
          this.#scanAgain = false;
          await this.#scanOnce();
        } while (this.#scanAgain);
      } finally {
        this.#scanning = null;
      }
    })();
    return this.#scanning;
  }

  async #scanOnce(): Promise<void> {
    const scanNo = ++this.#scanNo;
    const { pids, truncated } = listPids(this.#procRoot, this.#opts.maxProcesses ?? 200_000);
    if (truncated && !this.#warnedTruncated) {
      this.#warnedTruncated = true;
      this.emit('warning', `more than ${pids.length} processes: the rest are not attested`);
    }
    const seen = new Set<number>();
    const changed: Tracked[] = [];
    for (let i = 0; i < pids.length; i++) {
      if (i > 0 && i % SLICE === 0) await yieldToLoop();
      const pid = pids[i]!;
      const stat = readStat(this.#procRoot, pid);
      if (!stat || isKernelThread(stat)) continue;
      seen.add(pid);
      const known = this.#tracked.get(pid);
      const stale =
        !known ||
        known.startTime !== stat.startTime ||
        known.execSignature !== stat.execSignature ||
        (pid + scanNo) % REFRESH_EVERY === 0;
      if (!stale) continue;
      const read = this.#read(pid, stat);
      if (read.changed) changed.push(read.changed);
      if (!read.alive) seen.delete(pid);
    }
    for (const pid of [...this.#tracked.keys()]) {
      if (seen.has(pid)) continue;
      const gone = this.#tracked.get(pid)!;
      this.#tracked.delete(pid);
      if (isVisible(gone)) changed.push({ ...gone, resolution: UNMATCHED, pending: null, key: '' });
    }
    this.#publish(changed);
  }

  /**
   * Reads a process and updates what is tracked; returns the entry when its resolution changed (or it is
   * new), null when it is gone. A zombie or a process that exited while being read is removed.
   */
  #read(pid: number, stat: ProcStat): { alive: boolean; changed: Tracked | null } {
    const raw = readProcess(this.#procRoot, pid, stat);
    const known = this.#tracked.get(pid);
    if (!raw) {
      if (known) this.#tracked.delete(pid);
      const gone =
        known && isVisible(known) ? { ...known, resolution: UNMATCHED, pending: null, key: '' } : null;
      return { alive: false, changed: gone };
    }
    const cgroup = parseCgroup(raw.cgroup);
    const t: Tracked = {
      pid,
      startTime: raw.startTime,
      execSignature: raw.execSignature,
      base: processLabels(raw, cgroup),
      labels: {},
      cgroup,
      pending: null,
      resolution: UNMATCHED,
      key: '',
    };
    this.#label(t);
    this.#rematch(t);
    this.#tracked.set(pid, t);
    // Visible when the process holds something now or held something before (a reused pid's predecessor
    // included: its identity ends here, whatever the new process gets).
    const before = known && isVisible(known) ? known : null;
    const unchanged =
      (!isVisible(t) && !before) ||
      (before !== null && before.startTime === t.startTime && before.key === t.key);
    return { alive: true, changed: unchanged ? null : t };
  }

  #label(t: Tracked): void {
    let pod: PodLabels | null = null;
    t.pending = null;
    if (t.cgroup.pod && this.#pods) {
      const found = this.#pods.lookup(t.cgroup.pod.uid, t.cgroup.pod.containerId);
      if (found.state === 'found') pod = found.pod;
      else t.pending = found.reason;
    }
    t.labels = withPod(t.base, pod);
  }

  /** Matches a tracked process again; true when its resolution changed. */
  #rematch(t: Tracked): boolean {
    const before = t.key;
    t.resolution = t.pending ? UNMATCHED : resolveMatches(this.#index.match(t.labels));
    t.key = keyOf(t.resolution, t.pending);
    return before !== t.key;
  }

  #podsChanged(): void {
    // Pod events come in bursts (a relist is one event per pod): settle, then relabel the processes in pods.
    clearTimeout(this.#podsTimer);
    this.#podsTimer = setTimeout(() => {
      const changed: Tracked[] = [];
      for (const t of this.#tracked.values()) {
        if (!t.cgroup.pod) continue;
        this.#label(t);
        if (this.#rematch(t)) changed.push(t);
      }
      this.#publish(changed);
    }, 20);
  }

  #drain(): void {
    const events = this.#events;
    if (!events) return;
    const batch = events.drain();
    if (batch.overflow) {
      void this.rescan();
      return;
    }
    const changed: Tracked[] = [];
    for (const pid of batch.exited) {
      const gone = this.#tracked.get(pid);
      if (!gone) continue;
      this.#tracked.delete(pid);
      if (isVisible(gone)) changed.push({ ...gone, resolution: UNMATCHED, pending: null, key: '' });
    }
    // A pid in both sets exited and was reused within one drain: read what lives there now.
    for (const pid of batch.changed) {
      const stat = readStat(this.#procRoot, pid);
      if (!stat || isKernelThread(stat)) continue;
      const read = this.#read(pid, stat);
      if (read.changed) changed.push(read.changed);
    }
    this.#publish(changed);
  }

  #attestation(t: Tracked): ProcessAttestation {
    return {
      pid: t.pid,
      startTime: t.startTime,
      ...t.resolution,
      ...(t.pending ? { pending: t.pending } : {}),
    };
  }

  #publish(changed: readonly Tracked[]): void {
    if (changed.length === 0) return;
    this.#generation++;
    this.#snapshot = null;
    for (const t of changed)
      if (t.resolution.conflict && this.#tracked.get(t.pid) === t)
        this.emit('conflict', this.#attestation(t));
    this.emit('change', this.snapshot());
  }
}
