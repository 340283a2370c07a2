/**
 * Both ends on one node, as the quickstart runs: a client and a MUTUAL workload behind the same data plane.
 * The data plane's own inbound listener is a destination like any peer's (not a loop); a client that connects
 * before its SVID arrived (a process that just started) waits for it instead of failing, within a bound; and
 * `connection.tls.intercept` on the identity intercepts TLS toward a destination that only a credential
 * binding names.
 */
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import type { KeyPair, MemoryInputs } from '../../kernel-module/dataplane/inputs.ts';
import {
  authority,
  baseInputs,
  bearerBinding,
  destination,
  egress,
  id,
  identity,
  run,
  scratch,
  svid,
  table,
  until,
  upstreamTls,
} from './support.ts';

const CLIENT = id('node/client');
const SERVER = id('node/server');

describe('one node: client and fronted workload behind the same data plane', () => {
  const tmp = scratch();
  let workload: Server;
  let upstream: HttpsServer;
  let upstreamPort = 0;
  let inputs: MemoryInputs;
  let dp: DataPlane;
  let fronted = 0;
  let proxy = '';
  let clientSvid: KeyPair;
  let caFile = '';
  const authorizations: Array<string | undefined> = [];

  beforeAll(async () => {
    workload = createServer((_req, res) => res.end('fronted workload\n'));
    await new Promise<void>((r) => workload.listen(0, '127.0.0.1', r));
    const tls = upstreamTls(['127.0.0.1']);
    upstream = createHttpsServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      authorizations.push(req.headers.authorization);
      res.end('upstream\n');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamPort = (upstream.address() as { port: number }).port;
    const ca = await authority(join(tmp.dir, 'ca'));
    // The server has its SVID; the client's comes later (as for a process that just started).
    inputs = await baseInputs(new Map([['curl', CLIENT]]), ca, [SERVER]);
    clientSvid = await svid(ca, CLIENT);
    dp = new DataPlane({
      inputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      inbound: [
        {
          spiffeId: SERVER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: (workload.address() as { port: number }).port },
        },
      ],
      upstreamCa: tls.ca,
      limits: { svidWaitMs: 1500 },
    });
    const a = await dp.start();
    fronted = a.inbound[0]!.port;
    proxy = `http://127.0.0.1:${a.proxy!.port}`;
    const echo = destination('127.0.0.1', upstreamPort, 'Service/riptides-system/echo');
    const client = identity(CLIENT, {
      mode: 'PERMISSIVE',
      egress: [egress([destination('127.0.0.1', fronted)], { mode: 'MUTUAL' }, [SERVER])],
      credentials: [bearerBinding('echo-cred', 'echo-token', [echo])],
    });
    client.inbound.intercept = true;
    inputs.setRules(table([identity(SERVER, { inbound: [CLIENT] }), client]));
    inputs.loadCredential('echo-cred', { kind: 'bearer', token: 'one-node-token' });
    caFile = join(tmp.dir, 'ca-certificates.crt');
    writeFileSync(caFile, inputs.interceptCa()!.cert);
  });

  afterAll(async () => {
    await dp?.stop();
    await new Promise((r) => workload?.close(r));
    await new Promise((r) => upstream?.close(r));
    tmp.cleanup();
  });

  const curl = (...args: string[]) =>
    run('curl', ['-sS', '--max-time', '10', '--proxy', proxy, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });

  it('a MUTUAL call whose SVID never comes fails after the bounded wait, with the reason', async () => {
    const { stdout } = await curl('-D', '-', '-o', '/dev/null', `http://127.0.0.1:${fronted}/`);
    expect(stdout).toMatch(/^HTTP\/1\.1 502 /);
    expect(stdout).toMatch(/x-riptides-reason: .*no-svid.*has no SVID installed \(waited 1500 ms\)/i);
  });

  it('a MUTUAL call made before the SVID arrived waits for it, then reaches the workload through its own node’s front', async () => {
    const call = curl(`http://127.0.0.1:${fronted}/`);
    // The request is in the data plane, waiting; then the SVID arrives.
    expect(await until(() => dp.connections().some((c) => c.spiffe_id === CLIENT))).toBe(true);
    inputs.setSvid(CLIENT, clientSvid);
    expect((await call).stdout).toBe('fronted workload\n');
    const mtls = await dp.metrics.connections.get();
    expect(mtls.values.find((v) => v.labels.direction === 'inbound' && v.labels.mode === 'mtls')?.value).toBe(
      1,
    );
  });

  it('identity-level intercept: TLS toward a destination only a binding names gets the token', async () => {
    authorizations.length = 0;
    const { stdout } = await curl('--cacert', caFile, `https://127.0.0.1:${upstreamPort}/`);
    expect(stdout).toBe('upstream\n');
    expect(authorizations).toEqual(['Bearer one-node-token']);
  });
});
