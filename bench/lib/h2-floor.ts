/**
 * The floor under the agents benchmark's memory figure: what one idle mutual-TLS HTTP/2 connection with one
 * open stream (the shape of an agent's Sync stream) costs a bare `node:http2` server, with no gRPC and no
 * product code. Run as a child (`child('h2-floor.ts', ['--expose-gc'])`): it answers `{ heapPerConnection,
 * mallocPerConnection }` in bytes, after two GCs, for `connections` clients held by a process of its own.
 */
import { execFileSync, fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mallocInUse } from './malloc.ts';

const [role, port, dir, count] = process.argv.slice(2);

if (role === 'clients') {
  const tls = { ca: readFileSync(join(dir!, 'cert.pem')), cert: readFileSync(join(dir!, 'cert.pem')) };
  const key = readFileSync(join(dir!, 'key.pem'));
  const held: http2.ClientHttp2Stream[] = [];
  for (let i = 0; i < Number(count); i++) {
    const session = http2.connect(`https://localhost:${port}`, { ...tls, key });
    await new Promise((r) => session.once('connect', r));
    const stream = session.request({ ':path': '/sync', ':method': 'POST' });
    stream.write('hello');
    await new Promise((r) => stream.once('response', r));
    held.push(stream);
  }
  process.send!({ held: held.length });
  setInterval(() => {}, 60_000);
} else {
  const { connections } = await new Promise<{ connections: number }>((r) =>
    process.once('message', r as never),
  );
  const certs = mkdtempSync(join(tmpdir(), 'riptides-bench-h2-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '1',
      '-keyout',
      join(certs, 'key.pem'),
      '-out',
      join(certs, 'cert.pem'),
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost',
    ],
    { stdio: 'ignore' },
  );
  const cert = readFileSync(join(certs, 'cert.pem'));
  const server = http2.createSecureServer({
    cert,
    key: readFileSync(join(certs, 'key.pem')),
    ca: cert,
    requestCert: true,
    rejectUnauthorized: true,
  });
  const streams: http2.ServerHttp2Stream[] = [];
  server.on('stream', (s) => {
    s.respond({ ':status': 200 });
    s.write('program');
    streams.push(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const gc = (globalThis as { gc?: () => void }).gc!;
  const measure = () => {
    gc();
    gc();
    return { heap: process.memoryUsage().heapUsed, malloc: mallocInUse() };
  };
  const before = measure();
  const clients = fork(
    fileURLToPath(import.meta.url),
    ['clients', String((server.address() as AddressInfo).port), certs, String(connections)],
    { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  await new Promise((r) => clients.once('message', r));
  await new Promise((r) => setTimeout(r, 1000));
  const after = measure();
  clients.kill();
  rmSync(certs, { recursive: true, force: true });
  process.send!({
    connections: streams.length,
    heapPerConnection: (after.heap - before.heap) / connections,
    mallocPerConnection: (after.malloc - before.malloc) / connections,
  });
  process.exit(0);
}
