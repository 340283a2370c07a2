/**
 * A node that refused a program (NACK) keeps its old one: drift shows the program as changed with the NACK's
 * reason; once the node can take it, `--heal` sends the whole program again (the reconciler alone never
 * re-sends a NACKed version) and the report's second look finds it converged. The agent here is the real join
 * and Sync client with the real update logic (test/support/sim-agent.ts), reporting its own state.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReportsDir } from '../../reconciler/drift/history.ts';
import { DriftRunner } from '../../reconciler/drift/runner.ts';
import { type Fleet, startFleet } from '../support/agent-fleet.ts';
import { eventually } from '../support/cli-process.ts';
import { workloadOf } from '../support/fleet-policy.ts';
import { scratch } from '../support/scratch.ts';
import { SimAgent } from '../support/sim-agent.ts';

const GROUP = 'riptides/daemongroup/heal/a';
let fleet: Fleet;
let sim: SimAgent;
let cleanup: () => void;
let dir: string;

/** What the simulated node reports: the program it holds, no SVIDs, no edits. */
function report() {
  const p = sim.program!;
  sim.report({
    programVersion: p.version,
    identities: [...p.identities.values()].map((i) => ({ spiffeId: i.spiffeId, hash: i.hash })),
    control: { health: 'OK', enforcedVersion: p.version, enforcedGeneration: 1, error: '', drift: [] },
    atUnixMs: Date.now(),
  });
}

beforeAll(async () => {
  ({ dir, cleanup } = scratch('drift-heal'));
  fleet = await startFleet();
  fleet.publish({ groups: { [GROUP]: 2 } });
  sim = (
    await SimAgent.join(fleet.addr, await fleet.token({ daemonGroup: GROUP }), join(dir, 'sim'))
  ).start();
  await sim.until(() => sim.program !== null, 20_000, 'first program');
}, 60_000);

afterAll(async () => {
  sim?.stop();
  await fleet?.close();
  cleanup?.();
});

describe('heal of a refused program', () => {
  it('reports the NACKed program, then re-sends it whole with --heal', async () => {
    const status = () => fleet.server.agents()[0]!;
    const old = sim.program!;
    sim.refuseWith = { code: 'CONTROL_REFUSED', message: 'the kernel side refused the table', hint: '' };
    fleet.publish({
      groups: { [GROUP]: 2 },
      tweak: { [workloadOf(0, 1)]: 'spiffe://fleet.example.org/new' },
    });
    await sim.until(() => sim.nacks.length === 1, 10_000, 'the NACK');
    report();
    await eventually(() => status().nack !== null && status().report?.programVersion === old.version);

    const runner = new DriftRunner({ source: fleet.server, reports: new ReportsDir(join(dir, 'reports')) });
    const before = await runner.run();
    const items = before.report.nodes[0]!.items;
    expect(items.map((i) => `${i.kind} ${i.what}`)).toEqual(['changed program', 'changed identity']);
    expect(items[0]!.detail).toContain('NACK CONTROL_REFUSED: the kernel side refused the table');
    expect(items[0]!.live).toBe(old.version);
    // The reconciler does not push a NACKed version again by itself.
    const updates = sim.updates.length;
    await new Promise((r) => setTimeout(r, 300));
    expect(sim.updates.length).toBe(updates);

    sim.refuseWith = null;
    const heal = runner.run({ heal: true });
    await sim.until(() => sim.updates.length > updates, 10_000, 'the program again');
    expect(sim.updates.at(-1)!.full).toBe(true);
    report();
    const { report: healed } = await heal;
    expect(healed.drifted).toBe(true);
    expect(healed.heal?.actions).toEqual([{ node: status().daemonId, sent: ['program'] }]);
    expect(healed.heal?.after.drifted).toBe(false);
    expect(status().report?.programVersion).toBe(fleet.server.desiredProgramOf(status().daemonId)!.version);
  });
});
