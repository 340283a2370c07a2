/**
 * startNode, the library entry point `riptides-cli agent` and `up` run: an agent, its kernel side and the data
 * plane in one process against an agent server on loopback. What an embedder relies on: the bound addresses,
 * a client process attested by name getting mTLS to a fronted workload and its credential injected, the
 * data plane following credential rotations and program changes without a restart, its state in the agent's
 * reports, the metrics endpoint behind its credential, and stop() closing everything.
 */
import { execFile, execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningNode, startNode } from '../../agent/start-node.ts';
import { CredentialManager } from '../../reconciler/credentials/manager.ts';
import { type Fleet, startFleet } from '../support/agent-fleet.ts';
import { eventually } from '../support/cli-process.ts';
import { FLEET_TD, renderFleet, writeSecret } from '../support/fleet-policy.ts';
import { copyBinary, start, uniqueName } from '../support/processes.ts';
import { parsePrometheus } from '../support/prometheus.ts';

const run = promisify(execFile);
const GROUP = 'riptides/daemongroup/node/a';
const CLIENT = `spiffe://${FLEET_TD}/node/client`;
const API = `spiffe://${FLEET_TD}/node/api`;
const TOKEN_ONE = 'start-node-token-one-3f9a7c2e1b';
const TOKEN_TWO = 'start-node-token-two-8d4b6a0f5e';

function listen(server: Server): Promise<number> {
  return new Promise((r) =>
    server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)),
  );
}

/** The policy: `client` (by process name) → MUTUAL to `api` at apiPort, and a Bearer token toward upstreamPort. */
function policy(
  dir: string,
  o: { clientName: string; apiName: string; apiPort: number; upstreamPort: number; bind: boolean },
) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'riptides.config.yaml'), `trustDomain: ${FLEET_TD}\n`);
  const scope = `scope: { daemonGroup: { id: ${JSON.stringify(GROUP)} } }`;
  const docs = [
    `kind: Service\nmetadata: { name: api, namespace: riptides-system }\nspec: { addresses: [{ address: 127.0.0.1, port: ${o.apiPort} }], labels: { svc: api } }`,
    `kind: Service\nmetadata: { name: upstream, namespace: riptides-system }\nspec: { addresses: [{ address: 127.0.0.1, port: ${o.upstreamPort} }], labels: { svc: upstream } }`,
    `kind: WorkloadIdentity\nmetadata: { name: api, namespace: riptides-system }\nspec:\n  workloadID: node/api\n  ${scope}\n  selectors: [{ "process:name": ${JSON.stringify(o.apiName)} }]\n  connection: { tls: { mode: MUTUAL } }\n  allowedSPIFFEIDs: { inbound: [${JSON.stringify(CLIENT)}] }`,
    `kind: WorkloadIdentity\nmetadata: { name: client, namespace: riptides-system }\nspec:\n  workloadID: node/client\n  ${scope}\n  selectors: [{ "process:name": ${JSON.stringify(o.clientName)} }]\n  egress: [{ selectors: [{ svc: api }], connection: { tls: { mode: MUTUAL } } }]`,
    ...(o.bind
      ? [
          'kind: CredentialSource\nmetadata: { name: upstream-token, namespace: riptides-system }\nspec: { kubernetes: { type: BearerToken, secretRef: { name: upstream-token, key: token } } }',
          'kind: CredentialBinding\nmetadata: { name: client-upstream, namespace: riptides-system }\nspec: { workloadID: node/client, credentialSource: upstream-token, propagation: { injection: { selectors: [{ svc: upstream }] } } }',
        ]
      : []),
  ].map((d) => `apiVersion: core.riptides.io/v1alpha1\n${d}`);
  writeFileSync(join(dir, 'policy.yaml'), `${docs.join('\n---\n')}\n`);
}

