/**
 * What an attack review of the data plane found (stop 24), each fixed and kept here as the attack it was. Each
 * `it` names the attack and the comment above it what used to happen; the
 * application is a real external process (node under the name `rvclient`, so that attribution maps it to the
 * client identity, as a `process:name` selector would), never the test's own process (the data plane never
 * attributes its own pid).
 */
import { execFile } from 'node:child_process';
import { symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createNetServer, type Server as NetServer, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CredentialStore } from '../../kernel-module/control/credential-store.ts';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import type { MemoryInputs } from '../../kernel-module/dataplane/inputs.ts';
import { namesOwnListener } from '../../kernel-module/dataplane/own-endpoint.ts';
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
  until,
  upstreamTls,
} from './support.ts';

const CLIENT = id('review/client');
const SERVER = id('review/server');
const HOST = 'api.review.test';
/** A destination reached by a binding alone, the identity intercepting (`connection.tls.intercept`), as in the quickstart. */
const HOST2 = 'echo.review.test';
const TOKEN = 'secret-token-0123456789';

/** The application: CONNECT through the proxy, optionally wait, then TLS (or plaintext) and one request. */
const CLIENT_SCRIPT = `
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
const [proxyPort, target, delayMs, caFile, mode, request] = process.argv.slice(2);
const [host, port] = target.split(':');
const out = { connect: '', response: '' };
const done = () => { process.stdout.write(JSON.stringify(out)); process.exit(0); };
setTimeout(done, 8000);
const s = net.connect(Number(proxyPort), '127.0.0.1', () => s.write('CONNECT ' + target + ' HTTP/1.1\\r\\nHost: ' + target + '\\r\\n\\r\\n'));
s.on('error', done);
let head = '';
const onHead = (d) => {
  head += d.toString('latin1');
  if (!head.includes('\\r\\n\\r\\n')) return;
  s.off('data', onHead);
  out.connect = head.split('\\r\\n')[0];
  if (!/ 200 /.test(out.connect)) return done();
  setTimeout(() => {
    const c = mode === 'tls'
      ? tls.connect({ socket: s, servername: host, ca: readFileSync(caFile), checkServerIdentity: () => undefined })
      : s;
    const go = () => c.write(request);
    if (mode === 'tls') c.once('secureConnect', go); else go();
    c.on('data', (d) => { out.response += d.toString('latin1'); });
    c.on('error', (e) => { out.response += '<<' + (e.code ?? e.message) + '>>'; done(); });
    c.on('close', done);
  }, Number(delayMs));
};
s.on('data', onHead);
`;

