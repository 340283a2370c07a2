/**
 * The floor under the agents benchmark's memory figure: what one idle mutual-TLS HTTP/2 connection with one
 * open stream (the shape of an agent's Sync stream) costs a bare `node:http2` server, with no gRPC and no
 * product code. Run as a child (`child('h2-floor.ts', ['--expose-gc'])`): it answers `{ heapPerConnection,
 * mallocPerConnection }` in bytes, after two GCs, for `connections` clients held by a process of its own.
 */
import { fork } from 'node:child_process';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { testTls } from '../../test/support/test-tls.ts';
import { mallocInUse } from './malloc.ts';

const [role, port, count] = process.argv.slice(2);

if (role === 'clients') {
  // The server's CA and certificate (testTls makes a new CA per process), over IPC.
  const { ca, cert, key } = await new Promise<ReturnType<typeof testTls>>((r) =>
    process.once('message', r as never),
  );
  const held: http2.ClientHttp2Stream[] = [];
  for (let i = 0; i < Number(count); i++) {
    const session = http2.connect(`https://localhost:${port}`, { ca, cert, key });
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
  const tls = testTls();
  const { ca, cert, key } = tls;
  const server = http2.createSecureServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true });
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
    ['clients', String((server.address() as AddressInfo).port), String(connections)],
    { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  clients.send(tls);
  await new Promise((r) => clients.once('message', r));
  await new Promise((r) => setTimeout(r, 1000));
  const after = measure();
  clients.kill();
  process.send!({
    connections: streams.length,
    heapPerConnection: (after.heap - before.heap) / connections,
    mallocPerConnection: (after.malloc - before.malloc) / connections,
  });
  process.exit(0);
}
