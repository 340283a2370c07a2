/**
 * Socket → inode through NETLINK_SOCK_DIAG: each lookup names the socket of its own 4-tuple, lookup after
 * lookup (the request and reply buffers are shared between lookups), and a tuple with no socket names none.
 */
import { fstatSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inodeByTuple, nextSequence } from '../../kernel-module/dataplane/sock-diag.ts';

const inodeOf = (s: Socket) => fstatSync((s as unknown as { _handle: { fd: number } })._handle.fd).ino;
const local = (s: Socket) => ({ address: s.localAddress!, port: s.localPort! });
const remote = (s: Socket) => ({ address: s.remoteAddress!, port: s.remotePort! });

describe('sock_diag lookups', () => {
  let server: Server;
  const clients: Socket[] = [];
  const accepted: Socket[] = [];

  beforeAll(async () => {
    server = createServer((s) => accepted.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    for (let i = 0; i < 8; i++)
      clients.push(
        await new Promise<Socket>((r) =>
          connect(port, '127.0.0.1', function (this: Socket) {
            r(this);
          }),
        ),
      );
    while (accepted.length < clients.length) await new Promise((r) => setTimeout(r, 10));
  });

  afterAll(async () => {
    for (const s of [...clients, ...accepted]) s.destroy();
    await new Promise((r) => server.close(r));
  });

  it('names the inode of each socket by its 4-tuple, one lookup after another', () => {
    const want = clients.map(inodeOf);
    expect(new Set(want).size).toBe(clients.length);
    // Interleaved with lookups of the other ends, so that every field of the shared request is rewritten.
    const got = clients.map((c) => {
      const server = accepted.find((a) => a.remotePort === c.localPort)!;
      expect(inodeByTuple(local(server), remote(server))).toBe(inodeOf(server));
      return inodeByTuple(local(c), remote(c));
    });
    expect(got).toEqual(want);
  });

  it('names no socket for a tuple nobody holds', () => {
    const c = clients[0]!;
    expect(inodeByTuple(local(c), { address: '127.0.0.1', port: 1 })).toBeNull();
    expect(inodeByTuple(local(c), remote(c))).toBe(inodeOf(c));
  });
});

describe('netlink sequence numbers', () => {
  it('stay 32-bit and never 0: after 2^32 - 1 comes 1 (a plain counter would make writeUInt32LE throw)', () => {
    expect(nextSequence(0)).toBe(1);
    expect(nextSequence(41)).toBe(42);
    expect(nextSequence(0xffff_fffe)).toBe(0xffff_ffff);
    expect(nextSequence(0xffff_ffff)).toBe(1);
    expect(() => Buffer.alloc(4).writeUInt32LE(nextSequence(0xffff_ffff))).not.toThrow();
  });
});
