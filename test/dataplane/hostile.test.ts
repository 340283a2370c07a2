/**
 * Hostile traffic against the data plane: garbage instead of a ClientHello, slowloris (TLS handshake and HTTP
 * head, HTTP body, a body buffered to sign), a peer with an expired SVID, request smuggling and pipelining on an
 * intercepted connection. Each is refused and counted, and the data plane keeps serving others meanwhile.
 */
import { writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { createServer as createNetServer, type Server as NetServer, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import type { KeyPair } from '../../kernel-module/dataplane/inputs.ts';
import {
  authority,
  awsBinding,
  baseInputs,
  bearerBinding,
  destination,
  egress,
  id,
  identity,
  loopbackLookup,
  proxiedTlsClient,
  scratch,
  svid,
  table,
  until,
  upstreamTls,
} from './support.ts';

const CLIENT = id('edge/client');
const SERVER = id('edge/server');
const HOST = 'api.example.test';
const AWS_HOST = 'sts.us-east-1.amazonaws.com';
const REQUEST_DEADLINE_MS = 2_500;
const SIGNED_BODY_CAP = 64 * 1024;
const DAY = 86_400_000;

describe('hostile traffic is refused, counted, and others are still served', () => {
  const tmp = scratch();
  let dp: DataPlane;
  let echo: NetServer;
  let upstream: Server;
  let upstreamPort = 0;
  let inbound = 0;
  let proxyPort = 0;
  let caFile = '';
  const seen: IncomingHttpHeaders[] = [];
  const urls: string[] = [];
  let good: KeyPair;
  let expired: KeyPair;
  let bundle = '';

  beforeAll(async () => {
    // The workload behind the inbound listener: echoes what it gets.
    echo = createNetServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const tls = upstreamTls([HOST, AWS_HOST]);
    upstream = createHttpsServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      seen.push(req.headers);
      urls.push(req.url ?? '');
      req.resume();
      req.on('end', () => res.end('ok\n'));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamPort = (upstream.address() as { port: number }).port;

    // One CA whose clock starts two days back: the SVID it signs then has long expired.
    let now = Date.now() - 2 * DAY;
    const ca = await authority(join(tmp.dir, 'ca'), undefined, () => new Date(now));
    expired = await svid(ca, CLIENT, 3600);
    now = Date.now();
    good = await svid(ca, CLIENT, 3600);
    bundle = ca.bundlePem();

    const inputs = await baseInputs(new Map([['openssl', CLIENT]]), ca, [SERVER]);
    const api = destination(HOST, null);
    const sts = destination(AWS_HOST, null, 'Service/riptides-system/aws-sts');
    const aws = awsBinding('cred-aws', 'edge-aws', [sts]);
    inputs.setRules(
      table([
        identity(SERVER, { mode: 'MUTUAL', inbound: [CLIENT] }),
        identity(CLIENT, {
          egress: [egress([api, sts], { mode: 'SIMPLE', intercept: true })],
          credentials: [bearerBinding('cred', 'api-token', [api]), aws],
        }),
      ]),
    );
    inputs.loadCredential('cred', { kind: 'bearer', token: 'secret-token' });
    inputs.loadCredential('cred-aws', {
      kind: 'aws',
      accessKeyId: 'ASIATEMPORARYKEY',
      secretAccessKey: 'temporary-secret',
      sessionToken: 'session-token',
      expiresAt: new Date(Date.now() + 3_600_000),
    });
    caFile = join(tmp.dir, 'ca-certificates.crt');
    writeFileSync(caFile, inputs.interceptCa()!.cert);
    dp = new DataPlane({
      inputs,
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
      limits: {
        handshakeTimeoutMs: 1_500,
        headersTimeoutMs: 1_500,
        requestTimeoutMs: REQUEST_DEADLINE_MS,
        maxSignedBodyBytes: SIGNED_BODY_CAP,
      },
    });
    const a = await dp.start();
    inbound = a.inbound[0]!.port;
    proxyPort = a.proxy!.port;
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    await new Promise((r) => echo?.close(r));
    await new Promise((r) => upstream?.close(r));
    tmp.cleanup();
  });

  const metric = async (name: string, labels: Record<string, string>) => {
    const m = await dp.metrics.registry.getSingleMetric(name)!.get();
    return m.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value ?? 0;
  };

  /** A well-behaved mTLS client with a valid SVID: its bytes come back through the echo workload. */
  const healthyMtls = (pair: KeyPair = good) =>
    new Promise<string>((resolve, reject) => {
      const s = tlsConnect({
        host: '127.0.0.1',
        port: inbound,
        cert: pair.cert,
        key: pair.key,
        ca: bundle,
        ALPNProtocols: ['riptides'],
        checkServerIdentity: () => undefined,
      });
      let got = '';
      s.on('secureConnect', () => s.write('ping'));
      s.on('data', (d) => {
        got += d;
        if (got === 'ping') {
          s.end();
          resolve(got);
        }
      });
      s.on('error', reject);
      s.on('close', () => resolve(got));
      s.setTimeout(10_000, () => s.destroy(new Error('healthy client timed out')));
    });

  it('a healthy mTLS peer is served (the baseline)', async () => {
    expect(await healthyMtls()).toBe('ping');
  });

  it('garbage instead of a ClientHello is refused and counted', async () => {
    const before = await metric('riptides_dataplane_handshakes_failed_total', {
      direction: 'inbound',
      reason: 'protocol',
    });
    const closed = await new Promise<string>((resolve) => {
      const s = netConnect(inbound, '127.0.0.1', () =>
        s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage'),
      );
      let got = '';
      s.on('data', (d) => {
        got += d;
      });
      s.on('error', () => {});
      s.on('close', () => resolve(got));
    });
    expect(closed).toBe('');
    expect(
      await metric('riptides_dataplane_handshakes_failed_total', {
        direction: 'inbound',
        reason: 'protocol',
      }),
    ).toBe(before + 1);
    expect(await healthyMtls()).toBe('ping');
  });

  it('a slowloris handshake is cut at the deadline while others are served', async () => {
    const before = await metric('riptides_dataplane_handshakes_failed_total', {
      direction: 'inbound',
      reason: 'timeout',
    });
    const slow = netConnect(inbound, '127.0.0.1');
    slow.on('error', () => {});
    slow.write(Buffer.from([0x16, 0x03, 0x01])); // the first bytes of a TLS record, then nothing
    const closed = new Promise<void>((r) => slow.once('close', () => r()));
    expect(await healthyMtls()).toBe('ping');
    await closed;
    expect(
      await metric('riptides_dataplane_handshakes_failed_total', { direction: 'inbound', reason: 'timeout' }),
    ).toBe(before + 1);
  });

  it('a peer presenting an expired SVID is refused and counted', async () => {
    const before = await metric('riptides_dataplane_handshakes_failed_total', {
      direction: 'inbound',
      reason: 'expired',
    });
    expect(await healthyMtls(expired).catch(() => '')).toBe('');
    expect(
      await metric('riptides_dataplane_handshakes_failed_total', { direction: 'inbound', reason: 'expired' }),
    ).toBe(before + 1);
    expect(await healthyMtls()).toBe('ping');
  });

  /** openssl s_client through the proxy (CONNECT), TLS to the intercepting data plane; `input` as the app's bytes. */
  const sClient = async (input: string | null) => {
    const c = proxiedTlsClient({ proxyPort, host: HOST, port: upstreamPort, caFile, killAfterMs: 15_000 });
    if (input !== null) c.write(input);
    const code = await c.done;
    return { out: c.out(), code };
  };

  it('request smuggling (Content-Length with Transfer-Encoding) is refused before it reaches the upstream', async () => {
    seen.length = 0;
    const before = await metric('riptides_dataplane_requests_refused_total', { reason: 'bad-request' });
    const { out } = await sClient(
      `POST /upload HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
    );
    expect(out).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(seen).toHaveLength(0);
    expect(await metric('riptides_dataplane_requests_refused_total', { reason: 'bad-request' })).toBe(
      before + 1,
    );
  });

  it('a transfer coding other than chunked is refused, not forwarded without its coding', async () => {
    seen.length = 0;
    const { out } = await sClient(
      `POST /zipped HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
    );
    expect(out).toMatch(/^HTTP\/1\.1 400 /);
    expect(out).toMatch(/x-riptides-reason: only the chunked transfer coding is forwarded/);
    expect(seen).toHaveLength(0);
  });

  it('pipelined requests: the first is served, the second refused cleanly and the connection closed', async () => {
    seen.length = 0;
    const req = (path: string) => `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;
    const { out } = await sClient(req('/one') + req('/two'));
    const statuses = [...out.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]);
    expect(statuses).toEqual(['200', '400']);
    expect(out).toMatch(/x-riptides-reason: pipelined requests are not supported/i);
    expect(seen.map((h) => h.authorization)).toEqual(['Bearer secret-token']);
  });

  it('a slowloris request head on an intercepted connection is cut at the deadline while others are served', async () => {
    const before = await metric('riptides_dataplane_requests_refused_total', { reason: 'headers-timeout' });
    const slow = sClient(`GET /slow HTTP/1.1\r\nHost: ${HOST}\r\n`); // never finishes its head
    await until(
      async () =>
        (await metric('riptides_dataplane_connections_total', { direction: 'outbound', mode: 'intercept' })) >
        0,
    );
    seen.length = 0;
    const ok = await sClient(`GET /fine HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
    expect(ok.out).toMatch(/^HTTP\/1\.1 200/);
    await slow;
    expect(await metric('riptides_dataplane_requests_refused_total', { reason: 'headers-timeout' })).toBe(
      before + 1,
    );
    expect(seen.map((h) => h.authorization)).toEqual(['Bearer secret-token']);
  });

  it('a slowloris request head on the proxy port itself is cut at the head deadline, not at the 30 s check of node', async () => {
    const started = Date.now();
    const closedAfter = await new Promise<number>((resolve) => {
      const s = netConnect(proxyPort, '127.0.0.1', () => s.write(`GET http://${HOST}/ HTTP/1.1\r\n`));
      // One header byte every 200 ms: never idle, never a whole head.
      const drip = setInterval(() => s.write('X'), 200);
      s.on('error', () => {});
      s.on('close', () => {
        clearInterval(drip);
        resolve(Date.now() - started);
      });
    });
    // headersTimeoutMs is 1.5 s here; node checks it every connectionsCheckingInterval (1 s in the data plane).
    expect(closedAfter).toBeLessThan(4_000);
  });

  /** openssl s_client through the proxy to `host`, written to as the test goes; what it received so far. */
  const liveClient = (host: string) => {
    const c = proxiedTlsClient({ proxyPort, host, port: upstreamPort, caFile });
    return { write: c.write, out: c.out, exited: c.exited };
  };

  /** Sends `head`, then one body byte every 200 ms (never idle long) until the data plane closes the connection. */
  const trickle = async (host: string, head: string) => {
    const c = liveClient(host);
    c.write(head);
    const drip = setInterval(() => c.write('x'), 200);
    const closed = await until(() => c.exited(), 15_000);
    clearInterval(drip);
    return { closed, out: c.out() };
  };

  it('a slowloris body on an intercepted connection is cut at the request deadline (408) while others are served', async () => {
    const before = await metric('riptides_dataplane_requests_refused_total', { reason: 'request-timeout' });
    const started = Date.now();
    const slow = trickle(HOST, `POST /trickle HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 100000\r\n\r\n`);
    const ok = await sClient(`GET /fine HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
    expect(ok.out).toMatch(/^HTTP\/1\.1 200/);
    const { closed, out } = await slow;
    expect(closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(REQUEST_DEADLINE_MS + 5_000);
    expect(out).toMatch(/^HTTP\/1\.1 408 /);
    expect(out).toContain(`x-riptides-reason: the request was not received within ${REQUEST_DEADLINE_MS} ms`);
    expect(await metric('riptides_dataplane_requests_refused_total', { reason: 'request-timeout' })).toBe(
      before + 1,
    );
  });

  it('a slow body buffered to sign (SigV4) is cut at the same deadline, and nothing reaches the upstream', async () => {
    urls.length = 0;
    const { closed, out } = await trickle(
      AWS_HOST,
      `POST /sign-me HTTP/1.1\r\nHost: ${AWS_HOST}\r\nX-Amz-Date: 20240101T000000Z\r\nContent-Length: 100000\r\n\r\n`,
    );
    expect(closed).toBe(true);
    expect(out).toMatch(/^HTTP\/1\.1 408 /);
    expect(urls).not.toContain('/sign-me');
  });

  it('a body to sign over the cap is refused with 413 before it reaches the upstream', async () => {
    urls.length = 0;
    const size = SIGNED_BODY_CAP + 1;
    const c = liveClient(AWS_HOST);
    c.write(
      `POST /too-big HTTP/1.1\r\nHost: ${AWS_HOST}\r\nContent-Length: ${size}\r\n\r\n${'x'.repeat(size)}`,
    );
    expect(await until(() => c.exited(), 15_000)).toBe(true);
    const out = c.out();
    expect(out).toMatch(/^HTTP\/1\.1 413 /);
    expect(out).toContain(`x-riptides-reason: request body over ${SIGNED_BODY_CAP} bytes cannot be signed`);
    expect(urls).not.toContain('/too-big');
  });
});
