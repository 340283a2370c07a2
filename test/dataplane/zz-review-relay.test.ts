/** Scratch review probes of the relay (to be deleted). */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server, type TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import {
  authority, baseInputs, bearerBinding, destination, egress, id, identity, loopbackLookup, scratch, table, upstreamTls,
} from './support.ts';

const run = promisify(execFile);
const CLIENT = id('review/client');
const HOST = 'api.example.test';
export const conns: Array<{ raw: string; sock: TLSSocket }> = [];
type Responder = (c: { raw: string; sock: TLSSocket; n: number }, fresh: string) => void;
let responder: Responder;
const okResponder: Responder = (c, fresh) => {
  const reqs = fresh.match(/^[A-Z]+ \S+ HTTP\/1\.1\r$/gm)?.length ?? 0;
  for (let i = 0; i < reqs; i++) c.sock.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
};

export let dp: DataPlane;
let upstream: Server;
let upPort = 0;
let proxyPort = 0;
let caPem = '';
const tmp = scratch();

export async function app(steps: Array<{ wait?: number; data?: string | Buffer; rst?: boolean; resume?: boolean }>, total = 1500, pauseRead = false) {
  const spec = {
    proxy: proxyPort, host: HOST, port: upPort, ca: caPem, total, pauseRead,
    steps: steps.map((s) => ({ ...s, data: s.data === undefined ? undefined : Buffer.from(s.data as string, 'latin1').toString('base64') })),
  };
  const { stdout } = await run('node', ['/tmp/zzr/client.mjs'], { env: { ...process.env, SPEC: JSON.stringify(spec) } });
  return JSON.parse(stdout) as { got: string; closed: boolean };
}

let marks: number[] = [];
export function mark() { marks = conns.map((c) => c.raw.length); }
function show(label: string, r: unknown, _from = 0) {
  const ups = conns.map((c, i) => [i, c.raw.slice(marks[i] ?? 0)] as const).filter(([, d]) => d).map(([i, d]) => `  [up#${i}] ${JSON.stringify(d)}`).join('\n');
  console.log(`=== ${label}\n  app: ${JSON.stringify(r)}\n${ups}`);
}

describe('review probes', () => {
  beforeAll(async () => {
    const t = upstreamTls([HOST]);
    upstream = createTlsServer({ cert: t.cert, key: t.key }, (sock) => {
      const c = { raw: '', sock, n: conns.length };
      conns.push(c);
      sock.on('data', (d) => {
        const fresh = d.toString('latin1');
        c.raw += fresh;
        responder(c, fresh);
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upPort = (upstream.address() as { port: number }).port;
    const ca = await authority(join(tmp.dir, 'ca'));
    const inputs = await baseInputs(new Map([['node', CLIENT]]), ca, [CLIENT]);
    const api = destination(HOST, null);
    inputs.setRules(table([identity(CLIENT, {
      egress: [egress([api], { mode: 'SIMPLE', intercept: true })],
      credentials: [bearerBinding('cred', 'api-token', [api])],
    })]));
    inputs.loadCredential('cred', { kind: 'bearer', token: 'SECRET-TOKEN' });
    caPem = inputs.interceptCa()!.cert;
    writeFileSync(join(tmp.dir, 'ca.pem'), caPem);
    dp = new DataPlane({
      inputs, proxyListen: { host: '127.0.0.1', port: 0 }, upstreamCa: t.ca, lookup: loopbackLookup,
      limits: { headersTimeoutMs: 1500, requestTimeoutMs: 2500 },
      log: (e) => { if (JSON.stringify(e).includes('SECRET')) console.log('LOG LEAK', e); },
    });
    proxyPort = (await dp.start()).proxy!.port;
  }, 60_000);
  afterAll(async () => { await dp?.stop(); await new Promise((r) => upstream?.close(r)); tmp.cleanup(); });

  const probes: Array<[string, string]> = [
    ['host mismatch', 'GET /a HTTP/1.1\r\nHost: evil.example.com\r\n\r\n'],
    ['two hosts', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nHost: evil.example.com\r\n\r\n'],
    ['absolute-form other host', 'GET http://evil.example.com/a HTTP/1.1\r\nHost: api.example.test\r\n\r\n'],
    ['absolute-form path normalization', 'GET http://x/a/../b%2e%2e/..;/c?q#f HTTP/1.1\r\nHost: api.example.test\r\n\r\n'],
    ['auth variants', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nAUTHORIZATION: app1\r\nauthorization: app2\r\nProxy-Authorization: p\r\nX-Authorization: x\r\n\r\n'],
    ['connection-nominated header', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nConnection: keep-alive, X-Hop, Authorization\r\nX-Hop: 1\r\n\r\n'],
    ['dup CL', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc'],
    ['CL list', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 3, 3\r\n\r\nabc'],
    ['CL+TE', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['TE Chunked case', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: ChUnKeD\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['TE chunked, chunked', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['TE two headers', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['TE identity', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: identity\r\n\r\n'],
    ['TE in HTTP/1.0', 'POST /a HTTP/1.0\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['chunk ext + trailer', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nAuthorization: trailer\r\n\r\n'],
    ['chunk overflow', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff3\r\nabc\r\n0\r\n\r\n'],
    ['chunk bare LF', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n'],
    ['bare LF head', 'GET /a HTTP/1.1\nHost: api.example.test\n\n'],
    ['obs-fold', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nX-A: 1\r\n 2\r\n\r\n'],
    ['NUL in value', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nX-A: 1\u00002\r\n\r\n'],
    ['bare CR in value', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nX-A: 1\r2\r\n\r\n'],
    ['space before colon', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nAuthorization : app\r\n\r\n'],
    ['tab in URL', 'GET /a\tb HTTP/1.1\r\nHost: api.example.test\r\n\r\n'],
    ['obs-text value', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nX-A: \u00ff\u0080\r\n\r\n'],
    ['HTTP/1.0 keep-alive x2', 'GET /a HTTP/1.0\r\nHost: api.example.test\r\nConnection: keep-alive\r\n\r\n'],
    ['pipelined', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\n\r\nGET /b HTTP/1.1\r\nHost: api.example.test\r\n\r\n'],
    ['after close', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: api.example.test\r\n\r\n'],
    ['upgrade h2c', 'GET /a HTTP/1.1\r\nHost: api.example.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /b HTTP/1.1\r\nHost: api.example.test\r\n\r\n'],
    ['upgrade websocket with body', 'POST /a HTTP/1.1\r\nHost: api.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 4\r\n\r\nabcdGET /b HTTP/1.1\r\nHost: api.example.test\r\n\r\n'],
    ['CONNECT inside', 'CONNECT evil.example.com:443 HTTP/1.1\r\nHost: evil.example.com:443\r\n\r\n'],
    ['HTTP/0.9/2.0', 'GET /a HTTP/2.0\r\nHost: api.example.test\r\n\r\n'],
    ['PRI', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['HTTP/1.0 no host', 'GET /a HTTP/1.0\r\n\r\n'],
    ['empty host', 'GET /a HTTP/1.1\r\nHost:\r\n\r\n'],
  ];
  for (const [label, req] of probes)
    it(label, async () => {
      responder = okResponder;
      const from = conns.length;
      mark();
      const r = await app([{ data: req }], 1200);
      await new Promise((res) => setTimeout(res, 50));
      show(label, r, from);
    });
});
