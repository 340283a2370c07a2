/**
 * The Reconciler runtime as a library, in this process: a real git server (git http-backend) on loopback,
 * commits pushed with the git CLI, simulated agents speaking the real protocol. What `reconciler` and `up`
 * build on: a push is applied to the agents of the group it concerns and no one else; a commit that does not
 * validate applies nothing and says where; the last good revision stays; heal re-sends whole programs.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reconciler } from '../../reconciler/loop/reconciler.ts';
import { createLogger } from '../../reconciler/telemetry/logger.ts';
import { waitFor } from '../support/cred-wait.ts';
import { FLEET_TD, type FleetSpec, workloadOf, writeFleetPolicy } from '../support/fleet-policy.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { scratch } from '../support/scratch.ts';
import { SimAgent } from '../support/sim-agent.ts';

const A = 'riptides/daemongroup/lib/a';
const B = 'riptides/daemongroup/lib/b';

describe('the Reconciler runtime', () => {
  const tmp = scratch('loop-lib');
  let server: GitServer;
  let clone: WorkClone;
  let reconciler: Reconciler;
  const agents: SimAgent[] = [];
  const spec: FleetSpec = { groups: { [A]: 2, [B]: 1 } };

  const commit = async (s: FleetSpec, message: string) => {
    writeFleetPolicy(join(clone.dir, 'policies'), s);
    const id = await clone.commit(message);
    await clone.push();
    return id;
  };
  const pass = async () => {
    reconciler.trigger('api');
    await reconciler.idle();
    return reconciler.lastPass()!;
  };

  beforeAll(async () => {
    const root = join(tmp.dir, 'srv');
    mkdirSync(root);
    await createBareRepo(root, 'policy');
    server = await startGitServer({ root });
    clone = await WorkClone.create(`${server.url}/policy.git`, join(tmp.dir, 'clone'));
    await commit(spec, 'first');
    reconciler = await Reconciler.start({
      repo: `${server.url}/policy.git`,
      path: 'policies',
      stateDir: join(tmp.dir, 'state'),
      agents: { host: '127.0.0.1', port: 0, joinsPerSecond: 1000, joinBurst: 1000 },
      api: null,
      pollIntervalMs: 0,
      credentials: null,
      applyTimeoutMs: 5000,
      logger: createLogger({ level: 'silent' }),
    });
    await reconciler.idle();
    for (const [group, name] of [
      [A, 'a1'],
      [A, 'a2'],
      [B, 'b1'],
    ] as const) {
      const token = await reconciler.createJoinToken({ daemonGroup: group });
      agents.push((await SimAgent.join(reconciler.agentAddress, token, join(tmp.dir, name))).start());
    }
    for (const a of agents) await a.until(() => a.program !== null, 20_000, 'first program');
  }, 120_000);

  afterAll(async () => {
    for (const a of agents) a.stop();
    await reconciler?.stop(1000);
    await server?.close();
    tmp.cleanup();
  });

  it('applies the tracked branch: each agent holds its group, the source says which revision', async () => {
    const head = await clone.git('rev-parse', 'HEAD');
    expect(reconciler.applied()?.revision).toBe(head);
    const [a1, , b1] = agents;
    expect([...a1!.program!.identities.keys()]).toEqual([
      `spiffe://${FLEET_TD}/${workloadOf(0, 0)}`,
      `spiffe://${FLEET_TD}/${workloadOf(0, 1)}`,
    ]);
    expect([...b1!.program!.identities.keys()]).toEqual([`spiffe://${FLEET_TD}/${workloadOf(1, 0)}`]);
    // Ready once the agents' ACKs are in: the status refresh follows an ACK by up to 200 ms.
    const ready = () => reconciler.status().source?.conditions.find((c) => c.type === 'Ready');
    await waitFor('the source Ready', () => ready()?.status === 'True', 10_000);
    const source = reconciler.status().source!;
    expect(source).toMatchObject({ branch: 'main', path: 'policies', lastAppliedRevision: head });
    expect(ready()).toMatchObject({ status: 'True', reason: expect.any(String) });
    await a1!.until(() => reconciler.desiredProgramOf(a1!.daemonId)?.version === a1!.program!.version);
  });

  it('a one-identity commit parses one file, reaches only its group, and every agent of it ACKs', async () => {
    const before = agents.map((a) => a.updates.length);
    const head = await commit(
      { ...spec, tweak: { [workloadOf(0, 1)]: `spiffe://${FLEET_TD}/tweaked` } },
      'tweak one identity of group A',
    );
    const report = await pass();
    expect(report).toMatchObject({ result: 'applied', revision: head, appliedRevision: head });
    expect(report.steps.render).toMatchObject({ parsed: 1 });
    expect(report.steps.diff!.scopesChanged).toEqual([`daemonGroup:${A}`]);
    expect(report.steps.collect!.acked.sort()).toEqual([agents[0]!.daemonId, agents[1]!.daemonId].sort());
    const [a1, a2, b1] = agents;
    for (const a of [a1!, a2!]) {
      expect(a.updates.length).toBe(before[agents.indexOf(a)]! + 1);
      expect(a.updates.at(-1)!.identities.map((i) => i.workloadId)).toEqual([workloadOf(0, 1)]);
    }
    expect(b1!.updates.length).toBe(before[2]);
  });

  it('a commit that does not validate applies nothing, says file and line, and the last good stays', async () => {
    const good = reconciler.applied()!.revision;
    const versions = agents.map((a) => a.program!.version);
    const bad = await commit(
      { ...spec, selectors: { [workloadOf(0, 0)]: { 'process:nmae': 'typo' } } },
      'a typo in a selector key',
    );
    const report = await pass();
    expect(report).toMatchObject({ result: 'stalled', revision: bad, appliedRevision: good });
    expect(report.error).toMatchObject({ code: 'ValidationFailed', terminal: true });
    const source = reconciler.status().source!;
    expect(source.lastFetchedRevision).toBe(bad);
    expect(source.lastAppliedRevision).toBe(good);
    expect(source.diagnostics[0]).toMatchObject({
      code: 'RT036',
      file: 'policies/identities.yaml',
      line: expect.any(Number),
    });
    expect(source.diagnostics[0]!.line).toBeGreaterThan(1);
    // Both conditions refer to the commit they judge, as `ctl describe source` shows them.
    expect(source.conditions.find((c) => c.type === 'Stalled')).toMatchObject({
      status: 'True',
      reason: 'ValidationFailed',
      observedRevision: bad,
    });
    expect(source.conditions.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'False',
      observedRevision: bad,
    });
    expect(agents.map((a) => a.program!.version)).toEqual(versions);
    // The same bad commit polled again is not rendered again, and still stalls.
    const again = await pass();
    expect(again.result).toBe('stalled');
    expect(again.timings.render).toBeUndefined();
  });

  it('the next good commit is applied and clears the diagnostics', async () => {
    const head = await commit(spec, 'fix the typo');
    const report = await pass();
    expect(report).toMatchObject({ result: 'applied', appliedRevision: head });
    expect(reconciler.status().source!.diagnostics).toEqual([]);
    // Nothing new on the branch: nothing is rendered or pushed.
    const idle = await pass();
    expect(idle).toMatchObject({ result: 'unchanged', appliedRevision: head });
    expect(idle.timings.render).toBeUndefined();
    expect(idle.steps.push).toBeUndefined();
  });

  it('writes the status at most every 2 s however many passes run; the last write holds the last revision', async () => {
    const status = reconciler.store.status;
    const writes: number[] = [];
    const set = status.set.bind(status);
    status.set = (v) => {
      writes.push(Date.now());
      return set(v);
    };
    try {
      await new Promise((r) => setTimeout(r, 2100)); // past any write already due
      writes.length = 0;
      const started = Date.now();
      let head = '';
      for (let i = 0; i < 4; i++) {
        head = await commit(
          { ...spec, tweak: { [workloadOf(1, 0)]: `spiffe://${FLEET_TD}/burst-${i}` } },
          `burst ${i}`,
        );
        expect(await pass()).toMatchObject({ result: 'applied', appliedRevision: head });
      }
      const burst = Date.now() - started;
      // Four passes, each asking for a write: one at once, then at most one per 2 s.
      expect(writes.length).toBeLessThanOrEqual(1 + Math.ceil(burst / 2000));
      await new Promise((r) => setTimeout(r, 3000)); // the write asked for last, within 2 s, and its fsync
      expect(status.get()?.source?.lastAppliedRevision).toBe(head);
      for (let i = 1; i < writes.length; i++)
        expect(writes[i]! - writes[i - 1]!).toBeGreaterThanOrEqual(1990);
    } finally {
      status.set = set;
    }
  });

  it('heal sends whole programs again, even to agents that hold the desired version', async () => {
    const a1 = agents[0]!;
    const count = a1.updates.length;
    const version = a1.program!.version;
    expect(reconciler.heal([a1.daemonId]).resynced).toEqual([a1.daemonId]);
    await a1.until(() => a1.updates.length === count + 1, 10_000, 'the full program again');
    expect(a1.updates.at(-1)).toMatchObject({ full: true, versionInfo: version });
    expect(a1.updates.at(-1)!.identities).toHaveLength(2);
  });
});