describe('the data plane under the attack review', () => {
  const tmp = scratch('riptides-review-');
  let inputs: MemoryInputs;
  let dp: DataPlane;
  let upstream: HttpsServer;
  let slow: NetServer;
  let upstreamPort = 0;
  let slowPort = 0;
  let proxyPort = 0;
  let caFile = '';
  let clientBin = '';
  let scriptFile = '';
  const seen: Array<{ url: string; headers: IncomingHttpHeaders }> = [];

  const setRules = () => {
    const client = identity(CLIENT, {
      egress: [egress([destination(HOST, null)], { mode: 'SIMPLE', intercept: true })],
      credentials: [
        bearerBinding('cred', 'review-token', [destination(HOST, null)]),
        bearerBinding('cred', 'review-token-2', [destination(HOST2, null)]),
      ],
    });
    client.inbound.intercept = true;
    inputs.setRules(table([client]));
  };

  beforeAll(async () => {
    const tls = upstreamTls([HOST, HOST2]);
    upstream = createHttpsServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      seen.push({ url: req.url ?? '', headers: req.headers });
      req.resume();
      req.on('end', () => {
        // A response with a transfer coding other than chunked (close-delimited), for the TE test.
        if (req.url === '/te-gzip') {
          res.socket?.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nCODED');
          res.socket?.end();
          return;
        }
        // A response whose coding list ends with an empty element.
        if (req.url === '/te-chunked-comma') {
          res.socket?.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n2\r\nok\r\n0\r\n\r\n');
          return;
        }
        res.end('ok\n');
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamPort = (upstream.address() as { port: number }).port;

    // A plain HTTP upstream that never answers /slow and answers anything else at once.
    slow = createNetServer((s) => {
      s.on('data', (d) => {
        if (!d.toString().includes(' /slow ')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n');
      });
      s.on('error', () => {});
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    slowPort = (slow.address() as { port: number }).port;

    const ca = await authority(join(tmp.dir, 'ca'));
    inputs = await baseInputs(new Map([['rvclient', CLIENT]]), ca, [CLIENT]);
    setRules();
    inputs.loadCredential('cred', { kind: 'bearer', token: TOKEN });
    // The application trusts the node's intercept CA and, as any client of the real API, the API's own CA.
    caFile = join(tmp.dir, 'ca-certificates.crt');
    writeFileSync(caFile, `${inputs.interceptCa()!.cert}\n${tls.ca}`);
    clientBin = join(tmp.dir, 'rvclient');
    symlinkSync(process.execPath, clientBin);
    scriptFile = join(tmp.dir, 'client.mjs');
    writeFileSync(scriptFile, CLIENT_SCRIPT);

    dp = new DataPlane({
      inputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      upstreamCa: tls.ca,
      lookup: loopbackLookup,
    });
    proxyPort = (await dp.start()).proxy!.port;
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    await new Promise((r) => upstream?.close(r));
    await new Promise((r) => slow?.close(r));
    tmp.cleanup();
  });

  /** Runs the application (`rvclient`): { connect: the proxy's status line, response: what came back }. */
  const app = (opts: { delayMs?: number; mode?: 'tls' | 'plain'; request?: string; target?: string }) =>
    new Promise<{ connect: string; response: string }>((resolve, reject) => {
      execFile(
        clientBin,
        [
          scriptFile,
          String(proxyPort),
          opts.target ?? `${HOST}:${upstreamPort}`,
          String(opts.delayMs ?? 0),
          caFile,
          opts.mode ?? 'tls',
          opts.request ?? `GET /x HTTP/1.1\r\nHost: ${HOST}:${upstreamPort}\r\nConnection: close\r\n\r\n`,
        ],
        { timeout: 15_000 },
        (err, stdout) => (err && !stdout ? reject(err) : resolve(JSON.parse(stdout))),
      );
    });

  it('baseline: an intercepted request gets the token', async () => {
    seen.length = 0;
    const r = await app({});
    expect(r.response).toMatch(/^HTTP\/1\.1 200/);
    expect(seen.map((s) => s.headers.authorization)).toEqual([`Bearer ${TOKEN}`]);
  });

  // Attack 1, as it was before its fix: The store refuses CR/LF/NUL "since it would split the header", but the head is written as latin1:
  // U+010D/U+010A become CR/LF on the wire, so a credential value splits the head it is injected into.
  it('a credential value with U+010D U+010A cannot split the injected header (header injection)', async () => {
    const evil = `abc\u010d\u010aX-Injected: yes`;
    let refusedByStore = false;
    try {
      new CredentialStore().load(
        'c0ffee00c0ffee00',
        { kind: 'bearer', token: evil },
        { binding: 'CredentialBinding/ns/x', fingerprint: 'fp', version: 1 },
      );
    } catch {
      refusedByStore = true;
    }
    seen.length = 0;
    inputs.loadCredential('cred', { kind: 'bearer', token: evil });
    try {
      const r = await app({ request: `GET /inj HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n` });
      const injected = seen.some((s) => s.headers['x-injected'] !== undefined);
      // Either the store refuses such a value (the control path never loads it) or nothing splits upstream.
      expect(refusedByStore || !injected, `upstream saw X-Injected; app got ${r.response.slice(0, 60)}`).toBe(
        true,
      );
    } finally {
      inputs.loadCredential('cred', { kind: 'bearer', token: TOKEN });
    }
  });

  // Attack 2, as it was before its fix: After CONNECT 200 the data plane waits sniffTimeoutMs (300 ms) for the ClientHello; a client
  // slower than that is passed through to the real upstream untouched: no credential, no 5xx, nothing logged.
  it('a client slow to start TLS after CONNECT never reaches the upstream without its credential', async () => {
    seen.length = 0;
    // The quickstart's shape: no egress rule, the binding's destination, the identity's intercept.
    const r = await app({
      delayMs: 700,
      target: `${HOST2}:${upstreamPort}`,
      request: `GET /slow-hello HTTP/1.1\r\nHost: ${HOST2}:${upstreamPort}\r\nConnection: close\r\n\r\n`,
    });
    const withoutCredential = seen.filter((s) => s.headers.authorization !== `Bearer ${TOKEN}`);
    expect(
      withoutCredential,
      `app got: ${r.response.slice(0, 80)} — the request reached the upstream without the credential`,
    ).toEqual([]);
  });

  // Attack 3, as it was before its fix: Loop detection compares the CONNECT authority's text with the listener's address: other
  // spellings of the same address (127.1, 0.0.0.0, 0, ::ffff:127.0.0.1) are accepted and nest the proxy in itself.
  it('CONNECT to the proxy itself under another spelling of its address is a loop (508)', async () => {
    const status = (authority: string) =>
      new Promise<string>((resolve) => {
        const s = netConnect(proxyPort, '127.0.0.1', () =>
          s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`),
        );
        let got = '';
        s.on('data', (d) => {
          got += d;
          if (got.includes('\r\n')) {
            s.destroy();
            resolve(got.split('\r\n')[0]!);
          }
        });
        s.on('error', () => resolve(got));
      });
    const results: Record<string, string> = {};
    for (const a of [
      `127.0.0.1:${proxyPort}`,
      `0.0.0.0:${proxyPort}`,
      `[::ffff:127.0.0.1]:${proxyPort}`,
      `[0:0:0:0:0:ffff:7f00:1]:${proxyPort}`,
      `[::]:${proxyPort}`,
    ])
      results[a] = await status(a);
    for (const [a, line] of Object.entries(results)) expect(line, `CONNECT ${a}`).toMatch(/ 508 /);
    // A name that resolves to this host (as `127.1` does with the system resolver): known only once connected,
    // and refused then, never a tunnel into the proxy again.
    expect(await status(`loop.review.test:${proxyPort}`)).toMatch(/ 502 /);
    expect(await status(`localhost:${proxyPort}`)).toMatch(/ 502 /);
    expect(await status(`loop.review.test:${upstreamPort}`)).toMatch(/ 200 /);
  });

  // Attack 4, as it was before its fix: Pipelined absolute-form requests on the proxy: node queues the second response, which never
  // emits 'close' when the client goes away, so its connections record is never closed.
  it('pipelined absolute-form requests leave no connections record once the client is gone', async () => {
    await new Promise<void>((resolve) => {
      const s = netConnect(proxyPort, '127.0.0.1', () =>
        s.write(
          `GET http://127.0.0.1:${slowPort}/slow HTTP/1.1\r\nHost: 127.0.0.1:${slowPort}\r\n\r\n` +
            `GET http://127.0.0.1:${slowPort}/b HTTP/1.1\r\nHost: 127.0.0.1:${slowPort}\r\n\r\n`,
        ),
      );
      s.on('error', () => {});
      setTimeout(() => {
        s.destroy();
        resolve();
      }, 500);
    });
    await until(() => dp.connections().length === 0, 5_000);
    expect(dp.connections().map((r) => `${r.mode} ${r.dst}:${r.dst_port}`)).toEqual([]);
  });

  // Attack 5, as it was before its fix: `/\host/…` is read as an authority by WHATWG URL resolvers, like `//host/…`, which is refused;
  // the proxy path refuses it too (its URL parser turns it into `//`), the intercept relay forwards it.
  it('a request target starting with /\\ is refused where a credential is injected, as // is', async () => {
    seen.length = 0;
    const r = await app({
      request: `GET /\\evil.example/x HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`,
    });
    expect(r.response).toMatch(/^HTTP\/1\.1 400/);
  });

  // Attack 6, as it was before its fix: A response with a transfer coding other than chunked is relayed close-delimited with its
  // Transfer-Encoding header dropped: the application reads the coded bytes as the body.
  it('a response transfer coding other than chunked is not silently dropped', async () => {
    const r = await app({
      request: `GET /te-gzip HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`,
    });
    const [head] = r.response.split('\r\n\r\n');
    // Either the coding is announced to the application, or the response is refused (502).
    expect(/transfer-encoding:[^\r]*gzip/i.test(head ?? '') || /^HTTP\/1\.1 502/.test(r.response)).toBe(true);
    // `chunked,`: llhttp reads the body as not chunked (framed by the close), so relaying it as chunked would
    // hand the application the chunk framing as its body: refused like any coding the relay cannot carry.
    const comma = await app({
      request: `GET /te-chunked-comma HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`,
    });
    expect(comma.response).toMatch(/^HTTP\/1\.1 502/);
  });
});

// Attack 7, as it was before its fix: The proxy's absolute-form path picks 'plain' for every rule that is not MUTUAL or SIMPLE: a mode-null
// rule toward a managed peer (README: "mTLS when the peer is managed") goes out in plaintext there, while the
// same request through CONNECT or an outbound mapping is upgraded. http_proxy is what the README points workloads at.
describe('the data plane under the attack review: mode null through the proxy (plain HTTP)', () => {
  const tmp = scratch('riptides-review-null-');
  let serverDp: DataPlane;
  let clientDp: DataPlane;
  let workload: Server;
  let fronted = 0;
  let proxy = '';

  beforeAll(async () => {
    workload = createHttpServer((req, res) => {
      req.resume();
      res.end('hello\n');
    });
    await new Promise<void>((r) => workload.listen(0, '127.0.0.1', r));
    const ca = await authority(join(tmp.dir, 'ca'));
    const serverInputs = await baseInputs(new Map(), ca, [SERVER]);
    serverInputs.setRules(table([identity(SERVER, { mode: 'PERMISSIVE', inbound: [CLIENT] })]));
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
    const clientInputs = await baseInputs(new Map([['curl', CLIENT]]), ca, [CLIENT]);
    clientInputs.setRules(
      table([
        identity(CLIENT, {
          egress: [egress([destination('127.0.0.1', fronted)], { mode: null }, [SERVER])],
        }),
      ]),
    );
    clientDp = new DataPlane({ inputs: clientInputs, proxyListen: { host: '127.0.0.1', port: 0 } });
    proxy = `http://127.0.0.1:${(await clientDp.start()).proxy!.port}`;
  }, 60_000);

  afterAll(async () => {
    await clientDp?.stop();
    await serverDp?.stop();
    await new Promise((r) => workload?.close(r));
    tmp.cleanup();
  });

  it('a mode-null rule toward a managed peer is upgraded to mTLS on the proxy path too', async () => {
    const got = await run('curl', ['-sS', '--max-time', '10', '-x', proxy, `http://127.0.0.1:${fronted}/n`]);
    expect(got.stdout).toBe('hello\n');
    const inbound = await serverDp.metrics.registry
      .getSingleMetric('riptides_dataplane_connections_total')!
      .get();
    const mode = (m: string) => inbound.values.find((v) => v.labels.mode === m)?.value ?? 0;
    expect({ mtls: mode('mtls'), plain: mode('permissive-plain') }).toEqual({ mtls: 1, plain: 0 });
  });
});

describe('the proxy listener under its spellings (own-endpoint.ts)', () => {
  const own = new Set(['127.0.0.1:3128']);
  it.each([
    '127.0.0.1',
    '127.1',
    '0',
    '0.0.0.0',
    '2130706433',
    '::ffff:7f00:1',
    '0:0:0:0:0:ffff:127.0.0.1',
    '[::ffff:127.0.0.1]',
    '0:0:0:0:0:0:0:0',
    '::0',
  ])('%s names the listener bound to 127.0.0.1', (host) => {
    expect(namesOwnListener(own, host, 3128)).toBe(true);
  });
  // Another address on the same port is another socket (a workload bound to 127.0.0.2, or ::1).
  it.each(['127.0.0.2', '::1', '10.0.0.1'])('%s on the same port does not', (host) => {
    expect(namesOwnListener(own, host, 3128)).toBe(false);
  });
  it('any local address names a listener bound to all addresses, another port does not', () => {
    const all = new Set(['0.0.0.0:3128']);
    expect(namesOwnListener(all, '127.0.0.2', 3128)).toBe(true);
    expect(namesOwnListener(all, '::1', 3128)).toBe(true);
    expect(namesOwnListener(all, '127.0.0.1', 3129)).toBe(false);
  });
});
