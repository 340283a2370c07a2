/**
 * The daemons' status from the agent server's view (reconciler/loop/live-status.ts): what `ctl get daemons`
 * shows in its HEALTH and MESSAGE columns; and the identities' runtime fields, where a refresh that finds every
 * identity as it was must change nothing the status store would write again.
 */
import { describe, expect, it } from 'vitest';
import type { AgentStatus } from '../../reconciler/agents/session.ts';
import { syncDaemons, syncIdentities } from '../../reconciler/loop/live-status.ts';
import { StatusBook } from '../../reconciler/status/book.ts';
import { findCondition } from '../../reconciler/status/conditions.ts';
import type { WorkloadIdentityStatus } from '../../reconciler/status/model.ts';
import { APPLIED, seededBook } from '../support/status-fixture.ts';

const T0 = new Date('2026-12-01T00:00:00Z');

function agent(daemonId: string, extra: Partial<AgentStatus> = {}): AgentStatus {
  return {
    daemonId,
    spiffeId: `spiffe://example.org/riptides/daemon/${daemonId}`,
    daemonGroup: 'g',
    scopes: ['daemonGroup:g'],
    connected: true,
    peer: '127.0.0.1:1',
    connectedAt: T0.toISOString(),
    lastContact: T0.toISOString(),
    ackedVersion: 'v1',
    desiredVersion: 'v1',
    nack: null,
    report: {
      programVersion: 'v1',
      identities: [],
      credentials: [],
      processes: [],
      control: { health: 'OK', enforcedVersion: 'v1', enforcedGeneration: 1, error: '', drift: [] },
      atUnixMs: T0.getTime(),
      bundleVersion: '',
      rejectedVersion: '',
      rejectedError: null,
      dataPlane: null,
      repairedId: '',
    },
    counters: { messagesSent: 0, bytesSent: 0, refused: 0, svidsIssued: 0 },
    ...extra,
  };
}

describe('daemon health', () => {
  it('is degraded, saying what it refused and what it enforces, while a daemon refuses its program', () => {
    const book = new StatusBook({ now: () => T0 });
    const nack = {
      version: 'v2',
      kept: 'v1',
      error: { code: 'LIMIT', message: 'program has 4 identities; this agent accepts at most 3', hint: '' },
      at: T0.toISOString(),
    };
    syncDaemons(book, [agent('ok'), agent('refuses', { desiredVersion: 'v2', nack })], 'r1');
    expect(book.daemon('ok')).toMatchObject({ health: 'ok', healthMessage: null });
    const refusing = book.daemon('refuses')!;
    expect(refusing.health).toBe('degraded');
    expect(refusing.healthMessage).toBe(
      'refused program v2 (LIMIT: program has 4 identities; this agent accepts at most 3); enforcing v1',
    );
    expect(findCondition(refusing.conditions, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'ProgramRejected',
    });

    // It accepts a later program: healthy again, and the change is an event.
    syncDaemons(book, [agent('ok'), agent('refuses', { ackedVersion: 'v3', desiredVersion: 'v3' })], 'r2');
    expect(book.daemon('refuses')).toMatchObject({ health: 'ok', healthMessage: null });
    expect(book.events.of('Daemon/refuses').map((e) => e.reason)).toContain('Healthy');
  });
});

describe('identities status', () => {
  it('a refresh that finds every identity as it was marks none changed; a new count marks that one', () => {
    const book = seededBook(T0);
    const target = (book.resources('WorkloadIdentity') as WorkloadIdentityStatus[])[0]!;
    const reporting = (processCount: number) =>
      agent('node-a', {
        report: {
          ...agent('node-a').report!,
          identities: [{ spiffeId: target.spiffeId, processCount, svidNotAfterUnix: 0 }],
        } as AgentStatus['report'],
      });
    syncIdentities(book, [reporting(0)], null, APPLIED);
    book.takeChanges();
    syncIdentities(book, [reporting(0)], null, APPLIED);
    expect([...book.takeChanges()!]).toEqual([]);

    syncIdentities(book, [reporting(4)], null, APPLIED);
    expect([...book.takeChanges()!]).toEqual([`WorkloadIdentity/${target.namespace}/${target.name}`]);
    expect(book.resource('WorkloadIdentity', target.namespace, target.name)).toMatchObject({
      attestedProcesses: 4,
      conditions: [{ type: 'Ready', status: 'True', observedRevision: APPLIED }],
    });
  });
});
