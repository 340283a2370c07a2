import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient, ApiClientError, locateApi } from '../../reconciler/http/client.ts';
import { ApiListenError, type ApiServer, startApiServer } from '../../reconciler/http/server.ts';
import { generateKeyAndCsr, initAuthority } from '../../reconciler/identity/authority.ts';
import { createWebhookHandler } from '../../reconciler/loop/webhook.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { ReconcilerMetrics } from '../../reconciler/telemetry/metrics.ts';
import { parsePrometheus } from '../support/prometheus.ts';
import { tempDir } from '../support/scratch.ts';
import { seededBook } from '../support/status-fixture.ts';
import { testTls } from '../support/test-tls.ts';

const servers: ApiServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close(100);
});

async function start(extra: Partial<Parameters<typeof startApiServer>[0]> = {}) {
  const stateDir = tempDir('api');
  const metrics = new ReconcilerMetrics();
  const book = seededBook(new Date());
  let ready: { ready: true } | { ready: false; reason: string } = {
    ready: false,
    reason: 'no revision applied yet',
  };
  const api = await startApiServer({
    host: '127.0.0.1',
    port: 0,
    stateDir,
    metrics,
    status: () => book.snapshot(),
    ready: () => ready,
    ...extra,
  });
  servers.push(api);
  const token = (role: string) => readFileSync(join(stateDir, 'api', `${role}.token`), 'utf8').trim();
  return { api, stateDir, metrics, book, token, setReady: () => (ready = { ready: true }) };
}

const call = (url: string, headers: Record<string, string> = {}) => fetch(url, { headers });

