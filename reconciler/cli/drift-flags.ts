/**
 * The drift flags of the long-running commands (`reconciler`, `up`): a schedule for reports in the running
 * reconciler, healing on that schedule, history size, thresholds and a webhook. Checked before anything starts.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { DURATION_FORMS, parseDuration } from '../common/duration.ts';
import { checkWebhookUrl } from '../drift/notify.ts';
import { DriftScheduleError, nextRuns } from '../drift/schedule.ts';
import type { DriftSettings } from '../drift/service.ts';
import { type CommandIO, UsageError } from './command.ts';

export const DRIFT_FLAGS = {
  'drift-schedule': { type: 'string' },
  'drift-heal': { type: 'boolean' },
  'drift-keep': { type: 'string' },
  'drift-stale-threshold': { type: 'string' },
  'drift-unreachable-after': { type: 'string' },
  'drift-webhook': { type: 'string' },
  'drift-webhook-secret-file': { type: 'string' },
} as const;

export const DRIFT_HELP = `Drift reports (also on request: riptides-cli drift):
  --drift-schedule CRON       make a report on this schedule (croner: "0 */6 * * *", "*/15 * * * *",
                              "@hourly"; 6 fields put seconds first; UTC); kept in STATE_DIR/reports
  --drift-heal                scheduled reports also heal what drifted (default: report only)
  --drift-keep N              reports kept in STATE_DIR/reports and the store's history (default 50)
  --drift-stale-threshold DURATION
                              SVIDs and credentials expiring within it are stale (default 3m)
  --drift-unreachable-after DURATION
                              agents silent for longer are unreachable (default 90s)
  --drift-webhook URL         POST every report's JSON there (https, or http to loopback; no redirects)
  --drift-webhook-secret-file FILE
                              sign those POSTs: X-Riptides-Signature-256: sha256=<HMAC of the body>`;

export interface DriftFlagValues {
  'drift-schedule'?: string | undefined;
  'drift-heal'?: boolean | undefined;
  'drift-keep'?: string | undefined;
  'drift-stale-threshold'?: string | undefined;
  'drift-unreachable-after'?: string | undefined;
  'drift-webhook'?: string | undefined;
  'drift-webhook-secret-file'?: string | undefined;
}

function seconds(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const s = parseDuration(value);
  if (s === null || s === 0)
    throw new UsageError(`--${flag} must be ${DURATION_FORMS}, above zero (got "${value}")`);
  return s;
}

/** The flags → DriftSettings; a UsageError names the flag and says what it takes. */
export function driftSettingsFromFlags(values: DriftFlagValues, io: CommandIO): DriftSettings {
  const settings: DriftSettings = {};
  const pattern = values['drift-schedule'];
  if (pattern !== undefined) {
    try {
      nextRuns(pattern, 1);
    } catch (err) {
      if (err instanceof DriftScheduleError) throw new UsageError(err.message);
      throw err;
    }
    settings.schedule = pattern;
  }
  if (values['drift-heal']) {
    if (!pattern)
      throw new UsageError('--drift-heal goes with --drift-schedule (riptides-cli drift --heal heals once)');
    settings.heal = true;
  }
  if (values['drift-keep'] !== undefined) {
    const n = Number(values['drift-keep']);
    if (!(Number.isInteger(n) && n >= 1 && n <= 10_000))
      throw new UsageError(
        `--drift-keep must be a whole number from 1 to 10000 (got "${values['drift-keep']}")`,
      );
    settings.keep = n;
  }
  const stale = seconds(values['drift-stale-threshold'], 'drift-stale-threshold');
  const unreachable = seconds(values['drift-unreachable-after'], 'drift-unreachable-after');
  if (stale !== undefined || unreachable !== undefined)
    settings.thresholds = {
      ...(stale !== undefined ? { staleThresholdSeconds: stale } : {}),
      ...(unreachable !== undefined ? { unreachableAfterSeconds: unreachable } : {}),
    };
  const url = values['drift-webhook'];
  if (values['drift-webhook-secret-file'] && !url)
    throw new UsageError('--drift-webhook-secret-file goes with --drift-webhook URL');
  if (url) {
    try {
      checkWebhookUrl(url);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    let secret: string | undefined;
    const file = values['drift-webhook-secret-file'];
    if (file) {
      try {
        secret = readFileSync(resolve(io.cwd, file), 'utf8').trim();
      } catch (err) {
        throw new UsageError(
          `cannot read --drift-webhook-secret-file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
        );
      }
      if (!secret) throw new UsageError(`--drift-webhook-secret-file ${file} is empty`);
    }
    settings.webhook = { url, ...(secret ? { secret } : {}) };
  }
  return settings;
}
