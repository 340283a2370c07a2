/**
 * Drift benchmark (`npm run bench -- drift`): 200 simulated agents (their own join, SVID and mTLS stream each,
 * in two processes; bench/lib/agents-sim.ts) in 4 daemon groups of 50, 25 identities a group, each agent
 * reporting its node over its stream (every 10th with two hand edits, every 20th with an SVID expiring within
 * the threshold). In this process, the agent server and the drift runner:
 *
 *   - a whole drift report (compute, Markdown and JSON, both written to the reports directory, the store's
 *     history): median and p95 of 20, against the floor in the same run: the live state as the agent server
 *     holds it, serialised to JSON and written once (what any report must at least read and write);
 *   - the computation alone at 200 agents and at 2,000 (the same reports, ten times over, through a
 *     synthetic source): linear means about 10×.
 *
 * Target (issue 11): a drift report over 200 agents under 1 s.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../reconciler/common/atomic-file.ts';
import { computeDrift, DEFAULT_THRESHOLDS, type DriftSource } from '../reconciler/drift/compute.ts';
import { ReportsDir } from '../reconciler/drift/history.ts';
import { DriftRunner } from '../reconciler/drift/runner.ts';
import { StateStore } from '../reconciler/store/state-store.ts';
import { startFleet } from '../test/support/agent-fleet.ts';
import { ask, child } from './lib/ipc.ts';
import { fmt, median } from './lib/measure.ts';

const GROUPS = ['bench/g0', 'bench/g1', 'bench/g2', 'bench/g3'];
const PER_GROUP = 50;
const IDENTITIES_PER_GROUP = 25;
const SIM_PROCESSES = 2;
const RUNS = 20;

const first = <T>(p: ChildProcess) => new Promise<T>((resolve) => p.once('message', (m) => resolve(m as T)));
const percentile = (values: number[], p: number) => {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

const fleet = await startFleet({ csrPerSecond: 500 });
fleet.publish({ groups: Object.fromEntries(GROUPS.map((g) => [g, IDENTITIES_PER_GROUP])) });
const tokens: string[] = [];
for (const g of GROUPS)
  for (let i = 0; i < PER_GROUP; i++) tokens.push(await fleet.token({ daemonGroup: g }));
const sims = Array.from({ length: SIM_PROCESSES }, () => child('agents-sim.ts'));
await Promise.all(sims.map((s) => first(s)));
await Promise.all(
  sims.map((s, i) =>
    ask(s, { cmd: 'join', addr: fleet.addr, tokens: tokens.filter((_, k) => k % SIM_PROCESSES === i) }),
  ),
);
await Promise.all(sims.map((s) => ask(s, { cmd: 'report', driftEvery: 10, staleEvery: 20 })));
const deadline = Date.now() + 30_000;
while (fleet.server.agents().filter((a) => a.report).length < tokens.length) {
  if (Date.now() > deadline) throw new Error('not every agent reported within 30 s');
  await new Promise((r) => setTimeout(r, 50));
}

const dir = mkdtempSync(join(tmpdir(), 'riptides-bench-drift-'));
const store = await StateStore.open({ stateDir: dir });
const runner = new DriftRunner({
  source: fleet.server,
  reports: new ReportsDir(join(dir, 'reports'), 50),
  store,
});

// Warm-up, then the measured runs.
const warm = await runner.run();
const reportMs: number[] = [];
for (let i = 0; i < RUNS; i++) {
  const t = performance.now();
  await runner.run();
  reportMs.push(performance.now() - t);
}

// The floor: the same live state, as held, serialised and written once.
const floorMs: number[] = [];
for (let i = 0; i < RUNS; i++) {
  const t = performance.now();
  await writeFileAtomic(join(dir, 'dump.json'), JSON.stringify(fleet.server.agents()), { mode: 0o600 });
  floorMs.push(performance.now() - t);
}

// The computation alone, at 200 agents and at 2,000 (each live agent ten times over).
const opts = { ...DEFAULT_THRESHOLDS, now: new Date() };
const live = fleet.server.agents();
const scaled = (times: number): DriftSource => ({
  publishedRevision: null,
  agents: () =>
    Array.from({ length: times }, (_, k) =>
      live.map((a) => ({ ...a, daemonId: `${a.daemonId}-${k}` })),
    ).flat(),
  desiredProgramOf: (id) => fleet.server.desiredProgramOf(id.replace(/-\d+$/, '')),
  credentialFacts: (h) => fleet.server.credentialFacts(h),
});
const timeCompute = (src: DriftSource) => {
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    computeDrift(src, opts);
    samples.push(performance.now() - t);
  }
  return median(samples);
};
const compute200 = timeCompute(scaled(1));
const compute2000 = timeCompute(scaled(10));

for (const s of sims) s.send({ cmd: 'stop' });
await store.close();
await fleet.close();
rmSync(dir, { recursive: true, force: true });

const s = warm.report.summary;
console.log(
  `${s.nodes} agents (${GROUPS.length} groups × ${PER_GROUP}, ${IDENTITIES_PER_GROUP} identities each) reporting over mTLS; ` +
    `report finds ${s.nodesDrifted} drifted nodes: ${Object.entries(s.counts)
      .filter(([, n]) => n)
      .map(([k, n]) => `${n} ${k}`)
      .join(', ')}`,
);
console.log(
  `drift report over ${s.nodes} agents (compute + Markdown + JSON written + history): p50 ${fmt(median(reportMs), 1)} ms, ` +
    `p95 ${fmt(percentile(reportMs, 95), 1)} ms over ${RUNS} (target < 1000 ms); ` +
    `baseline (the live state serialised and written once): ${fmt(median(floorMs), 1)} ms; ratio ${fmt(median(reportMs) / median(floorMs), 1)}×`,
);
console.log(
  `computation alone: ${fmt(compute200, 2)} ms for ${s.nodes} agents, ${fmt(compute2000, 2)} ms for ${s.nodes * 10} ` +
    `(${fmt(compute2000 / compute200, 1)}× for 10× the agents: no worse than linear)`,
);
process.exit(0);
