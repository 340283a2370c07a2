/**
 * Drift in a running reconciler: the hook its runtime registers in one line. From the runtime's agent server,
 * store, metrics and logger it makes the DriftRunner that serves `POST /api/v1/drift` (riptides-cli drift),
 * keeps reports in `<state-dir>/reports` (newest `keep`), and runs on `--drift-schedule` when one is given.
 *
 *   const drift = startDrift({ stateDir, source: agentServer, store, metrics, logger }, settings);
 *   api option: drift: (o) => drift.runner.run(o)
 *   await drift.stop();
 */
import { join } from 'node:path';
import type { StateStore } from '../store/state-store.ts';
import type { DriftThresholds } from './compute.ts';
import { DEFAULT_KEEP_REPORTS, ReportsDir } from './history.ts';
import { checkWebhookUrl } from './notify.ts';
import { type DriftLogger, type DriftMetrics, DriftRunner, type HealTarget } from './runner.ts';
import { type DriftSchedule, nextRuns } from './schedule.ts';

/** What the operator configures (`--drift-*` flags of `reconciler` and `up`). */
export interface DriftSettings {
  /** A cron pattern (croner: 5 or 6 fields, or @hourly…), UTC unless `timezone`; absent: on request only. */
  schedule?: string;
  timezone?: string;
  /** Scheduled reports heal too (default false: report only). */
  heal?: boolean;
  /** Reports kept in the reports directory and history (default 50). */
  keep?: number;
  thresholds?: Partial<DriftThresholds>;
  /** Every report is POSTed here (signed with `secret` when given). */
  webhook?: { url: string; secret?: string | Buffer; ca?: string };
}

export interface DriftContext {
  stateDir: string;
  source: HealTarget;
  store?: StateStore | null;
  metrics?: DriftMetrics | null;
  logger?: DriftLogger;
}

export interface RunningDrift {
  readonly runner: DriftRunner;
  readonly reportsDir: string;
  /** The scheduled job, or null without a schedule. */
  readonly schedule: DriftSchedule | null;
  /** Stops the schedule and waits for a report in progress. */
  stop(): Promise<void>;
}

/** Where a reconciler keeps its drift reports. */
export function reportsDirOf(stateDir: string): string {
  return join(stateDir, 'reports');
}

/**
 * Checks the settings (a bad cron pattern or webhook URL throws, with what to write instead) and starts the
 * drift service. Nothing is written until the first report.
 */
export function startDrift(ctx: DriftContext, settings: DriftSettings = {}): RunningDrift {
  if (settings.schedule)
    nextRuns(settings.schedule, 1, settings.timezone ? { timezone: settings.timezone } : {});
  if (settings.webhook) checkWebhookUrl(settings.webhook.url);
  const keep = settings.keep ?? DEFAULT_KEEP_REPORTS;
  const dir = reportsDirOf(ctx.stateDir);
  const runner = new DriftRunner({
    source: ctx.source,
    reports: new ReportsDir(dir, keep),
    store: ctx.store ?? null,
    metrics: ctx.metrics ?? null,
    keep,
    ...(settings.thresholds ? { thresholds: settings.thresholds } : {}),
    webhook: settings.webhook ?? null,
    ...(ctx.logger ? { logger: ctx.logger } : {}),
  });
  const schedule = settings.schedule
    ? runner.schedule(settings.schedule, {
        heal: settings.heal === true,
        ...(settings.timezone ? { timezone: settings.timezone } : {}),
      })
    : null;
  if (schedule)
    ctx.logger?.info('drift reports scheduled', {
      schedule: settings.schedule,
      next: schedule.next()?.toISOString() ?? null,
      heal: settings.heal === true,
    });
  return {
    runner,
    reportsDir: dir,
    schedule,
    async stop() {
      schedule?.stop();
      await runner.idle();
    },
  };
}
