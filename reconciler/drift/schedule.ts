/**
 * `--drift-schedule "<cron>"` in the running reconciler, with croner: 5-field (minute precision) or 6-field
 * (seconds first) patterns and nicknames (`@hourly`, `@daily`), in UTC unless a time zone is given. A run never
 * overlaps the previous one (croner's `protect`: a report still running when the next time comes skips that
 * time), a failing run is reported and the schedule goes on, and the timer does not keep the process alive.
 */
import { Cron } from 'croner';

export class DriftScheduleError extends Error {}

export interface DriftSchedule {
  /** The next time a report will run, or null when there is none. */
  next(): Date | null;
  /** Runs a report now (same overlap guard). */
  runNow(): Promise<void>;
  stop(): void;
}

/** Checks a pattern and returns its next `count` run times (for `--help`, start-up output and tests). */
export function nextRuns(
  pattern: string,
  count: number,
  opts: { timezone?: string; from?: Date } = {},
): Date[] {
  try {
    return new Cron(pattern, { paused: true, timezone: opts.timezone ?? 'Etc/UTC' }).nextRuns(
      count,
      opts.from,
    );
  } catch (err) {
    throw new DriftScheduleError(
      `--drift-schedule "${pattern}": ${(err as Error).message} (write it like "0 */6 * * *" or "@hourly")`,
    );
  }
}

export function scheduleDrift(
  pattern: string,
  run: () => Promise<void>,
  opts: { timezone?: string; onError?: (err: unknown) => void; onSkipped?: () => void } = {},
): DriftSchedule {
  nextRuns(pattern, 1, opts.timezone ? { timezone: opts.timezone } : {});
  const job = new Cron(
    pattern,
    {
      timezone: opts.timezone ?? 'Etc/UTC',
      protect: () => opts.onSkipped?.(),
      catch: (err) => opts.onError?.(err),
      unref: true,
    },
    run,
  );
  return {
    next: () => job.nextRun(),
    // croner's own guard covers scheduled runs only; a manual run checks the same flag.
    runNow: () => {
      if (job.isBusy()) {
        opts.onSkipped?.();
        return Promise.resolve();
      }
      return job.trigger();
    },
    stop: () => job.stop(),
  };
}
