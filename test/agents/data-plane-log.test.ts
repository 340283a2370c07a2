/**
 * Data plane events in the agent's log: an event's `pid` is the workload's, and every log line already carries
 * the agent's own `pid`; the review found lines with both under one key.
 */
import { describe, expect, it } from 'vitest';
import { dataPlaneLog } from '../../agent/start-node.ts';

describe('data plane events in the agent log', () => {
  it("logs the workload's pid as workloadPid, leaving pid to the agent's own", () => {
    const lines: Array<[string, Record<string, unknown> | undefined]> = [];
    const logger = {
      info: (m: string, f?: Record<string, unknown>) => lines.push([m, f]),
      warn: (m: string, f?: Record<string, unknown>) => lines.push([m, f]),
      error: () => {},
    };
    const log = dataPlaneLog(logger);
    log({ level: 'warn', event: 'relay-error', detail: 'x', pid: 4242 });
    log({ level: 'info', event: 'passthrough', reason: 'no identity' });
    expect(lines).toEqual([
      ['data plane: relay-error', { detail: 'x', workloadPid: 4242 }],
      ['data plane: passthrough', { reason: 'no identity' }],
    ]);
  });
});
