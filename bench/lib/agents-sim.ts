/**
 * Simulated agents for the agents benchmark: each joins with its own token and holds its own mTLS Sync
 * stream (the real join, Sync client and update logic; no control interface), ACKing what it applies.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifiedClient } from '../../agent/connection.ts';
import { generateKeyAndCsr } from '../../agent/csr.ts';
import { SimAgent } from '../../test/support/sim-agent.ts';

type Command =
  | { cmd: 'join'; addr: string; tokens: string[] }
  | { cmd: 'unary'; id: number }
  | { cmd: 'csr'; perAgent: number; id: number }
  | { cmd: 'report'; id: number; driftEvery: number; staleEvery: number }
  | { cmd: 'stop' };

const send = (m: unknown) => process.send!(m);
const dir = mkdtempSync(join(tmpdir(), 'riptides-bench-agents-'));
let agents: SimAgent[] = [];

process.on('message', async (m: Command) => {
  if (m.cmd === 'join') {
    // A few joins at a time, as a fleet coming up would.
    const queue = [...m.tokens.entries()];
    const joined: SimAgent[] = [];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let next = queue.shift(); next; next = queue.shift()) {
          const [i, token] = next;
          joined.push(await SimAgent.join(m.addr, token, join(dir, `a${i}`)));
        }
      }),
    );
    agents = joined.map((a) => a.start());
    await Promise.all(agents.map((a) => a.until(() => a.program !== null, 60_000, 'first program')));
    send({ joined: agents.length });
  } else if (m.cmd === 'unary') {
    // The floor: one bare gRPC round trip per agent over warm connections of its own.
    const clients = agents.map((a) => verifiedClient(a.server, a.channel));
    const call = (c: ReturnType<typeof verifiedClient>) =>
      new Promise<void>((resolve, reject) =>
        c.GetTrustBundle({}, { deadline: Date.now() + 30_000 }, (err) => (err ? reject(err) : resolve())),
      );
    await Promise.all(clients.map(call));
    const start = performance.now();
    await Promise.all(clients.map(call));
    const ms = performance.now() - start;
    for (const c of clients) c.close();
    send({ id: m.id, ms });
  } else if (m.cmd === 'csr') {
    const csrs = await Promise.all(
      agents.map(async (a) => {
        const id = [...a.program!.identities.keys()][0]!;
        return { id, csrDer: (await generateKeyAndCsr(id)).csrDer };
      }),
    );
    const before = agents.map((a) => a.svids.length + a.refusals.length);
    const start = performance.now();
    agents.forEach((a, i) => {
      for (let k = 0; k < m.perAgent; k++)
        a.client.send({
          svidRequest: { requestId: `b${k}`, spiffeId: csrs[i]!.id, csrDer: csrs[i]!.csrDer },
        });
    });
    await Promise.all(
      agents.map((a, i) =>
        a.until(() => a.svids.length + a.refusals.length >= before[i]! + m.perAgent, 120_000),
      ),
    );
    const ms = performance.now() - start;
    send({
      id: m.id,
      ms,
      signed: agents.reduce((n, a) => n + a.svids.length, 0),
      refused: agents.reduce((n, a) => n + a.refusals.length, 0),
    });
  } else if (m.cmd === 'report') {
    // Each agent reports its node as a real agent would: the program's identities with SVIDs and processes;
    // every driftEvery-th agent with two hand edits, every staleEvery-th with an SVID expiring within minutes.
    const now = Math.floor(Date.now() / 1000);
    let sent = 0;
    agents.forEach((a, i) => {
      const p = a.program!;
      const ids = [...p.identities.values()];
      const ok = a.report({
        programVersion: p.version,
        identities: ids.map((id, k) => ({
          spiffeId: id.spiffeId,
          hash: id.hash,
          svidSerial: `${i.toString(16)}${k.toString(16).padStart(4, '0')}`,
          svidNotAfterUnix: now + (k === 0 && i % m.staleEvery === 0 ? 60 : 3000),
          processCount: 1,
        })),
        credentials: [],
        processes: ids.map((id, k) => ({ pid: 1000 + k, spiffeId: id.spiffeId, conflicts: [] })),
        control: {
          health: 'OK',
          enforcedVersion: p.version,
          enforcedGeneration: 7,
          error: '',
          drift: i % m.driftEvery === 0 ? ['changed rules', 'changed certs/ca-certificates.crt'] : [],
        },
        atUnixMs: Date.now(),
      });
      if (ok) sent++;
    });
    send({ id: m.id, sent });
  } else if (m.cmd === 'stop') {
    for (const a of agents) a.stop();
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  }
});

send({ ready: true });
