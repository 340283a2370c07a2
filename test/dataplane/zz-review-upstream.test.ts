/** Scratch review probes of the relay's upstream side (to be deleted). */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { createServer, type Server, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import { authority, baseInputs, bearerBinding, destination, egress, id, identity, loopbackLookup, scratch, table } from './support.ts';

const run = promisify(execFile);
const CLIENT = id('review/py');
const HOST = 'plain.example.test';
const conns: Array<{ raw: string; sock: Socket }> = [];
type Responder = (c: { raw: string; sock: Socket }, fresh: string) => void;
let responder: Responder = () => {};
let dp: DataPlane;
let up: Server;
let upPort = 0;
let proxyPort = 0;
const tmp = scratch();

async function app(steps: unknown[], rcvbuf = 0) {
  const spec = { proxy: proxyPort, host: HOST, port: upPort, steps, rcvbuf };
  const t0 = Date.now();
  const { stdout } = await run('python3', ['/tmp/zzr/pyapp.py'], { env: { ...process.env, SPEC: JSON.stringify(spec) } });
  return { ...JSON.parse(stdout), ms: Date.now() - t0 };
}
let marks: number[] = [];
const mark = () => { marks = conns.map((c) => c.raw.length); };
function show(label: string, r: unknown) {
  const ups = conns.map((c, i) => [i, c.raw.slice(marks[i] ?? 0)] as const).filter(([, d]) => d && !d.startsWith('\x16')).map(([i, d]) => `  [up#${i}] ${JSON.stringify(d.slice(0, 300))}`).join('\n');
  console.log(`=== ${label}\n  app: ${JSON.stringify(r)}\n${ups}`);
}
const reqs = (fresh: string) => fresh.match(/^[A-Z]+ \S+ HTTP\/1\.1\r$/gm)?.length ?? 0;
const GET = (p: string, extra = '') => `GET ${p} HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`;

describe('upstream-side probes', () => {
  beforeAll(async () => {
    up = createServer((sock) => {
      const c = { raw: '', sock };
      conns.push(c);
      sock.on('data', (d) => { const f = d.toString('latin1'); c.raw += f; if (!f.startsWith('\x16')) responder(c, f); else sock.destroy(); });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
    upPort = (up.address() as { port: number }).port;
    const ca = await authority(join(tmp.dir, 'ca'));
    const inputs = await baseInputs(new Map([['python3', CLIENT]]), ca, [CLIENT]);
    const dst = destination(HOST, null);
    inputs.setRules(table([identity(CLIENT, { egress: [egress([dst], { mode: null })], credentials: [bearerBinding('cred', 'plain-token', [dst])] })]));
    inputs.loadCredential('cred', { kind: 'bearer', token: 'SECRET-TOKEN' });
    dp = new DataPlane({ inputs, proxyListen: { host: '127.0.0.1', port: 0 }, lookup: loopbackLookup,
      limits: { headersTimeoutMs: 1500, requestTimeoutMs: 2500, idleTimeoutMs: 4000 },
      log: (e) => { if (JSON.stringify(e).includes('SECRET')) console.log('LOG LEAK', e); } });
    proxyPort = (await dp.start()).proxy!.port;
  }, 60_000);
  afterAll(async () => { await dp?.stop(); up?.close(); tmp.cleanup(); });

  it('response with both CL and TE', async () => {
    responder = (c, f) => { if (reqs(f)) c.sock.write('HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'); };
    mark(); show('CL+TE response', await app([{ data: GET('/a') }, { read: 0.8 }]));
  });
  it('extra response after the response; next request on the same app connection', async () => {
    let n = 0;
    responder = (c, f) => { if (reqs(f)) { n++; c.sock.write(n === 1 ? 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nFORGED' : 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond'); } };
    mark(); show('extra partial response', await app([{ data: GET('/a') }, { read: 0.4 }, { data: GET('/b') }, { read: 1.0 }]));
  });
  it('HEAD response with a body in the same write', async () => {
    responder = (c, f) => { if (reqs(f)) c.sock.write(f.startsWith('HEAD') ? 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello' : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'); };
    mark(); show('HEAD with body', await app([{ data: `HEAD /a HTTP/1.1\r\nHost: ${HOST}\r\n\r\n` }, { read: 0.4 }, { data: GET('/b') }, { read: 0.8 }]));
  });
  it('204 with a body then a full response', async () => {
    let n = 0;
    responder = (c, f) => { if (reqs(f)) { n++; c.sock.write(n === 1 ? 'HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED' : 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond'); } };
    mark(); show('204 then forged', await app([{ data: GET('/a') }, { read: 0.4 }, { data: GET('/b') }, { read: 0.8 }]));
  });
  it('101 from the upstream', async () => {
    responder = (c, f) => { if (reqs(f)) c.sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n'); setTimeout(() => c.sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), 100); };
    mark(); show('101 then 200', await app([{ data: GET('/a') }, { read: 0.8 }]));
  });
  it('response before the request body ends', async () => {
    responder = (c, f) => { if (reqs(f)) c.sock.write('HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno'); };
    mark(); show('early response', await app([{ data: `POST /a HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 10\r\n\r\nabcde` }, { read: 0.5 }, { data: 'fghij' + GET('/smuggled') }, { read: 0.5 }]));
  });
  it('response head over 64 KiB, reason echoed?', async () => {
    responder = (c, f) => { if (reqs(f)) c.sock.write(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70000)}\r\nContent-Length: 2\r\n\r\nok`); };
    mark(); show('huge response head', await app([{ data: GET('/a') }, { read: 0.8 }]));
  });
  it('upstream echoes the request (reason/502 never carries it)', async () => {
    responder = (c, f) => { if (reqs(f)) c.sock.write(`HTTP/1.1 200 OK\r\nX-Echo: ${f.replace(/\r\n/g, '|')}\r\nContent-Length: 2\r\n\r\nok`); };
    mark(); show('echo', await app([{ data: GET('/a') }, { read: 0.5 }]));
  });
  it('upstream garbage: the 502 reason', async () => {
    responder = (c, f) => { if (reqs(f)) c.sock.write(`HTTP/1.1 200 OK\r\nX-A: ${f.split('\r\n')[2]}\x01\r\n\r\n`); };
    mark(); show('garbage 502', await app([{ data: GET('/a') }, { read: 0.5 }]));
  });
  it('a paused upstream is pooled after the app resets mid-drain', async () => {
    const body = 'x'.repeat(60_000);
    responder = (c, f) => { for (let i = reqs(f); i > 0; i--) c.sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`); };
    await new Promise((r) => setTimeout(r, 4500)); // nothing idle in the pool
    mark();
    const a = await app([{ data: GET('/big') }, { wait: 0.6 }, { rst: true }], 2048);
    show('A (small rcvbuf, reset)', a);
    mark();
    const b = await app([{ data: GET('/next') }, { read: 5 }]);
    show('B (fresh app connection)', b);
  }, 20_000);
});