describe('startNode: agent + kernel side + data plane in one process', () => {
  let dir: string;
  let secrets: string;
  let fleet: Fleet;
  let node: RunningNode;
  let upstream: Server;
  let workload: Server;
  const seen: IncomingHttpHeaders[] = [];
  const clientName = uniqueName('rtc');
  const apiName = uniqueName('rta');
  let client: string;
  let apiPort = 0;
  let upstreamPort = 0;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'riptides-start-node-'));
    secrets = join(dir, 'secrets');
    writeSecret(secrets, 'upstream-token', TOKEN_ONE);
    fleet = await startFleet({
      credentialManager: (authority) =>
        new CredentialManager({ minter: authority.jwt, trustDomain: FLEET_TD, secretsDir: secrets }),
    });
    upstream = createServer((req, res) => {
      seen.push(req.headers);
      res.end('upstream\n');
    });
    upstreamPort = await listen(upstream);
    // The fronted workload: plaintext on loopback, behind the data plane's MUTUAL listener.
    workload = createServer((_req, res) => res.end('api says hello\n'));
    const workloadPort = await listen(workload);
    node = await startNode({
      stateDir: join(dir, 'node'),
      server: fleet.addr,
      joinToken: await fleet.token({ daemonGroup: GROUP }),
      reportIntervalMs: 300,
      proxyListen: { host: '127.0.0.1', port: 0 },
      inbound: [
        {
          identity: 'node/api',
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: workloadPort },
        },
      ],
      metricsListen: { host: '127.0.0.1', port: 0 },
    });
    apiPort = node.addresses.inbound[0]!.listen.port;
    policy(fleet.repo, { clientName, apiName, apiPort, upstreamPort, bind: true });
    fleet.server.publish(renderFleet(fleet.repo));
    await eventually(() => node.agent.program?.identities.size === 2, 20_000, 'the program');
    // curl under a name of this test's own (the kernel's comm is the executable's file name).
    mkdirSync(join(dir, 'bin'));
    client = join(dir, 'bin', clientName);
    copyFileSync(execFileSync('which', ['curl']).toString().trim(), client);
    chmodSync(client, 0o755);
  }, 60_000);

  afterAll(async () => {
    await node?.stop();
    await fleet?.close();
    await new Promise((r) => upstream?.close(r));
    await new Promise((r) => workload?.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  const proxy = () => `http://127.0.0.1:${node.addresses.proxy!.port}`;
  // Asynchronous: the data plane serving it runs in this process.
  const curl = async (...args: string[]) =>
    (await run(client, ['-sS', '--max-time', '10', '--proxy', proxy(), ...args])).stdout;

  it('returns the bound addresses and the control root, and the inbound identity as a SPIFFE ID', () => {
    expect(node.addresses.proxy!.port).toBeGreaterThan(0);
    expect(node.addresses.inbound[0]).toMatchObject({ spiffeId: API, listen: { host: '127.0.0.1' } });
    expect(node.addresses.caBundle).toBe(join(dir, 'node', 'control', 'certs', 'ca-certificates.crt'));
    expect(readFileSync(node.addresses.caBundle, 'utf8')).toContain('BEGIN CERTIFICATE');
  });

  it('a client attested by name: mTLS to the fronted workload, its token injected, a rotation applied to the next request', async () => {
    // The API's identity has no process, hence no SVID: the inbound listener cannot serve MUTUAL yet. Give it
    // one by starting a process under its selector's name.
    start(copyBinary(apiName));
    await eventually(async () => (await node.agent.node.reader.svid(API)) !== null, 20_000, 'the API SVID');
    expect(await curl(`http://127.0.0.1:${apiPort}/`)).toBe('api says hello\n');

    seen.length = 0;
    expect(await curl(`http://127.0.0.1:${upstreamPort}/one`)).toBe('upstream\n');
    expect(seen[0]?.authorization).toBe(`Bearer ${TOKEN_ONE}`);
    writeSecret(secrets, 'upstream-token', TOKEN_TWO);
    await eventually(
      async () => {
        seen.length = 0;
        await curl(`http://127.0.0.1:${upstreamPort}/two`);
        return seen[0]?.authorization === `Bearer ${TOKEN_TWO}`;
      },
      20_000,
      'the rotated token on the next request',
    );
  });

  it('a program change applies without a restart: the binding removed, no token leaves', async () => {
    policy(fleet.repo, { clientName, apiName, apiPort, upstreamPort, bind: false });
    fleet.server.publish(renderFleet(fleet.repo));
    await eventually(
      () => node.agent.program?.credentialRefs.size === 0,
      20_000,
      'the program without the binding',
    );
    await eventually(
      async () => {
        seen.length = 0;
        await curl(`http://127.0.0.1:${upstreamPort}/three`);
        return seen.length === 1 && seen[0]!.authorization === undefined;
      },
      20_000,
      'a request without the token',
    );
  });

  it('reports the data plane to the reconciler, and serves its metrics to the holder of the credential', async () => {
    const status = () => fleet.server.agents().find((s) => s.daemonId === node.agent.identity.daemonId);
    // Reports are periodic: the one awaited is the first that carries both the inbound mTLS connection and the
    // two injections of the test before (one may have been made after the report the connection came in).
    const plane = await eventually(
      () => {
        const p = status()?.report?.dataPlane;
        return p &&
          (p.connections['inbound/mtls'] ?? 0) >= 1 &&
          (p.credentialsInjected['client-upstream'] ?? 0) >= 2
          ? p
          : undefined;
      },
      20_000,
      'a report with the data plane, its inbound mTLS connection and both injections',
    );
    expect(plane.health).toBe('OK');
    expect(plane.listeners.map((l) => l.kind).sort()).toEqual(['inbound', 'proxy']);
    expect(plane.listeners.find((l) => l.kind === 'inbound')!.target).toMatch(
      new RegExp(`^${API} -> 127\\.0\\.0\\.1:\\d+$`),
    );
    expect(plane.credentialsInjected['client-upstream']).toBeGreaterThanOrEqual(2);

    const m = node.addresses.metrics!;
    const url = `http://127.0.0.1:${m.listen.port}/metrics`;
    expect((await fetch(url)).status).toBe(401);
    expect((await fetch(url, { headers: { authorization: 'Bearer rt_metrics_wrong' } })).status).toBe(401);
    const credential = readFileSync(m.credentialFile, 'utf8').trim();
    const res = await fetch(url, { headers: { authorization: `Bearer ${credential}` } });
    expect(res.status).toBe(200);
    const families = parsePrometheus(await res.text());
    expect(families.riptides_agent_connected?.samples[0]?.value).toBe(1);
    expect(
      families.riptides_dataplane_connections?.samples.find(
        (s) => s.labels.direction === 'inbound' && s.labels.mode === 'mtls',
      )?.value,
    ).toBeGreaterThanOrEqual(1);
  });

  it('stop() closes the listeners and live connections', async () => {
    const port = node.addresses.proxy!.port;
    const held = connect(port, '127.0.0.1');
    await new Promise((r) => held.once('connect', r));
    const closed = new Promise((r) => held.once('close', r));
    await node.stop();
    await closed;
    const refused = await new Promise<string>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => resolve('connected'));
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
  });
});
