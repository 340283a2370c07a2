/**
 * The data plane driven by the real control interface: the agent's writer writes SVIDs, the trust bundle, the
 * intercept CA, the rule table and the processes table; the kernel side (ControlModule) enforces them; the
 * credential store holds the values; the data plane reads it all through ControlInputs and writes the
 * `connections` file that the control reader returns.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer, type Server } from 'node:https';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { join } from 'node:path';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CredentialStore } from '../../kernel-module/control/credential-store.ts';
import { ControlModule } from '../../kernel-module/control/module.ts';
import { ControlReader } from '../../kernel-module/control/reader.ts';
import { ControlWriter } from '../../kernel-module/control/writer.ts';
import { ControlInputs } from '../../kernel-module/dataplane/control-inputs.ts';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import type { KeyPair, RuleIdentity } from '../../kernel-module/dataplane/inputs.ts';
import {
  authority,
  bearerBinding,
  destination,
  egress,
  id,
  identity,
  loopbackLookup,
  scratch,
  svid,
  TD,
  until,
  upstreamTls,
} from './support.ts';

const CLIENT = id('ctl/client');
const SERVER = id('ctl/server');
const HOST = 'api.example.test';

describe('the data plane on the control interface (writer → kernel side → ControlInputs)', () => {
  const tmp = scratch();
  const root = join(tmp.dir, 'riptides');
  let writer: ControlWriter;
  let module: ControlModule;
  const store = new CredentialStore();
  let dp: DataPlane;
  let echo: NetServer;
  let upstream: Server;
  let upstreamPort = 0;
  let inboundPort = 0;
  let proxyPort = 0;
  let clientPair: KeyPair;
  let bundle = '';
  const seen: IncomingHttpHeaders[] = [];
  const svids: Record<string, RuleIdentity['svid']> = {};
  let versions = 0;

  const rules = async (inbound: string[]) => {
    const api = destination(HOST, null);
    const written = await writer.writeRules({
      version: `v-${++versions}`,
      trustDomain: TD,
      identities: [
        { ...identity(SERVER, { mode: 'MUTUAL', inbound }), hash: '00000000000000a1', svid: svids[SERVER]! },
        {
          ...identity(CLIENT, {
            egress: [egress([api], { mode: 'SIMPLE', intercept: true }, [], '00000000000000b1')],
            credentials: [bearerBinding('00000000000000c1', 'api-token', [api])],
          }),
          hash: '00000000000000a2',
          svid: svids[CLIENT]!,
        },
      ],
    });
    await until(() => module.current()?.generation === written.generation, 10_000);
  };

  beforeAll(async () => {
    echo = createNetServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const tls = upstreamTls([HOST]);
    upstream = createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      seen.push(req.headers);
      req.resume();
      req.on('end', () => res.end('ok\n'));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamPort = (upstream.address() as { port: number }).port;

    const ca = await authority(join(tmp.dir, 'ca'));
    bundle = ca.bundlePem();
    writer = await ControlWriter.open(root);
    await writer.writeConfig({ trustDomain: TD, daemonId: 'node-1' });
    await writer.writeTrustBundle(bundle);
    await writer.ensureInterceptCa();
    clientPair = await svid(ca, CLIENT);
    for (const [spiffeId, pair] of [
      [SERVER, await svid(ca, SERVER)],
      [CLIENT, clientPair],
    ] as const)
      svids[spiffeId] = await writer.writeSvid(spiffeId, { certPem: pair.cert, keyPem: pair.key });
    module = new ControlModule({ root, pollIntervalMs: 50 });
    await module.start();
    await rules([CLIENT]);
    dp = new DataPlane({
      inputs: new ControlInputs(module, store),
      proxyListen: { host: '127.0.0.1', port: 0 },
      inbound: [
        {
          spiffeId: SERVER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: (echo.address() as { port: number }).port },
        },
      ],
      upstreamCa: tls.ca,
      lookup: loopbackLookup,
      connectionsFile: join(root, 'connections'),
    });
    const a = await dp.start();
    inboundPort = a.inbound[0]!.port;
    proxyPort = a.proxy!.port;
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    await module?.stop();
    await new Promise((r) => echo?.close(r));
    await new Promise((r) => upstream?.close(r));
    tmp.cleanup();
  });

  const mtlsClient = () =>
    new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({
        host: '127.0.0.1',
        port: inboundPort,
        cert: clientPair.cert,
        key: clientPair.key,
        ca: bundle,
        ALPNProtocols: ['riptides'],
        checkServerIdentity: () => undefined,
      });
      s.once('error', reject);
      s.once('secureConnect', () => {
        s.write('ping');
        s.once('data', (d) => (String(d) === 'ping' ? resolve(s) : reject(new Error(`got ${d}`))));
      });
      s.once('close', () => reject(new Error('closed before echo')));
    });

  it('enforces the inbound policy the writer wrote, and the connections file lists the live session', async () => {
    const session = await mtlsClient();
    const reader = new ControlReader(root);
    expect(
      await until(async () => (await reader.connections()).some((c) => c.peer_spiffe_id === CLIENT)),
    ).toBe(true);
    const line = (await reader.connections()).find((c) => c.peer_spiffe_id === CLIENT)!;
    expect(line).toMatchObject({ spiffe_id: SERVER, mtls_version: 'TLS1.3', dst_port: inboundPort });
    expect(readFileSync(join(root, 'connections'), 'utf8').trim().split('\n')).toHaveLength(1);

    // The writer drops the client from the allow list: the kernel side enforces it, the session closes.
    const closed = new Promise<void>((r) => session.once('close', () => r()));
    session.on('error', () => {});
    await rules([id('ctl/other')]);
    await closed;
    await expect(mtlsClient()).rejects.toThrow();
    await rules([CLIENT]);
    (await mtlsClient()).destroy();
  });

  it('a process in the processes table gets its identity’s credential from the credential store', async () => {
    const caFile = join(tmp.dir, 'ca.crt');
    writeFileSync(caFile, readFileSync(join(root, 'certs', 'ca-certificates.crt')));
    store.load(
      '00000000000000c1',
      { kind: 'bearer', token: 'store-token' },
      { binding: 'CredentialBinding/riptides-system/api-token', fingerprint: 'sha256:00000000', version: 1 },
    );
    // The process exists (and is attested) before it connects: sh waits, then becomes curl (same pid).
    const child = spawn(
      'sh',
      [
        '-c',
        `read _; exec curl -sS --max-time 10 --proxy http://127.0.0.1:${proxyPort} --cacert ${caFile} https://${HOST}:${upstreamPort}/from-store`,
      ],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    const pid = child.pid!;
    const startTime = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]);
    const written = await writer.writeProcesses([
      { pid, startTime, spiffeId: CLIENT, conflict: null, destinationPorts: null },
    ]);
    await until(() => module.processes()?.generation === written.generation, 10_000);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    const exited = new Promise((r) => child.once('exit', r));
    child.stdin.end('\n');
    await exited;
    expect(out).toBe('ok\n');
    expect(seen.at(-1)?.authorization).toBe('Bearer store-token');
  });
});
