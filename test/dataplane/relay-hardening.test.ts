/**
 * The relay and the proxy's absolute-form path against an attack review: a credential goes only to the Host
 * the decision was made for, never in a TRACE, a presigned URL the signer cannot make is a 400 (not a crashed
 * process), an upstream paused for a vanished application is never pooled, bytes an upstream sends after its
 * response never reach the next exchange, bodies buffered to sign share one budget, a trickled response head
 * is cut at its deadline, Connection-named headers stay on this hop, a `Connection: close` response is the last
 * thing written, and an HTTP/1.0 keep-alive is answered as such. Applications are child processes (node, curl,
 * python3) so that the data plane attributes them; the upstreams are raw servers that record every byte.
 */
import { execFile } from 'node:child_process';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
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
  scratch,
  table,
  upstreamTls,
} from './support.ts';

const run = promisify(execFile);
const CLIENT = id('hardening/client');
const HOST = 'api.example.test';
const AWS_HOST = 's3.us-east-1.amazonaws.com';
const PLAIN_HOST = 'plain.example.test';
const TOKEN = 'hardening-secret-token';
const SIGNED_BODY_CAP = 64 * 1024;
const SIGNING_BUDGET = 96 * 1024;
const HEAD_DEADLINE_MS = 1_500;
const APP = join(import.meta.dirname, 'fixtures', 'raw-app.mjs');
const SMALL_WINDOW_APP = join(import.meta.dirname, 'fixtures', 'small_window_app.py');

type Conn = { raw: string; sock: Socket };
type Responder = (c: Conn) => void;
/** Answers every request line seen so far on the connection that has not been answered yet with 200 "ok". */
const answered = new WeakMap<Conn, number>();
const okResponder: Responder = (c) => {
  const total = c.raw.match(/^[A-Z]+ \S+ HTTP\/1\.1\r$/gm)?.length ?? 0;
  for (let i = answered.get(c) ?? 0; i < total; i++)
    c.sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  answered.set(c, total);
};

