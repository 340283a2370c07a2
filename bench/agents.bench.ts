/**
 * Agents benchmark (`npm run bench -- agents`): one agent server (its own process) and 200 simulated agents
 * (two processes, each agent with its own join, SVID and mTLS connection), in 4 daemon groups of 50.
 *
 *   - time from a program change (render + publish) to all 200 ACKed, p50 / p95 over 20 changes, against a
 *     bare gRPC round trip of all 200 agents over warm connections in the same run;
 *   - bytes sent for a one-identity change: per agent of the affected group, and to every other agent;
 *   - reconciler memory per connected idle agent, before vs after they connect, after GC: what the agents hold
 *     (V8's live heap + the C heap in use, mallinfo2: OpenSSL and nghttp2 state, Buffers), and the RSS growth,
 *     which also counts the free chunks the allocator keeps after 200 handshakes and CSRs; against the floor
 *     of as many bare node:http2 mTLS connections with one open stream each (`lib/h2-floor.ts`);
 *   - CSR signing throughput through the server (200 agents × 25 CSRs), against bare signing in-process.
 *
 * Targets (issue 10): all ACKed < 1 s at p50; < 4 KB per affected agent and 0 bytes to others;
 * < 200 KB reconciler memory per idle agent.
 */
import type { ChildProcess } from 'node:child_process';
import { workloadOf } from '../test/support/fleet-policy.ts';
import { ask, child } from './lib/ipc.ts';
import { fmt, median } from './lib/measure.ts';

const GROUPS = ['bench/g0', 'bench/g1', 'bench/g2', 'bench/g3'];
const PER_GROUP = 50;
const IDENTITIES_PER_GROUP = 25;
const CHANGES = 20;
const SIM_PROCESSES = 2;
const CSRS_PER_AGENT = 25;

/** The agent server's memory after two full GCs: RSS, V8's live heap, and the C heap in use (mallinfo2). */
interface Memory {
  rss: number;
  heapUsed: number;
  malloc: number;
}

function first<T>(p: ChildProcess): Promise<T> {
  return new Promise((resolve) => p.once('message', (m) => resolve(m as T)));
}

