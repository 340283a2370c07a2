/**
 * Drift in the running reconciler: `--drift-schedule` makes reports on its cron (croner) into the reports
 * directory and stops with the reconciler; the `--drift-*` flags are checked before anything starts, each
 * refusal naming the flag and what it takes.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../reconciler/cli/command.ts';
import { driftSettingsFromFlags } from '../../reconciler/cli/drift-flags.ts';
import type { LiveAgent } from '../../reconciler/drift/compute.ts';
import { startDrift } from '../../reconciler/drift/service.ts';
import { capture } from '../support/cli.ts';
import { eventually } from '../support/cli-process.ts';
import { tempDir } from '../support/scratch.ts';

const gone: LiveAgent = {
  daemonId: 'node-1',
  daemonGroup: 'g',
  connected: false,
  lastContact: null,
  nack: null,
  report: null,
};

describe('scheduled drift reports', () => {
  it('makes a report on each tick of the schedule and stops with the reconciler', async () => {
    const stateDir = tempDir('drift-schedule');
    const drift = startDrift(
      {
        stateDir,
        source: {
          publishedRevision: 'abc',
          agents: () => [gone],
          desiredProgramOf: () => null,
          credentialFacts: () => undefined,
          heal: () => null,
        },
      },
      { schedule: '* * * * * *', keep: 3 },
    );
    expect(drift.schedule?.next()).toBeInstanceOf(Date);
    const reports = () => readdirSync(join(stateDir, 'reports')).filter((f) => f.endsWith('.json'));
    await eventually(() => reports().length >= 2, 10_000, 'two scheduled reports');
    await drift.stop();
    const after = reports().length;
    await new Promise((r) => setTimeout(r, 1500));
    expect(reports().length).toBe(after);
    expect(after).toBeLessThanOrEqual(3);
    const latest = drift.runner.compute();
    expect(latest.summary.counts.unreachable).toBe(1);
  });

  it('checks the --drift-* flags up front', () => {
    const io = capture().io;
    const refused = (values: Record<string, unknown>) => {
      try {
        driftSettingsFromFlags(values, io);
      } catch (err) {
        expect(err).toBeInstanceOf(UsageError);
        return (err as Error).message;
      }
      throw new Error('accepted');
    };
    expect(refused({ 'drift-schedule': 'every hour' })).toContain('--drift-schedule "every hour"');
    expect(refused({ 'drift-heal': true })).toContain('--drift-heal goes with --drift-schedule');
    expect(refused({ 'drift-keep': '0' })).toContain('--drift-keep must be a whole number');
    expect(refused({ 'drift-stale-threshold': '90' })).toContain('--drift-stale-threshold must be');
    expect(refused({ 'drift-webhook': 'http://hooks.example.com/x' })).toContain('must be https');
    expect(refused({ 'drift-webhook-secret-file': '/x' })).toContain('goes with --drift-webhook');
    expect(
      driftSettingsFromFlags(
        {
          'drift-schedule': '0 */6 * * *',
          'drift-heal': true,
          'drift-keep': '10',
          'drift-stale-threshold': '10m',
          'drift-unreachable-after': '2m',
          'drift-webhook': 'https://hooks.example.com/drift',
        },
        io,
      ),
    ).toEqual({
      schedule: '0 */6 * * *',
      heal: true,
      keep: 10,
      thresholds: { staleThresholdSeconds: 600, unreachableAfterSeconds: 120 },
      webhook: { url: 'https://hooks.example.com/drift' },
    });
  });
});
