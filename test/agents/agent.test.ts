/**
 * The agent in-process against an agent server on loopback: what it reports is the truth of its node (SVID
 * serials and expiry, attested processes, credential versions and fingerprints, control-interface health
 * and drift), and it renews its own SVID at half its life without dropping its identity.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../agent/agent.ts';
import { svidFacts } from '../../agent/state.ts';
import { CredentialManager } from '../../reconciler/credentials/manager.ts';
import { type Fleet, startFleet } from '../support/agent-fleet.ts';
import { eventually } from '../support/cli-process.ts';
import { FLEET_TD, spiffeOf, workloadOf, writeSecret } from '../support/fleet-policy.ts';
import { copyBinary, start, uniqueName } from '../support/processes.ts';

const A = 'riptides/daemongroup/agent/a';
const SECRET = 'agent-test-secret-5d8e2a7c1b9f';

describe('agent', () => {
  let fleet: Fleet;
  let dir: string;
  let secrets: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'riptides-agent-'));
    secrets = join(dir, 'secrets');
    writeSecret(secrets, 'agent-token', SECRET);
    fleet = await startFleet({
      agentSvidTtlSeconds: 8,
      credentialManager: (authority) =>
        new CredentialManager({ minter: authority.jwt, trustDomain: FLEET_TD, secretsDir: secrets }),
    });
  });
  afterAll(async () => {
    await fleet.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports SVIDs, processes, credentials by fingerprint, health and hand edits as drift', async () => {
    const name = uniqueName('rtg');
    const bin = copyBinary(name);
    fleet.publish({
      groups: { [A]: 2 },
      selectors: { [workloadOf(0, 0)]: { 'process:name': name } },
      credentials: { [workloadOf(0, 0)]: 'agent-token' },
    });
    const agent = await Agent.start({
      stateDir: join(dir, 'a1'),
      server: fleet.addr,
      joinToken: await fleet.token({ daemonGroup: A }),
      reportIntervalMs: 300,
    });
    try {
      const proc = start(bin);
      const id = spiffeOf(workloadOf(0, 0));
      const status = () => fleet.server.agents().find((s) => s.daemonId === agent.identity.daemonId)!;
      const report = await eventually(
        () => {
          const r = status().report;
          const mine = r?.identities.find((i) => i.spiffeId === id);
          return mine?.svidSerial && r?.credentials.length ? r : undefined;
        },
        20_000,
        'a report with the SVID and the credential',
      );
      const installed = await agent.node.reader.svid(id);
      expect(report.programVersion).toBe(agent.program!.version);
      expect(report.identities.find((i) => i.spiffeId === id)).toMatchObject({
        svidSerial: installed!.serial,
        processCount: 1,
      });
      expect(report.identities.find((i) => i.spiffeId === spiffeOf(workloadOf(0, 1)))).toMatchObject({
        svidSerial: '',
        processCount: 0,
      });
      expect(report.processes).toContainEqual({ pid: proc.pid, spiffeId: id, conflicts: [] });
      expect(report.credentials[0]).toMatchObject({
        version: 1,
        fingerprint: expect.stringMatching(/^hmac-sha256:[0-9a-f]{16}$/),
      });
      expect(report.control).toMatchObject({
        health: 'OK',
        enforcedVersion: agent.program!.version,
        drift: [],
      });
      expect(JSON.stringify(report)).not.toContain(SECRET);

      // A hand edit of the control interface shows up in the next report.
      const bundle = join(agent.node.writer.root, 'certs', 'ca-certificates.crt');
      writeFileSync(bundle, `${readFileSync(bundle, 'utf8')}\n# hand edit\n`);
      await eventually(
        () => status().report?.control?.drift.includes('changed certs/ca-certificates.crt'),
        20_000,
        'drift reported',
      );
    } finally {
      await agent.stop();
    }
  });

  it('renews its agent SVID at half its life, over the stream, and stays connected as itself', async () => {
    fleet.publish({ groups: { [A]: 1 } });
    const stateDir = join(dir, 'a2');
    const agent = await Agent.start({
      stateDir,
      server: fleet.addr,
      joinToken: await fleet.token({ daemonGroup: A }),
    });
    try {
      const first = svidFacts(readFileSync(join(stateDir, 'agent.crt'), 'utf8'));
      expect(first.notAfter.getTime() - first.notBefore.getTime()).toBeLessThanOrEqual(20_000);
      const renewed = await eventually(
        () => {
          const now = svidFacts(readFileSync(join(stateDir, 'agent.crt'), 'utf8'));
          return now.serial !== first.serial ? now : undefined;
        },
        20_000,
        'a renewed agent SVID',
      );
      expect(renewed.uris).toEqual(first.uris);
      // It reconnects with the new SVID, which its registration now accepts (it is bound to the serials
      // issued to it), and is never refused.
      await eventually(
        () => {
          const s = fleet.server.agents().find((x) => x.daemonId === agent.identity.daemonId);
          return s?.connected && Date.parse(s.connectedAt!) >= renewed.notBefore.getTime() ? s : undefined;
        },
        15_000,
        'connected again after the renewal',
      );
      await new Promise((r) => setTimeout(r, 1000));
      expect(agent.connected).toBe(true);
      expect(fleet.server.counters.syncRefused).toEqual({});
    } finally {
      await agent.stop();
    }
  });
});
