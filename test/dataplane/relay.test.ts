/**
 * The HTTP/1.1 relay on an intercepted connection (openssl s_client as the application, through the proxy, to
 * an HTTPS upstream): one kept-alive application connection and one kept-alive upstream connection carry every
 * way a response can be framed (Content-Length, chunked, HEAD, 204, a 1xx before the final response, close-
 * delimited) and a chunked or 100-continue request body; a request sent while a response is in flight is
 * refused after that response, never inside it.
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
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
  upstreamTls,
} from './support.ts';

const CLIENT = id('relay/client');
const HOST = 'relay.example.test';

describe('the intercept relay frames every response and request body, one connection each side', () => {
  const tmp = scratch();
  let upstream: Server;
  let upstreamPort = 0;
  let upstreamConnections = 0;
  const seen: Array<{ method: string; url: string; authorization?: string; body: string }> = [];
  let dp: DataPlane;
  let proxyPort = 0;
  let caFile = '';
  const apps: ChildProcessWithoutNullStreams[] = [];

  beforeAll(async () => {
    const tls = upstreamTls([HOST]);
    upstream = createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        seen.push({
          method: req.method ?? '',
          url: req.url ?? '',
          authorization: req.headers.authorization,
          body,
        });
        switch (req.url) {
          case '/length':
            res
              .writeHead(200, { 'content-length': '11' })
              .end(req.method === 'HEAD' ? undefined : 'length-body');
            break;
          case '/chunked':
            res.writeHead(200);
            res.write('a');
            res.write('bb');
            res.end('ccc');
            break;
          case '/no-content':
            res.writeHead(204).end();
            break;
          case '/early':
            res.writeEarlyHints({ link: '</style.css>; rel=preload' });
            res.writeHead(200, { 'content-length': '5' }).end('final');
            break;
          case '/echo':
            res.end(`${req.headers['transfer-encoding'] ?? 'length'}:${body}`);
            break;
          case '/nominated':
            // Its Connection header names a header meant for this hop only (and a framing one, which stays).
            res
              .writeHead(200, {
                'content-length': '2',
                connection: 'X-Upstream-Hop, content-length',
                'x-upstream-hop': 'upstream-only',
                'x-end-to-end': 'kept',
              })
              .end('ok');
            break;
          case '/slow':
            setTimeout(() => res.writeHead(200, { 'content-length': '4' }).end('slow'), 300);
            break;
          case '/close-delimited':
            // HTTP/1.1 without a length or chunking: the body ends when the upstream closes.
            res.socket!.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close');
            break;
          default:
            res.writeHead(404).end();
        }
      });
    });
    upstream.on('secureConnection', () => {
      upstreamConnections++;
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamPort = (upstream.address() as { port: number }).port;

    const ca = await authority(join(tmp.dir, 'ca'));
    const inputs = await baseInputs(new Map([['openssl', CLIENT]]), ca, [CLIENT]);
    const api = destination(HOST, null);
    inputs.setRules(
      table([
        identity(CLIENT, {
          egress: [egress([api], { mode: 'SIMPLE', intercept: true })],
          credentials: [bearerBinding('cred', 'relay-token', [api])],
        }),
      ]),
    );
    inputs.loadCredential('cred', { kind: 'bearer', token: 'relay-secret' });
    caFile = join(tmp.dir, 'ca-certificates.crt');
    writeFileSync(caFile, inputs.interceptCa()!.cert);
    dp = new DataPlane({
      inputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      upstreamCa: tls.ca,
      lookup: loopbackLookup,
    });
    proxyPort = (await dp.start()).proxy!.port;
  }, 60_000);

  afterAll(async () => {
    for (const a of apps) a.kill();
    await dp?.stop();
    upstream?.closeAllConnections();
    await new Promise((r) => upstream?.close(r));
    tmp.cleanup();
  });

  /** One TLS connection of the application through the proxy; what it receives accumulates in `out()`. */
  const app = () => {
    const c = proxiedTlsClient({ proxyPort, host: HOST, port: upstreamPort, caFile });
    apps.push(c.child);
    return {
      write: c.write,
      /** Writes `text`, then waits (bounded) until `done` holds for what came back after it. */
      async exchange(text: string, done: (reply: string) => boolean): Promise<string> {
        const from = c.out().length;
        c.write(text);
        await until(() => done(c.out().slice(from)) || c.exited(), 10_000);
        return c.out().slice(from);
      },
      out: c.out,
      exited: c.exited,
    };
  };

  it('every response framing and a chunked or 100-continue body, over one connection each side', async () => {
    seen.length = 0;
    const before = upstreamConnections;
    const a = app();
    const get = (method: string, path: string) => `${method} ${path} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;

    const length = await a.exchange(get('GET', '/length'), (r) => r.endsWith('length-body'));
    expect(length).toMatch(
      /^HTTP\/1\.1 200 OK\r\n(?=[\s\S]*content-length: 11\r\n)[\s\S]*\r\n\r\nlength-body$/i,
    );

    const chunked = await a.exchange(get('GET', '/chunked'), (r) => r.endsWith('0\r\n\r\n'));
    expect(chunked).toMatch(/transfer-encoding: chunked\r\n/i);
    expect(chunked).toMatch(/\r\n\r\n1\r\na\r\n2\r\nbb\r\n3\r\nccc\r\n0\r\n\r\n$/);

    // HEAD: the length of what GET would send, and no body; the next response follows at once.
    const head = await a.exchange(get('HEAD', '/length'), (r) => r.includes('\r\n\r\n'));
    expect(head).toMatch(/content-length: 11\r\n[\s\S]*\r\n\r\n$/i);

    // What the upstream's Connection header names stays on its hop; the length it frames with does not.
    const nominated = await a.exchange(get('GET', '/nominated'), (r) => r.endsWith('\r\n\r\nok'));
    expect(nominated).toMatch(/\r\nx-end-to-end: kept\r\n/i);
    expect(nominated).toMatch(/\r\ncontent-length: 2\r\n/i);
    expect(nominated).not.toMatch(/x-upstream-hop|upstream-only/i);

    const none = await a.exchange(get('GET', '/no-content'), (r) => r.includes('\r\n\r\n'));
    expect(none).toMatch(/^HTTP\/1\.1 204 /);

    // A 1xx is the upstream's own business: the application sees the final response only.
    const early = await a.exchange(get('GET', '/early'), (r) => r.endsWith('final'));
    expect(early).toMatch(/^HTTP\/1\.1 200 /);
    expect(early).not.toMatch(/103/);

    const echoed = await a.exchange(
      `POST /echo HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n`,
      (r) => r.includes('chunked:wikipedia'),
    );
    expect(echoed).toMatch(/^HTTP\/1\.1 200 /);
    expect(echoed).toContain('chunked:wikipedia');

    // Expect: 100-continue: the application is told to go on before it sends its body.
    const go = await a.exchange(
      `POST /echo HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`,
      (r) => r.includes('\r\n\r\n'),
    );
    expect(go).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    const continued = await a.exchange('hello', (r) => r.includes('length:hello'));
    expect(continued).toMatch(/^HTTP\/1\.1 200 /);

    expect(upstreamConnections - before).toBe(1);
    expect(a.exited()).toBe(false);

    // Close-delimited: the body reaches the application, then the connection closes (its only end marker).
    const last = await a.exchange(get('GET', '/close-delimited'), (r) => r.endsWith('until-close'));
    expect(last).toMatch(
      /^HTTP\/1\.1 200 OK\r\n(?=[\s\S]*connection: close\r\n)[\s\S]*\r\n\r\nuntil-close$/i,
    );
    expect(await until(() => a.exited(), 10_000)).toBe(true);

    expect(seen.map((s) => [s.method, s.url, s.body])).toEqual([
      ['GET', '/length', ''],
      ['GET', '/chunked', ''],
      ['HEAD', '/length', ''],
      ['GET', '/nominated', ''],
      ['GET', '/no-content', ''],
      ['GET', '/early', ''],
      ['POST', '/echo', 'wikipedia'],
      ['POST', '/echo', 'hello'],
      ['GET', '/close-delimited', ''],
    ]);
    expect(new Set(seen.map((s) => s.authorization))).toEqual(new Set(['Bearer relay-secret']));
  });

  it('a method whose llhttp index is not its place in _http_common.methods (QUERY) is relayed as sent, never renamed', async () => {
    seen.length = 0;
    const a = app();
    const reply = await a.exchange(
      `QUERY /echo HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 7\r\n\r\nselect!`,
      (r) => r.includes('length:select!'),
    );
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.map((s) => [s.method, s.url, s.body])).toEqual([['QUERY', '/echo', 'select!']]);
  });

  it('a request sent while a response is in flight is refused after that response, never inside it', async () => {
    seen.length = 0;
    const a = app();
    a.write(`GET /slow HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    // The upstream has the first request and holds its answer: the second comes while it is in flight.
    expect(await until(() => seen.length === 1, 10_000)).toBe(true);
    expect(a.out()).toBe('');
    a.write(`GET /length HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    expect(await until(() => a.exited(), 10_000)).toBe(true);
    const out = a.out();
    expect(out).toMatch(
      /^HTTP\/1\.1 200 OK\r\n[\s\S]*?\r\n\r\nslow(HTTP\/1\.1 400 Bad Request\r\n[\s\S]*x-riptides-reason: pipelined requests are not supported)/,
    );
    expect(seen.map((s) => s.url)).toEqual(['/slow']);
  });
});