describe('the relay refuses what would send a credential where the policy did not bind it, and stays in step', () => {
  const tmp = scratch();
  let dp: DataPlane;
  let tlsUp: TlsServer;
  let plainUp: NetServer;
  let tlsPort = 0;
  let plainPort = 0;
  let proxyPort = 0;
  let ca = '';
  const tlsConns: Conn[] = [];
  const plainConns: Conn[] = [];
  let responder: Responder = okResponder;
  let plainResponder: Responder = okResponder;
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    // evil.example.test too: an upstream that would accept a name the policy never bound (a shared front).
    const t = upstreamTls([HOST, AWS_HOST, 'evil.example.test']);
    tlsUp = createTlsServer({ cert: t.cert, key: t.key }, (sock) => {
      const c = { raw: '', sock };
      tlsConns.push(c);
      sock.on('data', (d) => {
        c.raw += d.toString('latin1');
        responder(c);
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => tlsUp.listen(0, '127.0.0.1', r));
    tlsPort = (tlsUp.address() as { port: number }).port;
    // Plain HTTP upstream; the managed-peer probe's ClientHello is refused, so the data plane goes plain.
    plainUp = createNetServer((sock) => {
      const c = { raw: '', sock };
      sock.on('data', (d) => {
        const fresh = d.toString('latin1');
        if (fresh.startsWith('\x16')) return void sock.destroy();
        if (!plainConns.includes(c)) plainConns.push(c);
        c.raw += fresh;
        plainResponder(c);
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => plainUp.listen(0, '127.0.0.1', r));
    plainPort = (plainUp.address() as { port: number }).port;

    const auth = await authority(join(tmp.dir, 'ca'));
    const inputs = await baseInputs(
      new Map([
        ['node', CLIENT],
        ['curl', CLIENT],
        ['python3', CLIENT],
      ]),
      auth,
      [CLIENT],
    );
    const api = destination(HOST, null);
    const s3 = destination(AWS_HOST, null, 'Service/riptides-system/s3');
    const plain = destination(PLAIN_HOST, null, 'Service/riptides-system/plain');
    // A destination the policy knows only by its address.
    const byIp = destination('127.0.0.1', null, 'Service/riptides-system/by-ip');
    const aws = awsBinding('cred-aws', 'hardening-aws', [s3]);
    inputs.setRules(
      table([
        identity(CLIENT, {
          egress: [
            egress([api, s3, byIp], { mode: 'SIMPLE', intercept: true }),
            egress([plain], { mode: null }),
          ],
          credentials: [bearerBinding('cred', 'api-token', [api, plain, byIp]), aws],
        }),
      ]),
    );
    inputs.loadCredential('cred', { kind: 'bearer', token: TOKEN });
    inputs.loadCredential('cred-aws', {
      kind: 'aws',
      accessKeyId: 'ASIATEMPORARYKEY',
      secretAccessKey: 'temporary-secret',
      sessionToken: 'session-token',
      expiresAt: new Date(Date.now() + 3_600_000),
    });
    ca = inputs.interceptCa()!.cert;
    dp = new DataPlane({
      inputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      upstreamCa: t.ca,
      lookup: loopbackLookup,
      limits: {
        headersTimeoutMs: 3_000,
        requestTimeoutMs: 4_000,
        idleTimeoutMs: 3_000,
        responseHeadTimeoutMs: HEAD_DEADLINE_MS,
        maxSignedBodyBytes: SIGNED_BODY_CAP,
        maxSignedBytesTotal: SIGNING_BUDGET,
      },
    });
    proxyPort = (await dp.start()).proxy!.port;
  }, 60_000);

  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await dp?.stop();
    await new Promise((r) => tlsUp?.close(r));
    await new Promise((r) => plainUp?.close(r));
    tmp.cleanup();
  });

  /** The application (node, attributed) on an intercepted connection to `host`; what it got back. */
  const app = async (
    steps: Array<{ data?: string; wait?: number; rst?: boolean }>,
    options: { host?: string; servername?: string; total?: number; plain?: boolean } = {},
  ) => {
    const spec = {
      proxy: proxyPort,
      host: options.host ?? HOST,
      ...(options.servername ? { servername: options.servername } : {}),
      port: options.plain ? plainPort : tlsPort,
      ca,
      plain: options.plain ?? false,
      total: options.total ?? 3_000,
      steps,
    };
    const { stdout } = await run('node', [APP], { env: { ...process.env, SPEC: JSON.stringify(spec) } });
    return JSON.parse(stdout) as { got: string; closed: boolean };
  };
  /** What the upstreams received from `from` (an index into tlsConns) on. */
  const upstreamSince = (from: number) =>
    tlsConns
      .slice(from)
      .map((c) => c.raw)
      .join('');
  const metric = async (name: string, labels: Record<string, string>) => {
    const m = await dp.metrics.registry.getSingleMetric(name)!.get();
    return m.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value ?? 0;
  };

  it('a Host naming another site, two Hosts, an empty Host or another absolute-form authority: 400, no token', async () => {
    responder = okResponder;
    const from = tlsConns.length;
    const heads = [
      `GET /a HTTP/1.1\r\nHost: evil.example.com\r\n\r\n`,
      `GET /a HTTP/1.1\r\nHost: ${HOST}\r\nHost: evil.example.com\r\n\r\n`,
      `GET /a HTTP/1.1\r\nHost:\r\n\r\n`,
      `GET /a HTTP/1.1\r\nHost: ${HOST}:${tlsPort + 1}\r\n\r\n`,
      `GET http://evil.example.com/a HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
    ];
    const before = await metric('riptides_dataplane_requests_refused_total', { reason: 'host' });
    const answers = await Promise.all(heads.map((h) => app([{ data: h }])));
    for (const a of answers) {
      expect(a.got).toMatch(/^HTTP\/1\.1 400 /);
      expect(a.got).toMatch(
        /x-riptides-reason: (request target: )?the (request has more than one Host|Host header)/i,
      );
      expect(a.got).not.toContain(TOKEN);
    }
    expect(upstreamSince(from)).not.toContain(TOKEN);
    expect(await metric('riptides_dataplane_requests_refused_total', { reason: 'host' })).toBe(
      before + heads.length,
    );
  }, 30_000);

  it('a request target that is not a path (another scheme, //authority, * but for OPTIONS): 400, no token', async () => {
    responder = okResponder;
    const from = tlsConns.length;
    const heads = [
      `GET ftp://evil.example.com/a HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
      `GET //evil.example.com/a HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
      `GET * HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
    ];
    for (const a of await Promise.all(heads.map((h) => app([{ data: h }])))) {
      expect(a.got).toMatch(/^HTTP\/1\.1 400 /);
      expect(a.got).toMatch(
        /x-riptides-reason: a credential goes only with a request target that is a path/i,
      );
    }
    expect(upstreamSince(from)).not.toContain(TOKEN);
  }, 30_000);

  it('a connection to an address the policy binds does not let the application name another site by SNI', async () => {
    responder = okResponder;
    const from = tlsConns.length;
    const a = await app([{ data: 'GET /x HTTP/1.1\r\nHost: evil.example.test\r\n\r\n' }], {
      host: '127.0.0.1',
      servername: 'evil.example.test',
    });
    expect(a.got).not.toMatch(/^HTTP\/1\.1 200 /);
    expect(upstreamSince(from)).not.toContain(TOKEN);
  }, 30_000);

  it('the target Host in any case, with its port or none, is served; HTTP/1.0 without Host gets the target', async () => {
    responder = okResponder;
    const from = tlsConns.length;
    const a = await app([{ data: `GET /a HTTP/1.1\r\nHost: API.Example.Test.:${tlsPort}\r\n\r\n` }], {
      total: 1_500,
    });
    expect(a.got).toMatch(/^HTTP\/1\.1 200 /);
    const b = await app([{ data: 'GET /b HTTP/1.0\r\n\r\n' }], { total: 1_500 });
    expect(b.got).toMatch(/^HTTP\/1\.1 200 /);
    const up = upstreamSince(from);
    expect(up).toContain(`GET /b HTTP/1.1\r\nHost: ${HOST}:${tlsPort}\r\nAuthorization: Bearer ${TOKEN}\r\n`);
  }, 30_000);

  it('the proxy path holds the Host to the URL authority: 400 and no token for another', async () => {
    plainResponder = okResponder;
    const before = plainConns.map((c) => c.raw).join('');
    const url = `http://${PLAIN_HOST}:${plainPort}/p`;
    const r = await run('curl', [
      '-sS',
      '-i',
      '-m',
      '5',
      '-x',
      `http://127.0.0.1:${proxyPort}`,
      '-H',
      'Host: evil.example.com',
      url,
    ]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 400 /);
    expect(r.stdout).toMatch(/x-riptides-reason: the Host header does not name the destination/);
    const ok = await run('curl', ['-sS', '-i', '-m', '5', '-x', `http://127.0.0.1:${proxyPort}`, url]);
    expect(ok.stdout).toMatch(/^HTTP\/1\.1 200 /);
    const after = plainConns
      .map((c) => c.raw)
      .join('')
      .slice(before.length);
    expect(after.match(/Authorization: Bearer/g)).toHaveLength(1);
    expect(after).not.toContain('evil.example.com');
  }, 30_000);

  it('TRACE where a credential is injected is refused with 405, and nothing reaches the upstream', async () => {
    responder = (c) =>
      c.sock.write(
        `HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: ${c.raw.length}\r\n\r\n${c.raw}`,
      );
    const from = tlsConns.length;
    const a = await app([{ data: `TRACE / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n` }]);
    expect(a.got).toMatch(/^HTTP\/1\.1 405 /);
    expect(a.got).not.toContain(TOKEN);
    expect(upstreamSince(from)).not.toContain('TRACE');
    const r = await run('curl', [
      '-sS',
      '-i',
      '-m',
      '5',
      '-X',
      'TRACE',
      '-x',
      `http://127.0.0.1:${proxyPort}`,
      `http://${PLAIN_HOST}:${plainPort}/t`,
    ]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 405 /);
    expect(r.stdout).not.toContain(TOKEN);
  }, 30_000);

  it('a presigned URL over seven days on the proxy path is a 400, not a crashed process', async () => {
    responder = okResponder;
    const r = await run('curl', [
      '-sS',
      '-i',
      '-m',
      '5',
      '-x',
      `http://127.0.0.1:${proxyPort}`,
      `http://${AWS_HOST}:${tlsPort}/bucket/key?X-Amz-Signature=x&X-Amz-Expires=999999`,
    ]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 400 /);
    expect(r.stdout).toMatch(/x-riptides-reason: cannot re-sign the request: X-Amz-Expires 999999 is over/);
    await new Promise((res) => setTimeout(res, 100));
    expect(unhandled).toEqual([]);
  }, 30_000);

  it('an upstream paused for an application that reset is never pooled: the next application is served at once', async () => {
    // The review's shape: a body that fills the way to the application (it never reads), then a last piece
    // that comes in one read: the write of it is refused, the upstream paused, and the response complete in that
    // same read, so the exchange is over while the upstream waits for a drain the reset below makes never come.
    const part = 2_150_000;
    plainResponder = (c) => {
      if (!/^GET \/big /m.test(c.raw) || answered.has(c)) return okResponder(c);
      answered.set(c, 1);
      c.sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${part + 60_000}\r\n\r\n`);
      for (let i = 0; i < part / 10_000; i++) c.sock.write('x'.repeat(10_000));
      setTimeout(() => c.sock.write('y'.repeat(60_000)), 400);
    };
    const spec = {
      proxy: proxyPort,
      host: PLAIN_HOST,
      port: plainPort,
      request: `GET /big HTTP/1.1\r\nHost: ${PLAIN_HOST}\r\n\r\n`,
      wait: 1.0,
    };
    await run('python3', [SMALL_WINDOW_APP], { env: { ...process.env, SPEC: JSON.stringify(spec) } });
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    const b = await app(
      [{ data: `GET /next HTTP/1.1\r\nHost: ${PLAIN_HOST}\r\nConnection: close\r\n\r\n` }],
      {
        host: PLAIN_HOST,
        plain: true,
        total: 2_500,
      },
    );
    expect(b.got).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/);
    expect(Date.now() - started).toBeLessThan(2_500);
  }, 30_000);

  it('bytes an upstream sends after its response never reach the next exchange', async () => {
    let n = 0;
    responder = (c) => {
      const total = c.raw.match(/^GET \S+ HTTP\/1\.1\r$/gm)?.length ?? 0;
      if ((answered.get(c) ?? 0) >= total) return;
      answered.set(c, total);
      n++;
      c.sock.write(
        n === 1
          ? 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nFORGED'
          : 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond',
      );
    };
    const from = tlsConns.length;
    const a = await app(
      [
        { data: `GET /a HTTP/1.1\r\nHost: ${HOST}\r\n\r\n` },
        { wait: 300 },
        { data: `GET /b HTTP/1.1\r\nHost: ${HOST}\r\n\r\n` },
      ],
      { total: 1_500 },
    );
    expect(a.got).toContain('ok');
    expect(a.got).toContain('second');
    expect(a.got).not.toContain('FORGED');
    // The second request went on a new upstream connection: the first could not be trusted any more.
    const carrying = tlsConns.slice(from).filter((c) => /^GET \/b /m.test(c.raw));
    expect(carrying).toHaveLength(1);
    expect(carrying[0]!.raw).not.toMatch(/^GET \/a /m);
  }, 30_000);

  it('bodies buffered to sign share one budget: past it 503, and what a closed connection held comes back', async () => {
    responder = (c) => {
      if (c.raw.endsWith('Z') && !answered.has(c)) {
        answered.set(c, 1);
        c.sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      }
    };
    const size = 60_000;
    const post = (path: string) =>
      `POST ${path} HTTP/1.1\r\nHost: ${AWS_HOST}\r\nX-Amz-Date: 20240101T000000Z\r\nContent-Length: ${size}\r\n\r\n`;
    const before = await metric('riptides_dataplane_requests_refused_total', { reason: 'signing-budget' });
    const holding = app([{ data: post('/hold') + 'a'.repeat(size - 1_000) }, { wait: 1_500 }], {
      host: AWS_HOST,
      total: 1_500,
    });
    await new Promise((r) => setTimeout(r, 700));
    const refused = await app([{ data: post('/refused') + 'b'.repeat(size - 1) + 'Z' }], { host: AWS_HOST });
    expect(refused.got).toMatch(/^HTTP\/1\.1 503 /);
    expect(refused.got).toContain('x-riptides-reason: the data plane is buffering too many request bodies');
    await holding;
    await new Promise((r) => setTimeout(r, 200));
    const served = await app([{ data: post('/served') + 'c'.repeat(size - 1) + 'Z' }], {
      host: AWS_HOST,
      total: 2_000,
    });
    expect(served.got).toMatch(/^HTTP\/1\.1 200 /);
    expect(await metric('riptides_dataplane_requests_refused_total', { reason: 'signing-budget' })).toBe(
      before + 1,
    );
    expect(dp.signingBytesInUse()).toBe(0);
  }, 30_000);

  it('a response head trickled a byte at a time is cut at its deadline with 504', async () => {
    const timers: NodeJS.Timeout[] = [];
    responder = (c) => {
      if (answered.has(c)) return;
      answered.set(c, 1);
      const head = 'HTTP/1.1 200 OK\r\nX-Slow: '.padEnd(200, 'x');
      let i = 0;
      const t = setInterval(() => {
        if (i < head.length && !c.sock.destroyed) c.sock.write(head[i++]!);
      }, 200);
      timers.push(t);
    };
    const started = Date.now();
    const a = await app([{ data: `GET /trickle HTTP/1.1\r\nHost: ${HOST}\r\n\r\n` }], { total: 6_000 });
    for (const t of timers) clearInterval(t);
    expect(a.got).toMatch(/^HTTP\/1\.1 504 /);
    expect(a.got).toContain(`no response head from the upstream within ${HEAD_DEADLINE_MS} ms`);
    expect(Date.now() - started).toBeLessThan(HEAD_DEADLINE_MS + 2_500);
  }, 30_000);

  it('headers named in Connection stay on this hop (the framing and Host excepted)', async () => {
    responder = okResponder;
    const from = tlsConns.length;
    const a = await app(
      [
        {
          data: `GET /c HTTP/1.1\r\nHost: ${HOST}\r\nConnection: X-Hop, Content-Length, Host\r\nX-Hop: 1\r\nX-Kept: 2\r\n\r\n`,
        },
      ],
      { total: 1_500 },
    );
    expect(a.got).toMatch(/^HTTP\/1\.1 200 /);
    const up = upstreamSince(from);
    expect(up).toContain('X-Kept: 2');
    expect(up).not.toContain('X-Hop');
    expect(up).toContain(`Host: ${HOST}`);
  }, 30_000);

  it('after a Connection: close response nothing more is written, not even a pipelining refusal', async () => {
    responder = okResponder;
    const a = await app([
      {
        data: `GET /a HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
      },
    ]);
    expect(a.closed).toBe(true);
    expect([...a.got.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1])).toEqual(['200']);
  }, 30_000);

  it('an HTTP/1.0 keep-alive request is answered keep-alive; without it the connection closes', async () => {
    responder = okResponder;
    const kept = await app(
      [
        { data: `GET /a HTTP/1.0\r\nHost: ${HOST}\r\nConnection: keep-alive\r\n\r\n` },
        { wait: 300 },
        { data: `GET /b HTTP/1.0\r\nHost: ${HOST}\r\n\r\n` },
      ],
      { total: 3_000 },
    );
    const responses = kept.got.split(/(?=HTTP\/1\.1 )/);
    expect(responses).toHaveLength(2);
    expect(responses[0]).toMatch(/\r\nConnection: keep-alive\r\n/i);
    expect(responses[1]).toMatch(/\r\nConnection: close\r\n/i);
    expect(kept.closed).toBe(true);
  }, 30_000);
});
