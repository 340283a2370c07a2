/**
 * What a server says when a join fails reaches the terminal escaped (reconciler/cli/commands/agent.ts): the
 * gRPC status details come from whoever answers at --server, which may not be our reconciler at all.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentServiceDefinition } from '../../agent/protocol/wire.ts';
import { main } from '../../reconciler/cli/main.ts';
import { capture } from '../support/cli.ts';
import { testTls } from '../support/test-tls.ts';

describe('agent joining a server that answers with hostile text', () => {
  let server: grpc.Server;
  let addr: string;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'riptides-hostile-server-'));
    const tls = testTls();
    server = new grpc.Server();
    const refuse = (_: unknown, cb: grpc.sendUnaryData<unknown>) =>
      cb({ code: grpc.status.UNAVAILABLE, details: 'down\n::error::forged\u001b[31mred\u0007' });
    server.addService(agentServiceDefinition, { GetTrustBundle: refuse, Join: refuse, Sync: () => {} });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(
        '127.0.0.1:0',
        grpc.ServerCredentials.createSsl(null, [
          { private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) },
        ]),
        (err, p) => (err ? reject(err) : resolve(p)),
      ),
    );
    addr = `127.0.0.1:${port}`;
  });
  afterAll(() => {
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints one line, exit 2, with the control characters shown as escapes', async () => {
    const token = `rjt1.deadbeef.${'A'.repeat(32)}.${'0'.repeat(64)}`;
    const c = capture(dir);
    const code = await main(
      ['agent', '--server', addr, '--join-token', token, '--state-dir', join(dir, 'a')],
      c.io,
    );
    expect(code).toBe(2);
    expect(c.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(c.stderr).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
    expect(c.stderr).not.toMatch(/^::/m);
    expect(c.stderr).toContain('cannot fetch the trust bundle');
  });
});
