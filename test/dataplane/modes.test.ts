/**
 * TLS modes between data planes, with curl as the application: a mode-null rule upgrades to mTLS only toward
 * a managed peer (one whose data plane answers ALPN `riptides`) and stays plain TCP toward anything else; an
 * outbound allow list that does not name the peer closes the connection; SIMPLE inbound is server-side TLS only;
 * plain HTTP through the proxy (`http_proxy`) gets its credential too.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import type { MemoryInputs } from '../../kernel-module/dataplane/inputs.ts';
import {
  authority,
  baseInputs,
  bearerBinding,
  destination,
  egress,
  id,
  identity,
  loopbackLookup,
  run,
  scratch,
  table,
} from './support.ts';

const CLIENT = id('web/frontend');
const SERVER = id('web/backend');

describe('TLS modes between data planes', () => {
  const tmp = scratch();
  const seen: Array<{ port: number; headers: IncomingHttpHeaders }> = [];
  const servers: Server[] = [];
  let workloadPort = 0;
  let plainPort = 0;
  let serverInputs: MemoryInputs;
  let clientInputs: MemoryInputs;
  let serverDp: DataPlane;
  let clientDp: DataPlane;
  let fronted = 0;
  let toManaged = 0;
  let toPlain = 0;
  let proxy = '';
  let bundle = '';
  const clientLog: Array<Record<string, unknown>> = [];

  const http = async () => {
    const s = createServer((req, res) => {
      seen.push({ port: (s.address() as { port: number }).port, headers: req.headers });
      req.resume();
      res.end('hello\n');
    });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    servers.push(s);
    return (s.address() as { port: number }).port;
  };

  const setClientRules = (allowed: string[]) => {
    const managed = destination('127.0.0.1', fronted, 'Service/riptides-system/backend');
    const plain = destination('127.0.0.1', plainPort, 'Service/riptides-system/legacy');
    const named = destination('legacy.example.test', null, 'Service/riptides-system/legacy-name');
    clientInputs.setRules(
      table([
        identity(CLIENT, {
          egress: [egress([managed], { mode: null }, allowed), egress([plain, named], { mode: null })],
          credentials: [bearerBinding('legacy-cred', 'legacy-token', [named])],
        }),
      ]),
    );
  };

  beforeAll(async () => {
    workloadPort = await http();
    plainPort = await http();
    const ca = await authority(join(tmp.dir, 'ca'));
    bundle = ca.bundlePem();
    serverInputs = await baseInputs(new Map(), ca, [SERVER]);
    serverInputs.setRules(table([identity(SERVER, { mode: 'PERMISSIVE', inbound: [CLIENT] })]));
    serverDp = new DataPlane({
      inputs: serverInputs,
      inbound: [
        {
          spiffeId: SERVER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: workloadPort },
        },
      ],
    });
    fronted = (await serverDp.start()).inbound[0]!.port;

    clientInputs = await baseInputs(new Map([['curl', CLIENT]]), ca, [CLIENT]);
    setClientRules([SERVER]);
    clientInputs.loadCredential('legacy-cred', { kind: 'bearer', token: 'legacy-secret' });
    clientDp = new DataPlane({
      inputs: clientInputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      outbound: [
        { listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: fronted } },
        { listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: plainPort } },
      ],
      lookup: loopbackLookup,
      log: (e) => clientLog.push(e),
    });
    const a = await clientDp.start();
    [toManaged, toPlain] = a.outbound.map((o) => o.port) as [number, number];
    proxy = `http://127.0.0.1:${a.proxy!.port}`;
  }, 60_000);

  afterAll(async () => {
    await clientDp?.stop();
    await serverDp?.stop();
    for (const s of servers) await new Promise((r) => s.close(r));
    tmp.cleanup();
  });

  const curl = (...args: string[]) => run('curl', ['-sS', '--max-time', '10', ...args]).then((r) => r.stdout);

  it('mode null: mTLS toward a managed peer, plain TCP toward an unmanaged one', async () => {
    expect(await curl(`http://127.0.0.1:${toManaged}/m`)).toBe('hello\n');
    expect(await curl(`http://127.0.0.1:${toPlain}/p`)).toBe('hello\n');
    const modes = await clientDp.metrics.registry
      .getSingleMetric('riptides_dataplane_connections_total')!
      .get();
    const count = (mode: string) => modes.values.find((v) => v.labels.mode === mode)?.value ?? 0;
    expect(count('mtls')).toBe(1);
    expect(count('plain')).toBe(1);
    const inbound = await serverDp.metrics.registry
      .getSingleMetric('riptides_dataplane_connections_total')!
      .get();
    // The managed peer saw mTLS (not PERMISSIVE's plaintext path).
    expect(inbound.values.find((v) => v.labels.mode === 'mtls')?.value).toBe(1);
    expect(inbound.values.find((v) => v.labels.mode === 'permissive-plain')).toBeUndefined();
  });

  it('a peer outside the rule’s allowed IDs: the connection closes with a logged reason', async () => {
    setClientRules([id('web/someone-else')]);
    try {
      await expect(curl(`http://127.0.0.1:${toManaged}/denied`)).rejects.toThrow();
    } finally {
      setClientRules([SERVER]);
    }
    const refusal = clientLog.find((e) => e.event === 'handshake-failed' && e.reason === 'not-allowed');
    expect(refusal).toMatchObject({ direction: 'outbound', spiffe_id: CLIENT });
    expect(String(refusal!.detail)).toContain(SERVER);
  });

  it('plain HTTP through the proxy gets the bound credential injected', async () => {
    seen.length = 0;
    expect(await curl('-x', proxy, `http://legacy.example.test:${plainPort}/legacy`)).toBe('hello\n');
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers.authorization).toBe('Bearer legacy-secret');
  });

  const tlsClient = (withCert: boolean) =>
    new Promise<string>((resolve) => {
      const pair = clientInputs.svid(CLIENT)!;
      const s = tlsConnect({
        host: '127.0.0.1',
        port: fronted,
        ca: bundle,
        checkServerIdentity: () => undefined,
        ...(withCert ? { cert: pair.cert, key: pair.key } : {}),
      });
      let got = '';
      s.on('secureConnect', () =>
        s.write('GET /simple HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n'),
      );
      s.on('data', (d) => {
        got += d;
      });
      s.on('error', () => {});
      s.on('close', () => resolve(got));
    });

  it('SIMPLE is server-side TLS only: a client without a certificate gets through, as MUTUAL refuses it', async () => {
    serverInputs.setRules(table([identity(SERVER, { mode: 'SIMPLE' })]));
    expect(await tlsClient(false)).toMatch(/^HTTP\/1\.1 200 OK/);
    // Plaintext is not TLS: refused under SIMPLE.
    await expect(curl(`http://127.0.0.1:${fronted}/plain`)).rejects.toThrow();
    serverInputs.setRules(table([identity(SERVER, { mode: 'MUTUAL', inbound: [CLIENT] })]));
    expect(await tlsClient(false)).toBe('');
    const failed = await serverDp.metrics.registry.getSingleMetricAsString(
      'riptides_dataplane_handshakes_failed_total',
    );
    expect(failed).toMatch(/reason="no-certificate"\} 1/);
  });
});
