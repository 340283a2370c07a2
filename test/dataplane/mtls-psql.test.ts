/**
 * psql (real) → client data plane → mTLS → server data plane → PostgreSQL (real). The client data plane takes
 * psql's connection on an outbound mapping and attributes it to an identity by process name; the server data
 * plane fronts PostgreSQL's port with the server identity's inbound policy.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import type { MemoryInputs, TlsMode } from '../../kernel-module/dataplane/inputs.ts';
import { type Postgres, startPostgres } from './postgres.ts';
import {
  authority,
  baseInputs,
  destination,
  egress,
  id,
  identity,
  run,
  scratch,
  svid,
  table,
  until,
} from './support.ts';

const CLIENT = id('shop/api');
const INTRUDER = id('shop/batch');
const SERVER = id('shop/db');

describe('psql → client data plane → mTLS → server data plane → PostgreSQL', () => {
  const tmp = scratch();
  let pg: Postgres;
  const byName = new Map([['psql', CLIENT]]);
  let clientInputs: MemoryInputs;
  let serverInputs: MemoryInputs;
  let clientDp: DataPlane;
  let serverDp: DataPlane;
  let mapped = 0;
  let fronted = 0;
  const serverLog: Array<Record<string, unknown>> = [];

  const serverRules = (mode: TlsMode, inbound: string[]) =>
    serverInputs.setRules(table([identity(SERVER, { mode, inbound })]));

  beforeAll(async () => {
    pg = await startPostgres();
    const ca = await authority(join(tmp.dir, 'ca'));
    serverInputs = await baseInputs(new Map(), ca, [SERVER]);
    serverRules('MUTUAL', [CLIENT]);
    serverDp = new DataPlane({
      inputs: serverInputs,
      inbound: [
        {
          spiffeId: SERVER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: pg.port },
        },
      ],
      log: (e) => serverLog.push(e),
    });
    fronted = (await serverDp.start()).inbound[0]!.port;

    clientInputs = await baseInputs(byName, ca, [CLIENT, INTRUDER]);
    const db = destination('127.0.0.1', fronted, 'Service/riptides-system/db');
    const rule = egress([db], { mode: 'MUTUAL' }, [SERVER]);
    clientInputs.setRules(
      table([identity(CLIENT, { egress: [rule] }), identity(INTRUDER, { egress: [rule] })]),
    );
    clientDp = new DataPlane({
      inputs: clientInputs,
      outbound: [
        { listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: fronted } },
      ],
    });
    mapped = (await clientDp.start()).outbound[0]!.port;
  }, 60_000);

  afterAll(async () => {
    await clientDp?.stop();
    await serverDp?.stop();
    pg?.stop();
    tmp.cleanup();
  });

  const psql = (port: number, sql = "select 'hello from ' || current_user") =>
    run(
      'psql',
      [`host=127.0.0.1 port=${port} user=dp dbname=postgres sslmode=disable connect_timeout=5`, '-tAc', sql],
      {
        timeout: 20_000,
      },
    ).then(
      (r) => ({ ok: true, out: r.stdout.trim(), err: r.stderr }),
      (e: { stdout?: string; stderr?: string }) => ({ ok: false, out: e.stdout ?? '', err: e.stderr ?? '' }),
    );

  const failures = async (reason: string) => {
    const m = await serverDp.metrics.registry
      .getSingleMetric('riptides_dataplane_handshakes_failed_total')!
      .get();
    return m.values.find((v) => v.labels.reason === reason && v.labels.direction === 'inbound')?.value ?? 0;
  };

  it('works for an allowed identity', async () => {
    serverRules('MUTUAL', [CLIENT]);
    expect(await psql(mapped)).toMatchObject({ ok: true, out: 'hello from dp' });
  });

  it('the connections tables name both identities while the session is live', async () => {
    const session = psql(mapped, 'select pg_sleep(2)');
    await until(
      () => serverDp.connections().length === 1 && clientDp.connections().some((c) => c.mode === 'mtls'),
    );
    const server = serverDp.connections()[0]!;
    const client = clientDp.connections().find((c) => c.mode === 'mtls')!;
    expect(server).toMatchObject({
      direction: 'inbound',
      mode: 'mtls',
      mtls_version: 'TLS1.3',
      spiffe_id: SERVER,
      peer_spiffe_id: CLIENT,
    });
    expect(client).toMatchObject({
      direction: 'outbound',
      mtls_version: 'TLS1.3',
      spiffe_id: CLIENT,
      peer_spiffe_id: SERVER,
      dst_port: fronted,
    });
    expect(client.pid).toBeGreaterThan(0);
    expect((await session).ok).toBe(true);
  });

  it('refuses an identity that is not in the inbound list', async () => {
    const before = await failures('not-allowed');
    byName.set('psql', INTRUDER);
    try {
      const result = await psql(mapped);
      expect(result.ok).toBe(false);
      expect(result.err).toMatch(/server closed the connection unexpectedly|connection to server .* failed/);
    } finally {
      byName.set('psql', CLIENT);
    }
    expect(await failures('not-allowed')).toBe(before + 1);
    expect(serverLog.some((e) => e.reason === 'not-allowed' && String(e.detail).includes(INTRUDER))).toBe(
      true,
    );
  });

  it('refuses a certificate from a foreign CA, even with an allowed SPIFFE ID', async () => {
    const before = await failures('untrusted');
    const foreign = await authority(join(tmp.dir, 'foreign'));
    const real = clientInputs.svid(CLIENT)!;
    clientInputs.setSvid(CLIENT, await svid(foreign, CLIENT));
    try {
      expect((await psql(mapped)).ok).toBe(false);
    } finally {
      clientInputs.setSvid(CLIENT, real);
    }
    expect(await failures('untrusted')).toBe(before + 1);
    expect((await psql(mapped)).ok).toBe(true);
  });

  it('PERMISSIVE lets plaintext psql in; MUTUAL does not', async () => {
    serverRules('PERMISSIVE', [CLIENT]);
    expect(await psql(fronted)).toMatchObject({ ok: true, out: 'hello from dp' });
    // mTLS still works on the same port.
    expect((await psql(mapped)).ok).toBe(true);
    serverRules('MUTUAL', [CLIENT]);
    const before = await failures('protocol');
    expect((await psql(fronted)).ok).toBe(false);
    expect(await failures('protocol')).toBe(before + 1);
  });

  it('the client side too: a peer its rule no longer allows is disconnected from a live session', async () => {
    serverRules('MUTUAL', [CLIENT]);
    const child = spawn(
      'psql',
      [
        `host=127.0.0.1 port=${mapped} user=dp dbname=postgres sslmode=disable`,
        '-tAc',
        'select pg_sleep(60)',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    expect(await until(() => clientDp.connections().some((c) => c.peer_spiffe_id === SERVER))).toBe(true);
    const db = destination('127.0.0.1', fronted, 'Service/riptides-system/db');
    clientInputs.setRules(
      table([identity(CLIENT, { egress: [egress([db], { mode: 'MUTUAL' }, [id('shop/elsewhere')])] })]),
    );
    try {
      const code = await Promise.race([
        exited,
        new Promise((r) => setTimeout(() => r('still running'), 15_000)),
      ]);
      if (code === 'still running') child.kill();
      expect(code).not.toBe('still running');
      const revoked = await clientDp.metrics.registry.getSingleMetricAsString(
        'riptides_dataplane_connections_revoked_total',
      );
      expect(revoked).toMatch(/direction="outbound"\} [1-9]/);
    } finally {
      const rule = egress([db], { mode: 'MUTUAL' }, [SERVER]);
      clientInputs.setRules(
        table([identity(CLIENT, { egress: [rule] }), identity(INTRUDER, { egress: [rule] })]),
      );
    }
    expect((await psql(mapped)).ok).toBe(true);
  });

  it('a removed allowed ID closes the live session of that peer, and the next connection is refused', async () => {
    serverRules('MUTUAL', [CLIENT]);
    const child = spawn(
      'psql',
      [
        `host=127.0.0.1 port=${mapped} user=dp dbname=postgres sslmode=disable`,
        '-tAc',
        'select pg_sleep(60)',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    expect(await until(() => serverDp.connections().some((c) => c.peer_spiffe_id === CLIENT))).toBe(true);
    serverRules('MUTUAL', [id('shop/someone-else')]);
    // Well before pg_sleep(60) ends: the data plane closed it.
    const code = await Promise.race([
      exited,
      new Promise((r) => setTimeout(() => r('still running'), 15_000)),
    ]);
    if (code === 'still running') child.kill();
    expect(code).not.toBe('still running');
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/server closed the connection unexpectedly|terminat|connection/i);
    const revoked = await serverDp.metrics.registry.getSingleMetricAsString(
      'riptides_dataplane_connections_revoked_total',
    );
    expect(revoked).toMatch(/direction="inbound"\} [1-9]/);
    expect((await psql(mapped)).ok).toBe(false);
    serverRules('MUTUAL', [CLIENT]);
  });
});
