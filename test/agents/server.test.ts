/**
 * The reconciler's agent server with agents that speak the real protocol over loopback mTLS (the real join,
 * the real Sync client, the real update logic; no control interface): joining and its refusals, scope,
 * incremental pushes, ACK/NACK, hostile streams, rate limits, slow readers, resync after a restart.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyAndCsr } from '../../agent/csr.ts';
import { JoinError, joinReconciler } from '../../agent/join.ts';
import { programVersion } from '../../agent/protocol/version.ts';
import { decodeServerMessage } from '../../agent/protocol/wire.ts';
import { AgentStateDir } from '../../agent/state.ts';
import { daemonRecordFile } from '../../reconciler/agents/registry.ts';
import type { AgentStatus } from '../../reconciler/agents/server.ts';
import { main } from '../../reconciler/cli/main.ts';
import { type Fleet, grpcFrame, rawSync, startFleet } from '../support/agent-fleet.ts';
import { capture } from '../support/cli.ts';
import { FLEET_TD, spiffeOf, workloadOf } from '../support/fleet-policy.ts';
import { SimAgent } from '../support/sim-agent.ts';

const A = 'riptides/daemongroup/test/a';
const B = 'riptides/daemongroup/test/b';
const BASE = { groups: { [A]: 3, [B]: 2 } };

async function poll(cond: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('agent server', () => {
  let fleet: Fleet;
  let scratch: string;
  const agents: SimAgent[] = [];
  const status = (a: SimAgent): AgentStatus => fleet.server.agents().find((s) => s.daemonId === a.daemonId)!;
  const join_ = async (opts: { daemonGroup?: string; daemonId?: string }) => {
    const a = await SimAgent.join(fleet.addr, await fleet.token(opts), mkdtempSync(join(scratch, 'agent-')));
    agents.push(a);
    return a.start();
  };

  beforeAll(async () => {
    fleet = await startFleet();
    scratch = mkdtempSync(join(tmpdir(), 'riptides-agents-'));
    fleet.publish(BASE);
  });
  afterEach(() => {
    for (const a of agents.splice(0)) a.stop();
  });
  afterAll(async () => {
    await fleet.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  describe('joining', () => {
    it('joins with a token, gets its agent SVID, and the token is then gone', async () => {
      const dir = mkdtempSync(join(scratch, 'j-'));
      const token = await fleet.token({ daemonGroup: A, daemonId: 'node-1' });
      const a = await SimAgent.join(fleet.addr, token, dir);
      expect(a.daemonId).toBe('node-1');
      const loaded = await a.state.load();
      expect(loaded?.identity.spiffeId).toBe('spiffe://fleet.example.org/riptides/daemon/node-1');
      expect(loaded?.identity.daemonGroup).toBe(A);
      await expect(SimAgent.join(fleet.addr, token, mkdtempSync(join(scratch, 'j-')))).rejects.toThrow(
        /already used .*single-use/,
      );
    });

    it('says in one plain line that a server cannot be reached', async () => {
      const token = await fleet.token({ daemonGroup: A });
      await expect(SimAgent.join('127.0.0.1:1', token, mkdtempSync(join(scratch, 'j-')))).rejects.toThrow(
        /^cannot fetch the trust bundle from 127\.0\.0\.1:1: No connection established\. Last error: connect ECONNREFUSED 127\.0\.0\.1:1$/,
      );
    });

    it('refuses an expired, a forged, an unknown and a malformed token, each with its reason', async () => {
      const dir = () => mkdtempSync(join(scratch, 'j-'));
      const expired = await fleet.token({ daemonGroup: A, ttlSeconds: 1 });
      await new Promise((r) => setTimeout(r, 1100));
      await expect(SimAgent.join(fleet.addr, expired, dir())).rejects.toThrow(/expired at/);
      const good = await fleet.token({ daemonGroup: A });
      const [v, id, secret, pin] = good.split('.');
      const forged = [v, id, `${secret!.slice(0, -2)}xx`, pin].join('.');
      await expect(SimAgent.join(fleet.addr, forged, dir())).rejects.toThrow(/secret part is wrong/);
      const unknown = [v, 'deadbeef', secret, pin].join('.');
      await expect(SimAgent.join(fleet.addr, unknown, dir())).rejects.toThrow(/not known to this reconciler/);
      await expect(SimAgent.join(fleet.addr, 'rjt1.nonsense', dir())).rejects.toThrow(/malformed/);
      // The genuine token still works after all that.
      await expect(SimAgent.join(fleet.addr, good, dir())).resolves.toBeInstanceOf(SimAgent);
      expect(fleet.server.counters.joinsRefused).toMatchObject({ EXPIRED: 1, FORGED: 1, UNKNOWN: 1 });
    });

    it('never sends the token to a server whose bundle does not hold the pinned CA', async () => {
      const good = await fleet.token({ daemonGroup: A });
      const wrongPin = `${good.slice(0, -64)}${'0'.repeat(64)}`;
      const refusedBefore = Object.values(fleet.server.counters.joinsRefused).reduce((a, b) => a + b, 0);
      const err = await SimAgent.join(fleet.addr, wrongPin, mkdtempSync(join(scratch, 'j-'))).catch((e) => e);
      expect(err).toBeInstanceOf(JoinError);
      expect((err as JoinError).code).toBe('PIN_MISMATCH');
      // The server saw no join attempt at all: the token never left the agent.
      expect(Object.values(fleet.server.counters.joinsRefused).reduce((a, b) => a + b, 0)).toBe(
        refusedBefore,
      );
    });

    it('joins with the CA from a bundle file, still bound to the CA its token pins', async () => {
      const good = await fleet.token({ daemonGroup: A });
      const identity = await joinReconciler({
        server: fleet.addr,
        token: good,
        state: new AgentStateDir(mkdtempSync(join(scratch, 'j-'))),
        bundlePem: fleet.server.bundle().pem,
      });
      expect(identity.daemonGroup).toBe(A);
      // A token whose pin is not in the file, and a file of another reconciler's CA: refused before any
      // connection, so the token goes nowhere.
      const token = await fleet.token({ daemonGroup: A });
      const unpinned = `${token.slice(0, -64)}${'0'.repeat(64)}`;
      const other = await startFleet();
      try {
        for (const [t, pem] of [
          [unpinned, fleet.server.bundle().pem],
          [token, other.server.bundle().pem],
        ] as const) {
          const err = await joinReconciler({
            server: fleet.addr,
            token: t,
            state: new AgentStateDir(mkdtempSync(join(scratch, 'j-'))),
            bundlePem: pem,
          }).catch((e) => e);
          expect(err).toBeInstanceOf(JoinError);
          expect((err as JoinError).code).toBe('PIN_MISMATCH');
          expect((err as Error).message).toContain(
            'the --bundle file does not hold the CA the join token pins',
          );
        }
        // Unused, the token still joins.
        await joinReconciler({
          server: fleet.addr,
          token,
          state: new AgentStateDir(mkdtempSync(join(scratch, 'j-'))),
        });
      } finally {
        await other.close();
      }
    });

    it('refuses a join whose expected daemon group the token does not grant', async () => {
      const token = await fleet.token({ daemonGroup: A });
      await expect(SimAgent.join(fleet.addr, token, mkdtempSync(join(scratch, 'j-')), B)).rejects.toThrow(
        /grants daemon group riptides\/daemongroup\/test\/a, not riptides\/daemongroup\/test\/b/,
      );
    });
  });

  describe('programs', () => {
    it('gives each agent the program of its scope only', async () => {
      const a = await join_({ daemonGroup: A });
      const b = await join_({ daemonGroup: B });
      await a.until(() => a.program !== null, 10_000, 'program A');
      await b.until(() => b.program !== null, 10_000, 'program B');
      expect([...a.program!.identities.keys()]).toEqual([0, 1, 2].map((j) => spiffeOf(workloadOf(0, j))));
      expect([...b.program!.identities.keys()]).toEqual([0, 1].map((j) => spiffeOf(workloadOf(1, j))));
      await poll(() => status(a).ackedVersion === a.program!.version, 5000, 'ACK recorded');
    });

    it('sends one identity to the changed group and nothing to the other', async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      const b = await join_({ daemonGroup: B });
      await a.until(() => a.program !== null);
      await b.until(() => b.program !== null);
      await poll(
        () => status(a).ackedVersion === a.program!.version && status(b).ackedVersion === b.program!.version,
      );
      const [bytesA, bytesB, updatesB] = [
        status(a).counters.bytesSent,
        status(b).counters.bytesSent,
        b.updates.length,
      ];
      const summary = fleet.publish({
        ...BASE,
        tweak: { [workloadOf(0, 1)]: 'spiffe://fleet.example.org/extra' },
      });
      expect(summary.agentsToUpdate).toBe(1);
      await a.until(() => a.updates.length === 2, 10_000, 'the delta');
      const delta = a.updates[1]!;
      expect(delta.full).toBe(false);
      expect(delta.identities.map((i) => i.spiffeId)).toEqual([spiffeOf(workloadOf(0, 1))]);
      expect(delta.rules).toEqual([]);
      expect(delta.removedIdentities).toEqual([]);
      await poll(() => status(a).ackedVersion === a.program!.version, 5000, 'ACK of the delta');
      const sentA = status(a).counters.bytesSent - bytesA;
      expect(sentA).toBeGreaterThan(0);
      expect(sentA).toBeLessThan(4096);
      expect(status(b).counters.bytesSent).toBe(bytesB);
      expect(b.updates).toHaveLength(updatesB);
    });

    it('keeps the previous program after a NACK, reports it, and delivers the next version', async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null);
      const kept = a.program!.version;
      await poll(() => status(a).ackedVersion === kept);
      a.refuseWith = { code: 'CONTROL_REFUSED', message: 'the kernel side refused the table', hint: '' };
      fleet.publish({ ...BASE, tweak: { [workloadOf(0, 0)]: 'spiffe://fleet.example.org/n1' } });
      await a.until(() => a.nacks.length === 1, 10_000, 'NACK');
      await poll(() => status(a).nack !== null, 5000, 'NACK recorded');
      expect(status(a).ackedVersion).toBe(kept);
      expect(status(a).nack).toMatchObject({ kept, error: { code: 'CONTROL_REFUSED' } });
      expect(a.program!.version).toBe(kept);
      // The NACKed version is not pushed again; a new version is.
      a.refuseWith = null;
      await new Promise((r) => setTimeout(r, 200));
      expect(a.updates).toHaveLength(2);
      fleet.publish({ ...BASE, tweak: { [workloadOf(0, 0)]: 'spiffe://fleet.example.org/n2' } });
      await a.until(() => a.program!.version !== kept, 10_000, 'the next version');
      await poll(() => status(a).ackedVersion === a.program!.version && status(a).nack === null);
    });

    it('resyncs after a reconciler restart with only what changed meanwhile', async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null);
      await poll(() => status(a).ackedVersion === a.program!.version);
      const before = a.program!.version;
      await fleet.restart();
      await a.until(() => !a.connected, 10_000, 'disconnect');
      // While the reconciler was away the agent kept its program.
      expect(a.program!.version).toBe(before);
      fleet.publish({ ...BASE, tweak: { [workloadOf(0, 2)]: 'spiffe://fleet.example.org/after-restart' } });
      await a.until(() => a.program!.version !== before, 15_000, 'resync');
      const last = a.updates.at(-1)!;
      expect(last.full).toBe(false);
      expect(last.identities.map((i) => i.spiffeId)).toEqual([spiffeOf(workloadOf(0, 2))]);
    });
  });

  describe('SVIDs and scope', () => {
    it("signs CSRs for identities in the agent's program and refuses any other", async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null);
      const mine = spiffeOf(workloadOf(0, 0));
      const theirs = spiffeOf(workloadOf(1, 0));
      const ask = async (requestId: string, spiffeId: string, csrFor = spiffeId) => {
        const { csrDer } = await generateKeyAndCsr(csrFor);
        a.client.send({ svidRequest: { requestId, spiffeId, csrDer } });
      };
      await ask('mine', mine);
      await ask('theirs', theirs);
      await ask('smuggled', mine, theirs);
      // The reconciler's and other agents' own IDs are never signed for an agent, whatever a program says.
      await ask('reconciler', 'spiffe://fleet.example.org/riptides/reconciler');
      await ask('other-agent', 'spiffe://fleet.example.org/riptides/daemon/someone-else');
      await a.until(() => a.svids.length === 1 && a.refusals.length === 4, 10_000, 'answers');
      expect(a.svids[0]).toMatchObject({ requestId: 'mine', spiffeId: mine });
      const byId = Object.fromEntries(a.refusals.map((r) => [r.requestId, r.error]));
      expect(byId.theirs).toMatchObject({ code: 'OUT_OF_SCOPE' });
      expect(byId.theirs?.message).toContain('not in the program of daemon');
      expect(byId.smuggled).toMatchObject({ code: 'CSR_REFUSED' });
      expect(byId.smuggled?.message).toContain(`the CSR carries ${theirs}`);
      expect(byId.reconciler?.message).toContain("is reserved for the reconciler's own identity");
      expect(byId['other-agent']?.message).toContain("is reserved for agents' own identities");
    });

    it("never gives an agent another group's program, whatever it claims in its Hello", async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null);
      a.stop();
      const theirs = spiffeOf(workloadOf(1, 0));
      const raw = rawSync(fleet.addr, a.channel);
      raw.send({
        hello: {
          protocolVersion: 1,
          // A claim that is self-consistent (anyone can compute the version of what they claim).
          programVersion: programVersion(FLEET_TD, [[theirs, 'stale']]),
          identityVersions: { [theirs]: 'stale' },
          ruleHashes: [],
        },
      });
      await poll(
        () => raw.received().some((m) => decodeServerMessage(m).kind === 'program'),
        10_000,
        'update',
      );
      const update = raw
        .received()
        .map(decodeServerMessage)
        .find((m) => m.kind === 'program')!.program!;
      expect(update.identities.every((i) => i.spiffeId.includes('/g0/'))).toBe(true);
      // The only mention of group 1 is the order to drop what it claimed.
      expect(update.removedIdentities).toEqual([theirs]);
      expect(JSON.stringify({ ...update, removedIdentities: [] })).not.toContain('/g1/');
      // Nor is its claim believed for status: a report of processes under another group's identity is refused.
      raw.send({
        report: {
          programVersion: '',
          identities: [{ spiffeId: theirs, svidSerial: '', svidNotAfterUnix: 0, processCount: 7, hash: '' }],
          atUnixMs: Date.now(),
        },
      });
      await poll(
        () =>
          raw
            .received()
            .map(decodeServerMessage)
            .some((m) => m.kind === 'refusal' && m.refusal?.error?.code === 'UNKNOWN_IDENTITY'),
        10_000,
        'the refusal of the report',
      );
      expect(status(a).report?.identities.some((i) => i.spiffeId === theirs) ?? false).toBe(false);
      raw.close();
    });

    it('rate-limits CSRs per agent', async () => {
      await fleet.restart({ csrPerSecond: 5 });
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null);
      const { csrDer } = await generateKeyAndCsr(spiffeOf(workloadOf(0, 0)));
      for (let i = 0; i < 20; i++)
        a.client.send({ svidRequest: { requestId: `r${i}`, spiffeId: spiffeOf(workloadOf(0, 0)), csrDer } });
      await a.until(() => a.svids.length + a.refusals.length === 20, 15_000, '20 answers');
      const limited = a.refusals.filter((r) => r.error?.code === 'RATE_LIMITED');
      expect(a.svids.length).toBeGreaterThanOrEqual(5);
      expect(a.svids.length).toBeLessThan(10);
      expect(limited.length).toBe(20 - a.svids.length);
      await fleet.restart();
      fleet.publish(BASE);
    });

    it('evicts a daemon (riptides-cli daemon evict): its live stream ends, and every later one is refused', async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null && a.connected);
      const refused: string[] = [];
      const onRefused = (e: { kind: string; error: { code: string } }) => {
        if (e.kind === 'sync') refused.push(e.error.code);
      };
      fleet.server.on('refused', onRefused);
      try {
        const c = capture(scratch);
        const state = join(fleet.dir, 'state');
        const recordFile = daemonRecordFile(join(state, 'daemons'), a.daemonId);
        const recordText = readFileSync(recordFile, 'utf8');
        expect(await main(['daemon', 'evict', a.daemonId, '--state-dir', state], c.io)).toBe(0);
        expect(c.stdout).toBe(
          `evicted daemon spiffe://${FLEET_TD}/riptides/daemon/${a.daemonId} (daemon group ${A})\n`,
        );
        await poll(() => refused.includes('NOT_REGISTERED'), 15_000, 'a reconnect refused');
        expect(a.connected).toBe(false);
        expect(fleet.server.agents().some((s) => s.daemonId === a.daemonId && s.connected)).toBe(false);
        const again = capture(scratch);
        expect(await main(['daemon', 'evict', a.daemonId, '--state-dir', state], again.io)).toBe(2);
        expect(again.stderr).toContain(`no daemon ${a.daemonId} is registered`);
        expect(fleet.server.agents().some((s) => s.daemonId === a.daemonId)).toBe(false);

        // A renewal that was under way when it was evicted writes its record back: still evicted, after a
        // restart of the reconciler too.
        writeFileSync(recordFile, recordText);
        await fleet.restart();
        fleet.server.on('refused', onRefused);
        fleet.publish(BASE);
        refused.length = 0;
        await poll(() => refused.includes('NOT_REGISTERED'), 15_000, 'refused after the restart');
        expect(fleet.server.agents().some((s) => s.daemonId === a.daemonId)).toBe(false);

        // The same daemon ID joins again, with no group: the evicted node's SVID, still valid, does not
        // let it back in, and the new registration holds nothing of the old one's group.
        const b = await SimAgent.join(
          fleet.addr,
          await fleet.token({ daemonId: a.daemonId }),
          mkdtempSync(join(scratch, 'agent-')),
        );
        agents.push(b);
        b.start();
        await b.until(() => b.program !== null && b.connected, 15_000, 'the new registration');
        expect(b.program!.identities.size).toBe(0);
        refused.length = 0;
        a.start();
        await poll(() => refused.includes('NOT_REGISTERED'), 15_000, 'the evicted SVID refused');
        expect(a.connected).toBe(false);
        const now = fleet.server.agents().find((s) => s.daemonId === a.daemonId)!;
        expect(now).toMatchObject({ daemonGroup: null, connected: true });
      } finally {
        fleet.server.off('refused', onRefused);
        a.stop();
      }
    });

    it('evicts a daemon whose record an operator removed by hand, at once', async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null && a.connected);
      try {
        rmSync(daemonRecordFile(join(fleet.dir, 'state', 'daemons'), a.daemonId));
        // Its stream ends, and its reconnects are refused: it stays off (and out of the daemons listed).
        await poll(() => !a.connected, 15_000, 'the stream ended');
        await new Promise((r) => setTimeout(r, 1500));
        expect(a.connected).toBe(false);
        expect(fleet.server.agents().some((s) => s.daemonId === a.daemonId)).toBe(false);
      } finally {
        a.stop();
      }
    });

    it('two nodes sharing one identity replace each other ever more slowly: the backoff grows', async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null && a.connected);
      a.stop();
      const copy = mkdtempSync(join(scratch, 'clone-'));
      cpSync(a.state.dir, copy, { recursive: true });
      let connects = 0;
      const onConnected = (s: AgentStatus) => {
        if (s.daemonId === a.daemonId) connects++;
      };
      fleet.server.on('connected', onConnected);
      // The longest wait every time (no jitter), so the count does not depend on luck.
      const backoff = { initialMs: 100, maxMs: 1000, random: () => 1 };
      const one = (await SimAgent.open(fleet.addr, a.state.dir)).start(backoff);
      const two = (await SimAgent.open(fleet.addr, copy)).start(backoff);
      try {
        await new Promise((r) => setTimeout(r, 4000));
        // Waits of 0.1, 0.2, 0.4, 0.8, then 1 s each: about 8 streams per node in 4 s. A backoff reset on
        // every accepted stream reconnects every 0.1 s: dozens.
        expect(connects).toBeGreaterThan(2);
        expect(connects).toBeLessThanOrEqual(20);
      } finally {
        fleet.server.off('connected', onConnected);
        one.stop();
        two.stop();
      }
    });

    it('keeps one CSR budget per agent across its streams: reconnecting does not refill it', async () => {
      await fleet.restart({ csrPerSecond: 2 });
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null);
      const { csrDer } = await generateKeyAndCsr(spiffeOf(workloadOf(0, 0)));
      const started = performance.now();
      let sent = 0;
      for (let cycle = 0; cycle < 5; cycle++) {
        if (cycle > 0) {
          a.stop();
          a.start();
        }
        await a.until(() => a.connected, 10_000, 'connected');
        for (let i = 0; i < 10; i++, sent++)
          a.client.send({
            svidRequest: { requestId: `c${sent}`, spiffeId: spiffeOf(workloadOf(0, 0)), csrDer },
          });
        await a.until(() => a.svids.length + a.refusals.length === sent, 15_000, `${sent} answers`);
      }
      const seconds = (performance.now() - started) / 1000;
      // The burst (2) and what 2/s refills in the time taken; a budget per stream would give at least 10.
      expect(a.svids.length).toBeLessThanOrEqual(2 + Math.ceil(2 * seconds));
      expect(a.refusals.filter((r) => r.error?.code === 'RATE_LIMITED')).toHaveLength(sent - a.svids.length);
      await fleet.restart();
      fleet.publish(BASE);
    });
  });

  describe('hostile streams', () => {
    it('refuses malformed and out-of-protocol messages with a reason, counts them, and changes nothing', async () => {
      fleet.publish(BASE);
      const a = await join_({ daemonGroup: A });
      await a.until(() => a.program !== null);
      await poll(() => status(a).ackedVersion === a.program!.version);
      const acked = status(a).ackedVersion;
      a.stop();
      const counted = () => ({ ...fleet.server.counters.messagesRefused });
      const before = counted();

      // A stale ACK, a report naming an identity outside the program, an oversized CSR.
      const raw = rawSync(fleet.addr, a.channel);
      raw.send({
        hello: {
          protocolVersion: 1,
          programVersion: a.program!.version,
          identityVersions: Object.fromEntries(
            [...a.program!.identities.values()].map((i) => [i.spiffeId, i.hash]),
          ),
          ruleHashes: [...a.program!.rules.keys()],
        },
      });
      raw.send({ ack: { responseNonce: 'not-in-flight', versionInfo: 'x' } });
      raw.send({ report: { programVersion: 'x', identities: [{ spiffeId: spiffeOf(workloadOf(1, 0)) }] } });
      raw.send({
        svidRequest: {
          requestId: 'big',
          spiffeId: spiffeOf(workloadOf(0, 0)),
          csrDer: Buffer.alloc(20_000, 1),
        },
      });
      await poll(() => raw.received().filter((m) => decodeServerMessage(m).kind === 'refusal').length === 3);
      const refusals = raw
        .received()
        .map(decodeServerMessage)
        .filter((m) => m.kind === 'refusal');
      expect(refusals.map((r) => r.refusal?.error?.code)).toEqual([
        'STALE_NONCE',
        'UNKNOWN_IDENTITY',
        'INVALID',
      ]);
      expect(status(a).report?.identities.some((i) => i.spiffeId.includes('/g1/')) ?? false).toBe(false);

      // Bytes that are not the protocol end the stream with a reason.
      raw.sendBytes(grpcFrame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])));
      const ended = await raw.status;
      expect(ended.code).toBe(3); // INVALID_ARGUMENT, with the decoder's reason
      expect(ended.message).toMatch(/^malformed message refused: /);
      expect(fleet.server.counters.malformed).toBeGreaterThanOrEqual(1);
      raw.close();
      // The same on the calls anyone may make before joining.
      for (const method of ['Join', 'GetTrustBundle'] as const) {
        const anon = rawSync(fleet.addr, { bundlePem: a.channel.bundlePem }, method);
        anon.sendBytes(grpcFrame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])));
        anon.stream.end();
        const s = await anon.status;
        expect({ method, code: s.code }).toEqual({ method, code: 3 });
        expect(s.message).toMatch(/^malformed message refused: /);
        anon.close();
      }

      // A wrong protocol version is refused before anything is sent.
      const old = rawSync(fleet.addr, a.channel);
      old.send({ hello: { protocolVersion: 2 } });
      const s = await old.status;
      expect(s.code).toBe(9); // FAILED_PRECONDITION
      expect(s.message).toContain('protocol version 2 is not supported');
      old.close();

      const after = counted();
      expect((after.STALE_NONCE ?? 0) - (before.STALE_NONCE ?? 0)).toBe(1);
      expect((after.UNKNOWN_IDENTITY ?? 0) - (before.UNKNOWN_IDENTITY ?? 0)).toBe(1);
      expect((after.PROTOCOL_VERSION ?? 0) - (before.PROTOCOL_VERSION ?? 0)).toBe(1);
      expect(status(a).ackedVersion).toBe(acked);
    });

    it('refuses a Sync stream without an agent SVID', async () => {
      const raw = rawSync(fleet.addr, { bundlePem: fleet.server.bundle().pem });
      raw.send({ hello: { protocolVersion: 1 } });
      const s = await raw.status;
      expect(s.code).toBe(16); // UNAUTHENTICATED
      expect(s.message).toContain('join first');
      raw.close();
    });

    it('when several agents want an update at once, past the send budget they wait their turn, and every one gets it', async () => {
      // A budget of one byte: one update at a time across all agents.
      await fleet.restart({ sendBudgetBytes: 1 });
      fleet.publish(BASE);
      const group: SimAgent[] = [];
      for (let i = 0; i < 4; i++) group.push(await join_({ daemonGroup: A }));
      for (const a of group) await a.until(() => a.program !== null);
      const versions = group.map((a) => a.program!.version);
      // Every ACK is in (no update in flight anywhere), so the next publish finds all four idle.
      await poll(() => group.every((a, i) => status(a).ackedVersion === versions[i]), 10_000, 'the ACKs');
      fleet.publish({ ...BASE, tweak: { [workloadOf(0, 0)]: 'spiffe://fleet.example.org/budgeted' } });
      // publish() asked all four at once: one update was written, three wait for it to drain.
      expect(fleet.server.sendBudget.waiting).toBe(3);
      expect(fleet.server.sendBudget.inFlightBytes).toBeGreaterThan(0);
      for (const [i, a] of group.entries())
        await a.until(() => a.program!.version !== versions[i], 10_000, `agent ${i}'s update`);
      await poll(() => fleet.server.sendBudget.inFlightBytes === 0, 5_000, 'the budget to drain');
      expect(fleet.server.sendBudget.waiting).toBe(0);
      await fleet.restart();
      fleet.publish(BASE);
    });

    it('an agent that never takes its program update loses its share of the send budget at the drain deadline', async () => {
      // One update at a time, and programs far larger than an HTTP/2 flow-control window.
      await fleet.restart({ sendBudgetBytes: 1, programDrainMs: 500 });
      const big = { groups: { [A]: 2000 } };
      fleet.publish(big);
      const stuck = await join_({ daemonGroup: A });
      await stuck.until(() => stuck.program !== null, 20_000, 'the first program');
      stuck.stop();
      // The same daemon comes back and says Hello, but never reads: its program is written and never taken.
      const raw = rawSync(fleet.addr, stuck.channel);
      raw.send({ hello: { protocolVersion: 1 } });
      raw.stream.pause();
      await poll(() => fleet.server.sendBudget.inFlightBytes > 0, 10_000, 'the stuck update');
      // Another agent's program waits behind it, and gets it once the stuck stream is ended.
      const other = await join_({ daemonGroup: A });
      await other.until(() => other.program !== null, 20_000, "the other agent's program");
      // Ended by the deadline (its status trailer sits behind the data it does not read).
      expect(status(stuck).connected).toBe(false);
      raw.close();
      await fleet.restart();
      fleet.publish(BASE);
    });

    it('cuts off an agent that stops reading, without holding up the others', async () => {
      await fleet.restart({ sendQueueBytes: 128 * 1024 });
      fleet.publish(BASE);
      const slow = await join_({ daemonGroup: A });
      const other = await join_({ daemonGroup: A });
      await slow.until(() => slow.program !== null);
      await other.until(() => other.program !== null);
      slow.stop();
      const raw = rawSync(fleet.addr, slow.channel);
      raw.send({ hello: { protocolVersion: 1 } });
      raw.stream.pause();
      const bad = {
        svidRequest: {
          requestId: 'x',
          spiffeId: spiffeOf(workloadOf(1, 0)).padEnd(1800, 'x'),
          csrDer: Buffer.alloc(4000, 1),
        },
      };
      let cut = false;
      void raw.status.then(() => {
        cut = true;
      });
      for (let i = 0; i < 400 && !cut; i++) {
        for (let k = 0; k < 20; k++) raw.send(bad);
        await new Promise((r) => setTimeout(r, 10));
        if (!status(slow).connected && i > 0) break;
      }
      await poll(() => !status(slow).connected, 10_000, 'the slow agent to be cut off');
      const version = other.program!.version;
      fleet.publish({ ...BASE, tweak: { [workloadOf(0, 0)]: 'spiffe://fleet.example.org/while-slow' } });
      await other.until(() => other.program!.version !== version, 10_000, "the other agent's update");
      raw.close();
      await fleet.restart();
      fleet.publish(BASE);
    });
  });
});