const percentile = (values: number[], p: number) => {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

const server = child('agents-server.ts', ['--expose-gc']);
const { addr, baseline } = await first<{ addr: string; baseline: { rss: number; heapUsed: number } }>(server);
/** Round r changes one identity in every group; `extra` changes one more identity on top. */
const spec = (round: number, extra: Record<string, string> = {}) => ({
  groups: Object.fromEntries(GROUPS.map((g) => [g, IDENTITIES_PER_GROUP])),
  tweak: {
    ...Object.fromEntries(
      GROUPS.map((_, g) => [
        workloadOf(g, round % IDENTITIES_PER_GROUP),
        `spiffe://fleet.example.org/round/${round}`,
      ]),
    ),
    ...extra,
  },
});
await ask(server, { cmd: 'publish', spec: spec(0) });
const before = await ask<Memory>(server, { cmd: 'memory' });

const { tokens } = await ask<{ tokens: Record<string, string[]> }>(server, {
  cmd: 'tokens',
  groups: GROUPS,
  perGroup: PER_GROUP,
});
const all = GROUPS.flatMap((g) => tokens[g]!);
const sims = Array.from({ length: SIM_PROCESSES }, () => child('agents-sim.ts'));
await Promise.all(sims.map((s) => first(s)));
const joinStart = performance.now();
await Promise.all(
  sims.map((s, i) => ask(s, { cmd: 'join', addr, tokens: all.filter((_, k) => k % SIM_PROCESSES === i) })),
);
const joinMs = performance.now() - joinStart;
const agentCount = all.length;

// Idle memory: every agent connected and holding its program, nothing in flight.
await new Promise((r) => setTimeout(r, 1000));
const after = await ask<Memory>(server, { cmd: 'memory' });

// Program changes that touch every group: all 200 agents must ACK.
const times: number[] = [];
for (let round = 1; round <= CHANGES; round++) {
  const r = await ask<{ ms: number; acked: number }>(server, { cmd: 'publish', spec: spec(round) });
  if (r.acked !== agentCount) throw new Error(`round ${round}: ${r.acked} of ${agentCount} agents updated`);
  times.push(r.ms);
}
const unary = await Promise.all(sims.map((s) => ask<{ ms: number }>(s, { cmd: 'unary' })));
const unaryMs = Math.max(...unary.map((u) => u.ms));

// A one-identity change to one group.
const one = await ask<{ ms: number; acked: number; bytes: { group: string; bytes: number }[] }>(server, {
  cmd: 'publish',
  spec: spec(CHANGES, { [workloadOf(0, IDENTITIES_PER_GROUP - 1)]: 'spiffe://fleet.example.org/one-more' }),
});
const affected = one.bytes.filter((b) => b.group === GROUPS[0]).map((b) => b.bytes);
const others = one.bytes.filter((b) => b.group !== GROUPS[0]).map((b) => b.bytes);

// CSR signing through the server.
const csr = await Promise.all(
  sims.map((s) =>
    ask<{ ms: number; signed: number; refused: number }>(s, { cmd: 'csr', perAgent: CSRS_PER_AGENT }),
  ),
);
const csrMs = Math.max(...csr.map((c) => c.ms));
const signed = csr.reduce((n, c) => n + c.signed, 0);
const refusedCsr = csr.reduce((n, c) => n + c.refused, 0);
const bare = await ask<{ perSecond: number }>(server, { cmd: 'sign-baseline', n: 2000 });

for (const s of sims) s.send({ cmd: 'stop' });
server.send({ cmd: 'stop' });

// The floor: the same number of idle mTLS HTTP/2 connections, one open stream each, on a bare node:http2.
const floorProcess = child('h2-floor.ts', ['--expose-gc']);
const floor = await ask<{ heapPerConnection: number; mallocPerConnection: number }>(floorProcess, {
  connections: agentCount,
});

const kb = (b: number) => fmt(b / 1024, 1);
const rssPer = (after.rss - before.rss) / agentCount;
const heapPer = (after.heapUsed - before.heapUsed) / agentCount;
const mallocPer = (after.malloc - before.malloc) / agentCount;
console.log(
  `${agentCount} simulated agents in ${GROUPS.length} daemon groups, ${SIM_PROCESSES} processes; joined in ${fmt(joinMs)} ms`,
);
console.log(
  `program change → all ${agentCount} ACKed: p50 ${fmt(median(times))} ms, p95 ${fmt(percentile(times, 95))} ms over ${CHANGES} changes ` +
    `(baseline: one bare gRPC round trip to all ${agentCount} agents ${fmt(unaryMs)} ms; ratio p50/baseline ${fmt(median(times) / unaryMs, 1)}×; target p50 < 1000 ms)`,
);
console.log(
  `one-identity change to ${GROUPS[0]}: ${affected.length} agents updated in ${fmt(one.ms)} ms, ` +
    `${fmt(Math.min(...affected))}–${fmt(Math.max(...affected))} bytes each (target < 4096); ` +
    `other ${others.length} agents: ${others.reduce((a, b) => a + b, 0)} bytes in total (target 0)`,
);
console.log(
  `reconciler memory per connected idle agent: ${kb(heapPer + mallocPer)} KB held (${kb(heapPer)} KB V8 heap + ${kb(mallocPer)} KB C heap; target < 200 KB); ` +
    `baseline: a bare node:http2 mTLS connection with one open stream holds ${kb(floor.heapPerConnection + floor.mallocPerConnection)} KB ` +
    `(${kb(floor.heapPerConnection)} + ${kb(floor.mallocPerConnection)}; ratio ${fmt((heapPer + mallocPer) / (floor.heapPerConnection + floor.mallocPerConnection), 2)}); ` +
    `RSS grew ${kb(rssPer)} KB per agent, free allocator memory included ` +
    `(process before agents: ${fmt(before.rss / 2 ** 20)} MB RSS, after: ${fmt(after.rss / 2 ** 20)} MB; start-up ${fmt(baseline.rss / 2 ** 20)} MB)`,
);
console.log(
  `CSR signing through the server: ${fmt(signed / (csrMs / 1000))} SVIDs/s (${signed} signed, ${refusedCsr} refused, ${agentCount} agents × ${CSRS_PER_AGENT}) ` +
    `vs bare signing in the server process ${fmt(bare.perSecond)} /s (ratio ${fmt(signed / (csrMs / 1000) / bare.perSecond, 2)})`,
);
