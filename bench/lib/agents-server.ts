/**
 * The reconciler side of the agents benchmark, in its own process (so its memory is its own): an agent
 * server on loopback driven over IPC by bench/agents.bench.ts.
 */

import { generateKeyAndCsr } from '../../reconciler/identity/authority.ts';
import { startFleet } from '../../test/support/agent-fleet.ts';
import type { FleetSpec } from '../../test/support/fleet-policy.ts';
import { mallocInUse } from './malloc.ts';

type Command =
  | { cmd: 'tokens'; groups: string[]; perGroup: number }
  | { cmd: 'publish'; spec: FleetSpec; id: number }
  | { cmd: 'memory'; id: number }
  | { cmd: 'sign-baseline'; n: number; id: number }
  | { cmd: 'stop' };

const send = (m: unknown) => process.send!(m);

const fleet = await startFleet({ csrPerSecond: 500 });
let acks: Array<(daemonId: string, version: string) => void> = [];
fleet.server.on('ack', (status: { daemonId: string }, version: string) => {
  for (const f of acks) f(status.daemonId, version);
});

function memory() {
  (globalThis as { gc?: () => void }).gc?.();
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    malloc: mallocInUse(),
    external: m.external,
    arrayBuffers: m.arrayBuffers,
  };
}

process.on('message', async (m: Command) => {
  if (m.cmd === 'tokens') {
    const tokens: Record<string, string[]> = {};
    for (const g of m.groups) {
      tokens[g] = [];
      for (let i = 0; i < m.perGroup; i++) tokens[g].push(await fleet.token({ daemonGroup: g }));
    }
    send({ tokens });
  } else if (m.cmd === 'publish') {
    const before = new Map(fleet.server.agents().map((s) => [s.daemonId, s.counters.bytesSent]));
    const start = performance.now();
    const waiting = new Set<string>();
    let target = new Map<string, string>();
    const done = new Promise<void>((resolve) => {
      acks.push((id, version) => {
        if (target.get(id) === version) waiting.delete(id);
        if (waiting.size === 0) resolve();
      });
    });
    const summary = fleet.publish(m.spec);
    const published = performance.now();
    target = new Map(
      fleet.server
        .agents()
        .filter((s) => s.connected && s.desiredVersion !== s.ackedVersion)
        .map((s) => [s.daemonId, s.desiredVersion]),
    );
    for (const id of target.keys()) waiting.add(id);
    if (waiting.size > 0) await done;
    const end = performance.now();
    acks = [];
    // Bytes are counted once the last ACK is in, so every update sent for this change is included.
    const bytes = fleet.server.agents().map((s) => ({
      daemonId: s.daemonId,
      group: s.daemonGroup,
      bytes: s.counters.bytesSent - (before.get(s.daemonId) ?? 0),
    }));
    send({
      id: m.id,
      ms: end - start,
      publishMs: published - start,
      agentsToUpdate: summary.agentsToUpdate,
      acked: target.size,
      bytes,
    });
  } else if (m.cmd === 'memory') {
    send({ id: m.id, ...memory(), agents: fleet.server.agents().filter((s) => s.connected).length });
  } else if (m.cmd === 'sign-baseline') {
    const csrs = await Promise.all(
      Array.from({ length: 50 }, (_, i) => generateKeyAndCsr(`spiffe://fleet.example.org/bench/w${i}`)),
    );
    const start = performance.now();
    for (let i = 0; i < m.n; i++)
      await fleet.authority.signX509Svid({ csrPem: csrs[i % csrs.length]!.csrPem });
    send({ id: m.id, perSecond: m.n / ((performance.now() - start) / 1000) });
  } else if (m.cmd === 'stop') {
    await fleet.close();
    process.exit(0);
  }
});

send({ ready: true, addr: fleet.addr, baseline: memory() });
