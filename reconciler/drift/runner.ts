/**
 * One drift report, start to end: compute (compute.ts) → heal when asked → write to the reports directory
 * (history.ts) and the store's drift history → metrics → optional webhook (notify.ts). The running reconciler
 * makes one per `--drift-schedule` tick (`runner.schedule(...)`, the hook its runtime registers) and one per
 * `POST /api/v1/drift` (`riptides-cli drift`).
 *
 * Report-only by default. A heal (`heal: true`) sends, to each reachable drifted node: the whole desired
 * program again when its program or an identity differs (a NACK is forgotten, so a fixed agent can take it),
 * the values of credentials it lacks or holds at an older version, and a ControlRepair when its control
 * interface was edited by hand or its kernel side enforces another version. It then waits (bounded, default
 * 15 s) for those nodes to report again and computes the drift once more; the report carries both, so a
 * scheduled `--heal` run says what it found and what it fixed. Stale and unreachable items are reported, never
 * "healed": renewals are the agent's, and an unreachable node cannot be reached.
 */
import { randomBytes } from 'node:crypto';
import type { StateStore } from '../store/state-store.ts';
import {
  computeDrift,
  DEFAULT_THRESHOLDS,
  type DriftSource,
  type DriftThresholds,
  type LiveAgent,
} from './compute.ts';
import { DEFAULT_KEEP_REPORTS, type ReportsDir, recordDrift } from './history.ts';
import { type NotifyResult, postReport } from './notify.ts';
import {
  buildDriftReport,
  type DriftKind,
  type DriftReport,
  type HealSummary,
  type NodeDrift,
  orderNodes,
  summarise,
} from './report.ts';
import { type DriftSchedule, scheduleDrift } from './schedule.ts';

/** The agent server as a heal needs it (reconciler/agents AgentServer.heal). */
export interface HealTarget extends DriftSource {
  heal(
    daemonId: string,
    what: { program?: boolean; credentials?: readonly string[]; repair?: string },
  ): string[] | null;
}

/** Structured log sink: metadata only. */
export interface DriftLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

/** The two drift metrics (telemetry/metrics.ts ReconcilerMetrics has them). */
export interface DriftMetrics {
  setDrift(counts: Partial<Record<DriftKind, number>>): void;
  driftReports: { inc(labels: { result: string }): void };
}

export interface DriftRunnerOptions {
  source: HealTarget;
  reports: ReportsDir;
  /** The store's drift history; absent: reports directory only. */
  store?: StateStore | null;
  metrics?: DriftMetrics | null;
  thresholds?: Partial<DriftThresholds>;
  /** Records kept in the store's history (the reports directory keeps its own N). Default 50. */
  keep?: number;
  /** Where every report is POSTed (a run may name another); signed with `webhookSecret` when given. */
  webhook?: { url: string; secret?: string | Buffer; ca?: string } | null;
  /** Longest wait for healed nodes to report again; default 15 s. */
  healWaitMs?: number;
  logger?: DriftLogger;
  now?: () => Date;
}

export interface DriftRunOptions {
  heal?: boolean;
  /** POST this report here (instead of the configured webhook). */
  webhook?: { url: string; secret?: string | Buffer; ca?: string } | null;
}

export interface DriftRun {
  report: DriftReport;
  /** The report's id in the reports directory, and its files (relative to it). */
  id: string;
  files: string[];
  /** The webhook's answer, when one was configured or given. */
  webhook: NotifyResult | null;
}

const SILENT: DriftLogger = { info() {}, warn() {} };

/** Which heal messages a node's items call for. */
function healPlan(n: NodeDrift, repairId: string) {
  let program = false;
  let repair = false;
  const credentials: string[] = [];
  for (const i of n.items) {
    if (i.what === 'program' || i.what === 'identity') program = true;
    else if (i.what === 'credential' && i.ref && (i.kind === 'missing' || i.kind === 'changed'))
      credentials.push(i.ref);
    else if (i.kind === 'out-of-band' || i.what === 'rule') repair = true;
  }
  return { program, credentials, ...(repair ? { repair: repairId } : {}) };
}

