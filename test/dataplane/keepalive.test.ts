/**
 * One intercepted keep-alive connection over its lifetime (openssl s_client as the application, through the
 * proxy): its requests leave through an mTLS pool toward a peer data plane, and what the data plane keeps per
 * connection (the upstream pool it found, the request-head deadline) follows the inputs: a policy change reaches
 * the next request on the same connection (a peer no longer allowed is refused, though its session would
 * resume), an upstream connection kept from before a change is not handed to the next application connection,
 * and a request that outlasts the head deadline is served while the next head is still held to it.
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { join } from 'node:path';
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
  proxiedTlsClient,
  scratch,
  table,
  until,
} from './support.ts';

const CLIENT = id('shop/cart');
const SERVER = id('shop/orders');
const HOST = 'orders.example.test';
const HEAD_DEADLINE_MS = 1_500;

describe('an intercepted keep-alive connection follows the inputs from one request to the next', () => {
  const tmp = scratch();
  const seen: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
  let workload: Server;
  let serverDp: DataPlane;
  let clientDp: DataPlane;
  let clientInputs: MemoryInputs;
  let fronted = 0;
  let proxyPort = 0;
  let caFile = '';
  let ca: Awaited<ReturnType<typeof authority>>;
  const apps: ChildProcessWithoutNullStreams[] = [];

  const setClientRules = (allowed: string[]) => {
    const orders = destination(HOST, fronted, 'Service/shop/orders');
    clientInputs.setRules(
      table([
        identity(CLIENT, {
          egress: [egress([orders], { mode: 'MUTUAL', intercept: true }, allowed)],
          credentials: [bearerBinding('orders-cred', 'orders-token', [orders])],
        }),
      ]),
    );
  };

  beforeAll(async () => {
    workload = createServer((req, res) => {
      seen.push({ url: req.url ?? '', headers: req.headers });
      req.resume();
      // `/slow` answers after the head deadline has passed: the request is in flight when it fires.
      const answer = () => res.end('ok\n');
      if (req.url === '/slow') setTimeout(answer, HEAD_DEADLINE_MS + 1_000);
      else answer();
    });
    await new Promise<void>((r) => workload.listen(0, '127.0.0.1', r));
    ca = await authority(join(tmp.dir, 'ca'));
    const serverInputs = await baseInputs(new Map(), ca, [SERVER]);
    serverInputs.setRules(table([identity(SERVER, { mode: 'MUTUAL', inbound: [CLIENT] })]));
    serverDp = new DataPlane({
      inputs: serverInputs,
      inbound: [
        {
          spiffeId: SERVER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: (workload.address() as { port: number }).port },
        },
      ],
    });
    fronted = (await serverDp.start()).inbound[0]!.port;

    clientInputs = await baseInputs(new Map([['openssl', CLIENT]]), ca, [CLIENT]);
    setClientRules([SERVER]);
    clientInputs.loadCredential('orders-cred', { kind: 'bearer', token: 'orders-secret' });
    caFile = join(tmp.dir, 'ca-certificates.crt');
    writeFileSync(caFile, clientInputs.interceptCa()!.cert);
    clientDp = new DataPlane({
      inputs: clientInputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      lookup: loopbackLookup,
      limits: { headersTimeoutMs: HEAD_DEADLINE_MS },
    });
    proxyPort = (await clientDp.start()).proxy!.port;
  }, 60_000);

  afterAll(async () => {
    for (const a of apps) a.kill();
    await clientDp?.stop();
    await serverDp?.stop();
    await new Promise((r) => workload?.close(r));
    tmp.cleanup();
  });

  /** One TLS connection of the application through the proxy; requests are written to it one at a time. */
  const app = () => {
    const c = proxiedTlsClient({ proxyPort, host: HOST, port: fronted, caFile });
    apps.push(c.child);
    const responses = () => [...c.out().matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]);
    return {
      /** Sends a request and waits (bounded) for its response; the statuses of every response so far. */
      async request(path: string): Promise<Array<string | undefined>> {
        const before = responses().length;
        c.write(`GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
        await until(() => responses().length > before || c.exited(), 10_000);
        return responses();
      },
      write: c.write,
      end: c.end,
      out: c.out,
      exited: c.exited,
    };
  };

  it('a policy change reaches the next request on the same connection: served while allowed, refused after', async () => {
    const a = app();
    expect(await a.request('/one')).toEqual(['200']);
    // A change that still allows the peer: the pool the connection used is retired, a new one serves it.
    setClientRules([SERVER]);
    expect(await a.request('/two')).toEqual(['200', '200']);
    expect(seen.filter((s) => s.url !== '/slow').map((s) => [s.url, s.headers.authorization])).toEqual([
      ['/one', 'Bearer orders-secret'],
      ['/two', 'Bearer orders-secret'],
    ]);
    // The peer is no longer allowed: its TLS session would resume, and the remembered certificate is refused.
    setClientRules([id('shop/someone-else')]);
    expect(await a.request('/three')).toEqual(['200', '200', '502']);
    expect(a.out()).toMatch(/x-riptides-reason: upstream \S+: mTLS refused \(not-allowed\)/);
    expect(seen.map((s) => s.url)).not.toContain('/three');
    expect(await until(() => a.exited(), 10_000)).toBe(true); // the refusal closed the connection
    setClientRules([SERVER]);
  });

  it('an upstream connection kept from before a policy change is not handed to the next application connection', async () => {
    const a = app();
    expect(await a.request('/before-bundle')).toEqual(['200']);
    // The trust bundle changes while that connection is idle: the peer's SVID no longer verifies. Neither the
    // rule nor its allow lists changed, so only the change itself says the kept connection is stale.
    const foreign = await authority(join(tmp.dir, 'foreign-ca'));
    clientInputs.setTrustBundle(foreign.bundlePem());
    try {
      a.end(); // its upstream connection is given back as the application's closes
      expect(await until(() => a.exited(), 10_000)).toBe(true);
      const b = app();
      expect(await b.request('/after-bundle')).toEqual(['502']);
      expect(b.out()).toMatch(/x-riptides-reason: upstream \S+: mTLS refused \(untrusted\)/);
      expect(seen.map((s) => s.url)).not.toContain('/after-bundle');
    } finally {
      clientInputs.setTrustBundle(ca.bundlePem());
    }
  });

  it('a request after the binding stopped covering the destination is refused on that connection, token-free', async () => {
    const a = app();
    expect(await a.request('/before-move')).toEqual(['200']);
    // The binding now injects toward another Service only; the credential stays loaded (another binding's).
    const orders = destination(HOST, fronted, 'Service/shop/orders');
    const elsewhere = destination('elsewhere.example.test', 443, 'Service/shop/elsewhere');
    clientInputs.setRules(
      table([
        identity(CLIENT, {
          egress: [egress([orders], { mode: 'MUTUAL', intercept: true }, [SERVER])],
          credentials: [bearerBinding('orders-cred', 'orders-token', [elsewhere])],
        }),
      ]),
    );
    expect(await a.request('/after-move')).toEqual(['200', '503']);
    expect(a.out()).toMatch(/x-riptides-reason: the policy for this connection changed since it was opened/);
    expect(seen.map((s) => s.url)).not.toContain('/after-move');
    expect(a.out()).not.toContain('orders-secret');
    expect(await until(() => a.exited(), 10_000)).toBe(true);
    setClientRules([SERVER]);
  });

  it('a request outlasting the head deadline is served, and the next head on the connection is still held to it', async () => {
    const refused = async () =>
      (await clientDp.metrics.requestsRefused.get()).values.find((v) => v.labels.reason === 'headers-timeout')
        ?.value ?? 0;
    const before = await refused();
    const a = app();
    expect(await a.request('/slow')).toEqual(['200']);
    a.write(`GET /never-finished HTTP/1.1\r\nHost: ${HOST}\r\n`);
    expect(await until(() => a.exited(), 10_000)).toBe(true);
    expect(await refused()).toBe(before + 1);
    expect(seen.map((s) => s.url)).not.toContain('/never-finished');
  });
});