describe('API authentication', () => {
  it('creates the admin credential 0600 in a 0700 directory and advertises the endpoint', async () => {
    const { api, stateDir, token } = await start();
    expect(statSync(join(stateDir, 'api')).mode & 0o777).toBe(0o700);
    expect(statSync(join(stateDir, 'api', 'admin.token')).mode & 0o777).toBe(0o600);
    expect(token('admin')).toMatch(/^rt_admin_[A-Za-z0-9_-]{43}$/);
    expect(JSON.parse(readFileSync(join(stateDir, 'api', 'endpoint.json'), 'utf8'))).toEqual({
      url: api.url,
      pid: process.pid,
    });
  });

  it('refuses every unauthenticated or wrongly authenticated call to the API and metrics', async () => {
    const { api, token } = await start();
    const admin = token('admin');
    const cases: Array<[string, Record<string, string>, number]> = [
      ['/api/v1/status', {}, 401],
      ['/api/v1/status', { authorization: `Bearer ${admin}x` }, 401],
      ['/api/v1/status', { authorization: `Bearer ${admin.slice(0, -1)}` }, 401],
      ['/api/v1/status', { authorization: `Basic ${Buffer.from(`x:${admin}`).toString('base64')}` }, 401],
      ['/api/v1/status', { authorization: `Bearer ${token('metrics')}` }, 403],
      ['/metrics', {}, 401],
      [`/api/v1/status?token=${admin}`, {}, 400],
      ['/api/v1/status', { authorization: `Bearer ${admin}` }, 200],
      ['/metrics', { authorization: `Bearer ${token('metrics')}` }, 200],
    ];
    for (const [path, headers, status] of cases)
      expect((await call(`${api.url}${path}`, headers)).status, path).toBe(status);
    const refused = await call(`${api.url}/api/v1/kinds/wid`);
    expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="riptides"');
    expect(await refused.json()).toMatchObject({ error: { code: 'Unauthenticated' } });
  });

  it('probes answer without credentials and say nothing but their state', async () => {
    const { api, setReady } = await start();
    expect(await (await call(`${api.url}/healthz`)).text()).toBe('ok\n');
    const notReady = await call(`${api.url}/readyz`);
    expect([notReady.status, await notReady.text()]).toEqual([503, 'not ready: no revision applied yet\n']);
    setReady();
    expect((await call(`${api.url}/readyz`)).status).toBe(200);
  });

  it('never serves plain HTTP beyond loopback', async () => {
    await expect(
      startApiServer({
        host: '0.0.0.0',
        port: 0,
        stateDir: tempDir('api-open'),
        metrics: new ReconcilerMetrics(),
        status: () => seededBook(new Date()).snapshot(),
        ready: () => ({ ready: true }),
      }),
    ).rejects.toThrow(ApiListenError);
  });

  it('over mutual TLS, an admin X.509-SVID is an admin; another SPIFFE ID is not', async () => {
    const tls = testTls();
    const caDir = tempDir('api-ca');
    const authority = await initAuthority({ trustDomain: 'example.org', dir: caDir });
    const svid = async (id: string) => {
      const { keyPem, csrPem } = await generateKeyAndCsr(id);
      return { cert: (await authority.signX509Svid({ csrPem })).chainPem, key: keyPem };
    };
    const caFile = join(caDir, 'server-ca.pem');
    writeFileSync(caFile, tls.ca);
    const { api, stateDir } = await start({
      tls: {
        cert: tls.cert,
        key: tls.key,
        clientCa: authority.bundlePem(),
        adminSpiffeIds: ['spiffe://example.org/riptides/admin'],
        caFile,
      },
    });
    expect(api.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const admin = await svid('spiffe://example.org/riptides/admin');
    const other = await svid('spiffe://example.org/app/api');
    const client = (c?: { cert: string; key: string }) => new ApiClient({ url: api.url, ca: tls.ca, ...c });
    expect((await client(admin).get<{ format: number }>('/api/v1/status')).format).toBe(1);
    await expect(client(other).get('/api/v1/status')).rejects.toMatchObject({ status: 401 });
    await expect(client().get('/api/v1/status')).rejects.toMatchObject({ status: 401 });
    // Found through the state dir, the token works over https too, verified against the advertised CA.
    const target = await locateApi({ stateDir });
    expect(target.ca).toBe(tls.ca);
    expect((await new ApiClient(target).get<{ source: unknown }>('/api/v1/source')).source).toBeTruthy();
  });

  it('the client refuses a credential file others can read, and says when nothing serves', async () => {
    const { api, token } = await start();
    const file = join(tempDir('api-cred'), 'admin.token');
    writeFileSync(file, token('admin'), { mode: 0o644 });
    await expect(
      locateApi({ stateDir: '/nonexistent', server: api.url, credentialFile: file }),
    ).rejects.toThrow(/readable by others .*chmod 600/);
    await expect(locateApi({ stateDir: tempDir('api-none') })).rejects.toThrow(
      /no reconciler serves from state directory/,
    );
    expect(() => new ApiClient({ url: 'http://192.0.2.1:8080', token: 'x' })).toThrow(ApiClientError);
  });
});

describe('API reads', () => {
  it('serves kinds by name with events, 404 for an unknown one', async () => {
    const { api, stateDir } = await start();
    const client = new ApiClient(await locateApi({ stateDir }));
    const list = await client.get<{ items: Array<{ name: string }> }>('/api/v1/kinds/cb');
    expect(list.items.map((i) => i.name)).toContain('support-assistant-claude-binding');
    const one = await client.get<{ item: { state: string }; events: unknown[] }>(
      '/api/v1/kinds/credsrc/vault-openai-apikeys',
    );
    expect(one.item.state).toBe('ERROR');
    expect(one.events).toHaveLength(1);
    await expect(client.get('/api/v1/kinds/wid/nope')).rejects.toMatchObject({ status: 404 });
    await expect(client.get('/api/v1/kinds/widget')).rejects.toMatchObject({ status: 400 });
    expect((await fetch(`${api.url}/api/v1/status`, { method: 'DELETE' })).status).toBe(401);
  });
});

describe('metrics', () => {
  it('/metrics is valid Prometheus text with every reconciler metric, values as set', async () => {
    const secret = 'webhook-secret-for-the-metrics-test';
    const metrics = new ReconcilerMetrics();
    const hook = createWebhookHandler({ secret, branch: 'main' }, (o) => metrics.countWebhook(o));
    const { api, token } = await start({ metrics, webhook: hook });
    metrics.setAppliedRevision('a'.repeat(40), new Date('2026-03-01T00:00:00Z'));
    metrics.setAppliedRevision('b'.repeat(40), new Date('2026-03-01T00:01:00Z'));
    metrics.reconcileDuration.observe({ result: 'success' }, 0.2);
    metrics.setCredentialStates({
      sources: [
        { name: 'a', state: 'AVAILABLE' },
        { name: 'b', state: 'ERROR' },
      ],
      bindings: [{ source: 'a', workloadID: 'w', state: 'OK', phase: 'available' }],
    });
    metrics.setDrift({ missing: 2, 'out-of-band': 1 });
    metrics.agentsConnected.set(3);
    metrics.programPushes.inc(4);
    metrics.programNacks.inc();
    // The agent server's counters, as a scrape reads them.
    metrics.followAgents(() => ({
      joins: 5,
      joinsRefused: { FORGED: 2, EXPIRED: 1 },
      syncRefused: { NOT_REGISTERED: 3 },
      messagesRefused: { OUT_OF_SCOPE: 4 },
      malformed: 1,
      svidsIssued: 12,
    }));
    // Two refused deliveries, through the real route.
    await fetch(`${api.url}/hooks/github`, {
      method: 'POST',
      body: '{}',
      headers: { 'x-github-event': 'push' },
    });
    await fetch(`${api.url}/hooks/github`, {
      method: 'POST',
      body: '{}',
      headers: { 'x-github-event': 'push', 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` },
    });

    const res = await call(`${api.url}/metrics`, { authorization: `Bearer ${token('metrics')}` });
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = parsePrometheus(await res.text());
    const value = (family: string, labels: Record<string, string> = {}, sample = family) =>
      families[family]!.samples.find(
        (s) => s.name === sample && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
      )?.value;
    expect(families.riptides_reconcile_duration_seconds!.type).toBe('histogram');
    expect(
      value(
        'riptides_reconcile_duration_seconds',
        { result: 'success' },
        'riptides_reconcile_duration_seconds_count',
      ),
    ).toBe(1);
    expect(families.riptides_applied_revision_info!.samples).toEqual([
      { name: 'riptides_applied_revision_info', labels: { revision: 'b'.repeat(40) }, value: 1 },
    ]);
    expect(value('riptides_applied_revision_timestamp_seconds')).toBe(
      Date.parse('2026-03-01T00:01:00Z') / 1000,
    );
    expect(value('riptides_credential_sources', { state: 'ERROR' })).toBe(1);
    expect(value('riptides_credential_bindings', { state: 'OK' })).toBe(1);
    expect(value('riptides_drift_items', { kind: 'missing' })).toBe(2);
    expect(value('riptides_drift_items', { kind: 'out-of-band' })).toBe(1);
    expect(value('riptides_agents_connected')).toBe(3);
    expect(value('riptides_program_pushes', {}, 'riptides_program_pushes_total')).toBe(4);
    expect(value('riptides_program_nacks', {}, 'riptides_program_nacks_total')).toBe(1);
    const agents = (family: string, reason?: string) =>
      value(family, reason ? { reason } : {}, `${family}_total`);
    expect(agents('riptides_agent_joins')).toBe(5);
    expect(agents('riptides_agent_joins_refused', 'FORGED')).toBe(2);
    expect(agents('riptides_agent_joins_refused', 'EXPIRED')).toBe(1);
    expect(agents('riptides_agent_streams_refused', 'NOT_REGISTERED')).toBe(3);
    expect(agents('riptides_agent_messages_refused', 'OUT_OF_SCOPE')).toBe(4);
    expect(agents('riptides_agent_messages_refused', 'MALFORMED')).toBe(1);
    expect(agents('riptides_agent_svids_issued')).toBe(12);
    expect(
      value(
        'riptides_webhook_rejections',
        { provider: 'github', reason: 'missing-signature' },
        'riptides_webhook_rejections_total',
      ),
    ).toBe(1);
    expect(
      value(
        'riptides_webhook_rejections',
        { provider: 'github', reason: 'bad-signature' },
        'riptides_webhook_rejections_total',
      ),
    ).toBe(1);
    expect(
      value('riptides_api_requests', { route: '/hooks', code: '401' }, 'riptides_api_requests_total'),
    ).toBe(2);
    expect(families.process_cpu_seconds).toBeDefined();
  });
});

describe('graceful shutdown', () => {
  it('on SIGTERM finishes the request in flight, removes its endpoint, releases the store and exits 0', async () => {
    const stateDir = tempDir('api-term');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, 'api-child.ts'), stateDir],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let logs = '';
    child.stdout.on('data', (d: Buffer) => {
      logs += d.toString();
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const deadline = Date.now() + 20_000;
    while (!logs.includes('"msg":"serving"')) {
      if (Date.now() > deadline) throw new Error(`child did not start: ${logs}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const client = new ApiClient(await locateApi({ stateDir }));
    const inFlight = client.get<{ format: number }>('/api/v1/status');
    await new Promise((r) => setTimeout(r, 100)); // the request is being served (it takes 400 ms)
    child.kill('SIGTERM');
    expect((await inFlight).format).toBe(1);
    expect(await exited).toBe(0);
    expect(existsSync(join(stateDir, 'api', 'endpoint.json'))).toBe(false);
    // The state directory's lock went with the process: it opens again.
    await (await StateStore.open({ stateDir })).close();
    const lines = logs
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; level: string });
    expect(lines.map((l) => l.msg)).toEqual(['serving', 'shutting down', 'stopped']);
    expect(lines.every((l) => l.level === 'info')).toBe(true);
  });
});