export class DriftRunner {
  private readonly thresholds: DriftThresholds;
  private readonly log: DriftLogger;
  private running: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: DriftRunnerOptions) {
    this.thresholds = { ...DEFAULT_THRESHOLDS, ...opts.thresholds };
    for (const [k, v] of Object.entries(this.thresholds))
      if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`${k} must be a number of seconds ≥ 0`);
    this.log = opts.logger ?? SILENT;
  }

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }

  /** Resolves when no report is in progress. */
  async idle(): Promise<void> {
    await this.running;
  }

  /** The drift now, without writing or sending anything. */
  compute(): DriftReport {
    return buildDriftReport(computeDrift(this.opts.source, { ...this.thresholds, now: this.now() }), {
      revision: this.opts.source.publishedRevision,
      ...this.thresholds,
      now: this.now(),
    });
  }

  /**
   * Makes one report (healing first when asked), writes it, records it, sets the metrics and sends it. Runs
   * one at a time: a second call waits for the first. Rejects only when the report cannot be written (exit 2
   * for the CLI); a webhook failure is in `webhook`, and logged.
   */
  run(opts: DriftRunOptions = {}): Promise<DriftRun> {
    const next = this.running.then(() => this.runOnce(opts));
    this.running = next.catch(() => {});
    return next;
  }

  private async runOnce(opts: DriftRunOptions): Promise<DriftRun> {
    try {
      const report = this.compute();
      if (opts.heal && report.drifted) report.heal = await this.heal(report);
      const { id, files } = await this.opts.reports.write(report);
      if (this.opts.store)
        await recordDrift(this.opts.store, report, id, files, this.opts.keep ?? DEFAULT_KEEP_REPORTS);
      const live = report.heal ? report.heal.after : report.summary;
      this.opts.metrics?.setDrift(live.counts);
      this.opts.metrics?.driftReports.inc({ result: report.drifted ? 'drift' : 'clean' });
      const hook = opts.webhook ?? this.opts.webhook ?? null;
      let webhook: NotifyResult | null = null;
      if (hook) {
        webhook = await postReport(hook.url, report, {
          ...(hook.secret ? { secret: hook.secret } : {}),
          ...(hook.ca ? { ca: hook.ca } : {}),
        });
        if (!webhook.ok)
          this.log.warn('drift report not delivered to the webhook', { reason: webhook.reason });
      }
      this.log.info('drift report', {
        id,
        drifted: report.drifted,
        counts: report.summary.counts,
        ...(report.heal ? { healedNodes: report.heal.actions.length, after: report.heal.after.counts } : {}),
      });
      return { report, id, files, webhook };
    } catch (err) {
      this.opts.metrics?.driftReports.inc({ result: 'error' });
      throw err;
    }
  }

  private async heal(report: DriftReport): Promise<HealSummary> {
    const at = this.now();
    const repairId = `heal-${randomBytes(6).toString('hex')}`;
    const actions: HealSummary['actions'] = [];
    const waitFor = new Map<string, { repair: boolean; program: boolean }>();
    // A report counts as "after the heal" when it is a new one (reports replace each other in the status).
    const before = new Map(this.opts.source.agents().map((a) => [a.daemonId, a.report]));
    for (const n of report.nodes) {
      if (n.items.length === 0) continue;
      if (!n.reachable) {
        actions.push({ node: n.node, sent: [], note: 'unreachable: nothing could be sent' });
        continue;
      }
      const plan = healPlan(n, repairId);
      if (!plan.program && !plan.credentials.length && !plan.repair) {
        actions.push({ node: n.node, sent: [], note: 'only stale items: renewals are the agent’s to make' });
        continue;
      }
      const sent = this.opts.source.heal(n.node, plan);
      if (sent === null) {
        actions.push({ node: n.node, sent: [], note: 'its stream closed before the heal' });
        continue;
      }
      actions.push({ node: n.node, sent });
      waitFor.set(n.node, { repair: sent.includes('repair'), program: sent.includes('program') });
    }
    await this.settle(waitFor, before, at.getTime(), repairId);
    const nodes = computeDrift(this.opts.source, { ...this.thresholds, now: this.now() });
    const { counts, nodesDrifted } = summarise(nodes);
    return {
      at: at.toISOString(),
      actions,
      after: { drifted: nodesDrifted > 0, nodesDrifted, counts },
      remaining: orderNodes(nodes.filter((n) => n.items.length > 0)),
    };
  }

  /** Waits until every healed node reported after the heal (its repair done, its program settled), bounded. */
  private async settle(
    nodes: ReadonlyMap<string, { repair: boolean; program: boolean }>,
    before: ReadonlyMap<string, LiveAgent['report']>,
    sinceMs: number,
    repairId: string,
  ): Promise<void> {
    if (nodes.size === 0) return;
    const deadline = Date.now() + (this.opts.healWaitMs ?? 15_000);
    const settled = (a: LiveAgent, want: { repair: boolean; program: boolean }) => {
      const r = a.report;
      if (!a.connected || !r || r === before.get(a.daemonId)) return false;
      if (want.repair && r.repairedId !== repairId) return false;
      if (want.program) {
        const desired = this.opts.source.desiredProgramOf(a.daemonId);
        const nacked =
          a.nack && desired && a.nack.version === desired.version && Date.parse(a.nack.at) >= sinceMs;
        if (desired && r.programVersion !== desired.version && !nacked) return false;
      }
      return true;
    };
    while (Date.now() < deadline) {
      const agents = new Map(this.opts.source.agents().map((a) => [a.daemonId, a]));
      if ([...nodes].every(([id, want]) => agents.has(id) && settled(agents.get(id)!, want))) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    this.log.warn('drift heal: not every healed node reported again in time', { nodes: nodes.size });
  }

  /**
   * Schedules reports on a cron pattern (schedule.ts: croner, UTC, no overlap): the hook the reconciler's
   * runtime registers for `--drift-schedule`. Failures are logged and the schedule goes on.
   */
  schedule(pattern: string, opts: { heal?: boolean; timezone?: string } = {}): DriftSchedule {
    return scheduleDrift(
      pattern,
      async () => {
        await this.run({ heal: opts.heal === true });
      },
      {
        ...(opts.timezone ? { timezone: opts.timezone } : {}),
        onError: (err) => this.log.warn('scheduled drift report failed', { error: (err as Error).message }),
        onSkipped: () => this.log.warn('scheduled drift report skipped: the previous one is still running'),
      },
    );
  }
}
