/**
 * Credential injection with real curl through the data plane's proxy (CONNECT + intercept) to a local HTTPS
 * upstream that records what it receives.
 */
import { writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import type { MemoryInputs } from '../../kernel-module/dataplane/inputs.ts';
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

const CLIENT = id('demo/client/curl');
const HOST = 'api.example.test';

describe('credential injection: curl → data plane (proxy, intercept) → HTTPS upstream', () => {
  const tmp = scratch();
  const seen: IncomingHttpHeaders[] = [];
  let upstream: Server;
  let upstreamPort = 0;
  let inputs: MemoryInputs;
  let dp: DataPlane;
  let proxy = '';
  let caFile = '';
  let onRequest: (() => void) | null = null;
  let gate: Promise<void> | null = null;
  const logs: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    const tls = upstreamTls([HOST]);
    upstream = createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      seen.push(req.headers);
      onRequest?.();
      req.resume();
      req.on('end', async () => {
        await gate;
        res.end(`ok ${req.method} ${req.url}\n`);
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamPort = (upstream.address() as { port: number }).port;

    const ca = await authority(join(tmp.dir, 'ca'));
    inputs = await baseInputs(new Map([['curl', CLIENT]]), ca, [CLIENT]);
    const api = destination(HOST, null, 'Service/riptides-system/api');
    inputs.setRules(
      table([
        identity(CLIENT, {
          egress: [egress([api], { mode: 'SIMPLE', intercept: true })],
          credentials: [bearerBinding('cred-api', 'api-token', [api])],
        }),
      ]),
    );
    inputs.loadCredential('cred-api', { kind: 'bearer', token: 'token-one' });
    // What the application trusts: the control interface's ca-certificates.crt holds the intercept CA.
    caFile = join(tmp.dir, 'ca-certificates.crt');
    writeFileSync(caFile, inputs.interceptCa()!.cert);
    dp = new DataPlane({
      inputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      upstreamCa: tls.ca,
      lookup: loopbackLookup,
      log: (e) => logs.push(e),
    });
    const a = await dp.start();
    proxy = `http://127.0.0.1:${a.proxy!.port}`;
  });

  afterAll(async () => {
    await dp?.stop();
    await new Promise((r) => upstream?.close(r));
    tmp.cleanup();
  });

  const curl = (...args: string[]) =>
    run('curl', ['-sS', '--proxy', proxy, '--cacert', caFile, '--max-time', '10', ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });

  it('the upstream sees the bound Bearer token, replacing what the application sent', async () => {
    seen.length = 0;
    const { stdout } = await curl(
      '-H',
      'Authorization: Bearer placeholder-from-app',
      `https://${HOST}:${upstreamPort}/v1/things`,
    );
    expect(stdout).toBe('ok GET /v1/things\n');
    expect(seen).toHaveLength(1);
    expect(seen[0]!.authorization).toBe('Bearer token-one');
    expect(seen[0]!.host).toBe(`${HOST}:${upstreamPort}`);
    expect(JSON.stringify(logs)).not.toContain('token-one');
    const scrape = await dp.metrics.registry.getSingleMetricAsString(
      'riptides_dataplane_credentials_injected_total',
    );
    expect(scrape).toMatch(/_injected_total\{(?=[^}]*binding="api-token")(?=[^}]*kind="bearer")[^}]*\} 1$/m);
  });

  it('a rotation reaches the next request on the same connection', async () => {
    seen.length = 0;
    onRequest = () => {
      onRequest = null;
      inputs.loadCredential('cred-api', { kind: 'bearer', token: 'token-two' });
    };
    const url = `https://${HOST}:${upstreamPort}/rotate`;
    const { stdout } = await curl(
      '-w',
      '%{http_code} %{num_connects}\\n',
      '-o',
      '/dev/null',
      url,
      '-o',
      '/dev/null',
      url,
    );
    // Two transfers, the second over the connection the first opened (num_connects 0).
    expect(stdout.trim().split('\n')).toEqual(['200 1', '200 0']);
    expect(seen.map((h) => h.authorization)).toEqual(['Bearer token-one', 'Bearer token-two']);
  });

  it('an unavailable credential fails the request with 503 and a reason, never without it', async () => {
    seen.length = 0;
    inputs.unloadCredential('cred-api');
    const { stdout } = await curl('-D', '-', '-o', '/dev/null', `https://${HOST}:${upstreamPort}/v1/things`);
    // The proxy's own `200 Connection Established` comes first, then the intercepted response.
    expect(stdout).toMatch(/^HTTP\/1\.1 503 /m);
    expect(stdout).toMatch(
      /x-riptides-reason: credential for binding api-token is unavailable \(not loaded\)/i,
    );
    expect(seen).toHaveLength(0);
    inputs.loadCredential('cred-api', { kind: 'bearer', token: 'token-three' });
  });

  it('the connections table shows the binding name, never the value', async () => {
    seen.length = 0;
    // The upstream holds its response so that the connection is live while the table is read.
    let release: () => void = () => {};
    gate = new Promise<void>((r) => {
      release = r;
    });
    const pending = curl(`https://${HOST}:${upstreamPort}/table`);
    await until(() => seen.length === 1);
    const rows = dp.connections();
    release();
    gate = null;
    await pending;
    const row = rows.find((c) => c.binding === 'api-token')!;
    expect(row).toMatchObject({
      direction: 'outbound',
      mode: 'intercept',
      dst: HOST,
      dst_port: upstreamPort,
      spiffe_id: CLIENT,
      binding: 'api-token',
    });
    expect(row.tls_version).toBe('TLS1.3');
    expect(row.pid).toBeGreaterThan(0);
    expect(JSON.stringify(rows)).not.toContain('token-three');
  });
});
