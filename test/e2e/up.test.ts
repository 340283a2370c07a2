/**
 * `riptides-cli up` as a newcomer runs it, in a child process: on a copy of this repository's quickstart (a
 * git repository made with the git CLI), it prints where everything is; a commit to the copy is applied and
 * seen through `ctl get` and `drift`; a hand edit of the control interface shows in `drift` and is healed;
 * SIGTERM stops it cleanly (exit 0, the API's endpoint file gone, nothing left running).
 */
import { execFile, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import { packageRoot, statusLine } from '../../reconciler/cli/commands/up.ts';
import type { DriftReport } from '../../reconciler/drift/report.ts';
import { eventually, runCli, startCli } from '../support/cli-process.ts';
import { git } from '../support/git-fixtures.ts';
import { tempDir } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';

const execFileAsync = promisify(execFile);

const BATCH = `---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: quickstart-batch
  namespace: riptides-system
spec:
  workloadID: quickstart/app/batch
  scope:
    daemonGroup:
      id: riptides/daemongroup/local/quickstart
  selectors:
    - process:name: quickstart-batch
`;

describe('riptides-cli up', () => {
  it('finds this checkout as the default repository', () => {
    expect(packageRoot()).toBe(repoRoot);
  });

  it('runs the quickstart: addresses, a commit applied and seen by ctl and drift, a heal, a clean stop', async () => {
    const dir = tempDir('up-e2e');
    const repo = join(dir, 'repo');
    mkdirSync(join(repo, 'policies'), { recursive: true });
    cpSync(join(repoRoot, 'policies', 'quickstart'), join(repo, 'policies', 'quickstart'), {
      recursive: true,
    });
    await git(repo, 'init', '--quiet', '-b', 'main');
    await git(repo, 'add', '--all');
    await git(repo, 'commit', '--quiet', '-m', 'quickstart');
    const state = join(dir, 'state');
    const env = { XDG_CACHE_HOME: join(dir, 'cache'), RIPTIDES_STATE_DIR: join(dir, 'elsewhere') };
    // A repository of its own: no quickstart defaults, so the data plane is what the flags ask for.
    const up = startCli(
      [
        ...['up', '--repo', repo, '--path', 'policies/quickstart', '--state-dir', state],
        ...['--proxy-listen', '127.0.0.1:0'],
      ],
      env,
    );
    await eventually(() => up.output().includes('riptides is up'), 60_000, 'riptides is up');
    await eventually(() => up.output().includes('  logs '), 5000, 'the addresses');
    const text = up.output();
    const field = (name: string) => new RegExp(`^  ${name} +(.+)$`, 'm').exec(text)?.[1];
    const api = field('API')!.split(' ')[0]!;
    expect(api).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(field('metrics')).toBe(`${api}/metrics`);
    expect(field('agents')).toMatch(/^127\.0\.0\.1:\d+ \(mutual TLS\)$/);
    expect(field('control root')).toBe(join(state, 'agent', 'control'));
    expect(field('reports')).toBe(join(state, 'reports'));
    expect(field('trust domain')).toBe('example.com');
    const proxy = /^127\.0\.0\.1:(\d+) {2}\(for workloads' HTTPS_PROXY \/ http_proxy\)$/.exec(
      field('proxy') ?? '',
    );
    expect(proxy).not.toBeNull();
    expect(field('inbound')).toBeUndefined();
    expect(field('upstream CA')).toBe('the system trust store');
    expect(field('CA bundle')).toBe(
      `${join(state, 'agent', 'control', 'certs', 'ca-certificates.crt')}  (what workloads trust for intercepted TLS)`,
    );
    expect(existsSync(join(state, 'quickstart'))).toBe(false);
    expect(text).toMatch(/local agent: joining daemon group riptides\/daemongroup\/local\/quickstart/);
    // The status line follows the addresses once the reconciler has the agent's ACK.
    await eventually(
      () => /applied [0-9a-f]{12} \(\d+s ago\) · agent in sync · /.test(up.output()),
      15_000,
      'the status line',
    );
    await eventually(
      () =>
        /agent in sync · data plane 1 listener, \d+ connections? \(\d+ open\) · 2 identities/.test(
          up.output(),
        ),
      15_000,
      'the data plane in the status line',
    );

    // The proxy is live: a destination no Service names passes through it untouched (curl, real).
    const site = createHttpServer((_, res) => res.end('through'));
    await new Promise<void>((r) => site.listen(0, '127.0.0.1', r));
    onTestFinished(() => new Promise<void>((r) => site.close(() => r())));
    const sitePort = (site.address() as AddressInfo).port;
    // (curl runs asynchronously: the site answers from this process.)
    const via = await execFileAsync('curl', [
      ...['-sS', '--max-time', '10', '--proxy', `http://127.0.0.1:${proxy![1]}`],
      `http://127.0.0.1:${sitePort}/`,
    ]);
    expect(via.stdout).toBe('through');
    const cli = (...args: string[]) => runCli([...args, '--state-dir', state], env);

    // A commit to the tracked branch is applied without a restart, and ctl and drift say so.
    writeFileSync(
      join(repo, 'policies', 'quickstart', '30-workload-identities.yaml'),
      `${readFileSync(join(repo, 'policies', 'quickstart', '30-workload-identities.yaml'), 'utf8')}${BATCH}`,
    );
    await git(repo, 'commit', '--quiet', '-am', 'a batch job');
    const head = await git(repo, 'rev-parse', 'HEAD');
    await eventually(
      () => {
        const r = cli('ctl', 'get', 'source', '-o', 'json');
        return (
          r.status === 0 &&
          (JSON.parse(r.stdout) as { lastAppliedRevision: string }).lastAppliedRevision === head
        );
      },
      30_000,
      'the commit applied',
    );
    const wid = cli('ctl', 'get', 'wid', 'quickstart-batch');
    expect(wid.status).toBe(0);
    expect(wid.stdout).toMatch(
      /^quickstart-batch\s+quickstart\/app\/batch\s+daemonGroup:riptides\/daemongroup\/local\/quickstart\s+1\s/m,
    );
    const clean = await eventually(
      () => {
        const r = cli('drift', '--format', 'json');
        return r.status === 0 ? r : undefined;
      },
      30_000,
      'drift: the node runs the new commit',
    );
    const report = JSON.parse(clean.stdout) as DriftReport;
    expect(report.revision).toBe(head);
    expect(report.nodes[0]).toMatchObject({ reachable: true, items: [] });
    expect(report.nodes[0]!.liveVersion).toBe(report.nodes[0]!.desiredVersion);

    // A hand edit of the control interface: reported within the agent's report interval, then healed.
    const rules = join(state, 'agent', 'control', 'certs', 'ca-certificates.crt');
    const original = readFileSync(rules, 'utf8');
    writeFileSync(rules, `${original}# added by hand\n`);
    const drifted = await eventually(
      () => {
        const r = cli('drift');
        return r.status === 1 ? r : undefined;
      },
      30_000,
      'drift shows the edit',
    );
    expect(drifted.stdout).toContain('**Drift detected**');
    expect(drifted.stdout).toContain('`certs/ca-certificates.crt`');
    const healed = cli('drift', '--heal', '--format', 'json');
    expect(healed.status).toBe(1);
    expect((JSON.parse(healed.stdout) as DriftReport).heal?.after.drifted).toBe(false);
    expect(readFileSync(rules, 'utf8')).toBe(original);
    expect(cli('drift').status).toBe(0);

    const metrics = await fetch(`${api}/metrics`, {
      headers: {
        authorization: `Bearer ${readFileSync(join(state, 'api', 'metrics.token'), 'utf8').trim()}`,
      },
    });
    expect(await metrics.text()).toMatch(/^riptides_agents_connected 1$/m);

    // SIGTERM: a clean stop.
    const code = await up.stop('SIGTERM');
    expect(code).toBe(0);
    expect(up.output()).toMatch(/stopped\n$/);
    expect(existsSync(join(state, 'api', 'endpoint.json'))).toBe(false);
    expect(cli('drift').status).toBe(2);
    // The data plane stopped with it.
    const after = spawnSync('curl', [
      ...['-sS', '--max-time', '5', '--proxy', `http://127.0.0.1:${proxy![1]}`],
      `http://127.0.0.1:${sitePort}/`,
    ]);
    expect(after.stderr.toString()).toMatch(/Failed to connect|Connection refused/);
  }, 180_000);

  it('a data plane port in use: exit 2 naming the flag, nothing left running', async () => {
    const dir = tempDir('up-busy');
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    onTestFinished(() => new Promise<void>((r) => busy.close(() => r())));
    const port = (busy.address() as AddressInfo).port;
    const up = startCli(
      [
        ...['up', '--repo', repoRoot, '--path', 'policies/quickstart', '--state-dir', join(dir, 'state')],
        ...['--proxy-listen', `127.0.0.1:${port}`],
      ],
      { XDG_CACHE_HOME: join(dir, 'cache') },
    );
    expect(await up.exited).toBe(2);
    expect(up.output()).toMatch(
      new RegExp(
        `^riptides-cli up: the data plane cannot listen on 127\\.0\\.0\\.1:${port}: address already in use \\(change --proxy-listen\\)$`,
        'm',
      ),
    );
    expect(up.output()).not.toMatch(/riptides is up|^\s+at /m);
    // The reconciler it had started is stopped again: its state directory is free for the next start.
    expect(existsSync(join(dir, 'state', 'api', 'endpoint.json'))).toBe(false);
  }, 60_000);

  it('puts the local data plane in the status line: listeners, and connections where ages are shown', () => {
    const now = new Date('2026-03-01T12:00:10Z');
    const snap = {
      format: 1,
      generatedAt: now.toISOString(),
      source: null,
      resources: [],
      daemons: [],
      events: {},
    } as unknown as Parameters<typeof statusLine>[0];
    const dataPlane = {
      health: 'OK',
      listeners: [
        { kind: 'proxy', address: '127.0.0.1:15001', target: '' },
        { kind: 'inbound', address: '127.0.0.1:18080', target: 'spiffe://example.com/a -> 127.0.0.1:18081' },
      ],
      activeOutbound: 1,
      activeInbound: 1,
      connections: { 'outbound/proxy-http': 3, 'inbound/mtls': 2 },
      handshakesFailed: {},
      credentialsInjected: {},
      requestsRefused: {},
      connectionsRevoked: 0,
    };
    const agent = (dp: typeof dataPlane) => ({
      connected: true,
      ackedVersion: 'v1',
      desiredVersion: 'v1',
      report: { programVersion: 'v1', control: null, dataPlane: dp } as never,
    });
    expect(statusLine(snap, [agent(dataPlane)], null, now)).toBe(
      'waiting for the first pass · agent in sync · data plane 2 listeners, 5 connections (2 open) · 0 identities, 0 processes',
    );
    expect(statusLine(snap, [agent(dataPlane)], null, now, true)).toBe(
      'waiting for the first pass · agent in sync · data plane 2 listeners · 0 identities, 0 processes',
    );
    expect(statusLine(snap, [agent({ ...dataPlane, health: 'STOPPED' })], null, now)).toContain(
      '· data plane STOPPED ·',
    );
  });

  it('draws one status line from the status and the drift', () => {
    const now = new Date('2026-03-01T12:00:10Z');
    const line = statusLine(
      {
        format: 1,
        generatedAt: now.toISOString(),
        source: {
          name: 'policy',
          url: '/repo',
          branch: 'main',
          path: 'policies/quickstart',
          lastFetchedRevision: 'b'.repeat(40),
          lastFetchedAt: now.toISOString(),
          lastAppliedRevision: 'a'.repeat(40),
          lastAppliedAt: '2026-03-01T12:00:00Z',
          conditions: [
            {
              type: 'Ready',
              status: 'False',
              reason: 'ValidationFailed',
              message: 'x',
              lastTransitionTime: now.toISOString(),
              observedRevision: 'b'.repeat(40),
            },
          ],
          diagnostics: [],
          omittedDiagnostics: 0,
        },
        resources: [],
        daemons: [],
        events: {},
      },
      [{ connected: true, ackedVersion: 'v1', desiredVersion: 'v1', report: null }],
      { nodesDrifted: 1, counts: { missing: 0, 'out-of-band': 2 } },
      now,
    );
    expect(line).toBe(
      `commit bbbbbbbbbbbb not applied (ValidationFailed); aaaaaaaaaaaa in force · agent connecting · 0 identities, 0 processes · drift: 2 out-of-band`,
    );
  });

  it('says when the source fails with nothing newer fetched (a git server down), beside what is in force', () => {
    const now = new Date('2026-03-01T12:00:10Z');
    const snap = (status: 'True' | 'False', reason: string) =>
      ({
        format: 1,
        generatedAt: now.toISOString(),
        source: {
          name: 'policy',
          url: 'http://git.example/policy.git',
          branch: 'main',
          path: '',
          lastFetchedRevision: 'a'.repeat(40),
          lastFetchedAt: now.toISOString(),
          lastAppliedRevision: 'a'.repeat(40),
          lastAppliedAt: '2026-03-01T12:00:00Z',
          conditions: [
            {
              type: 'Ready',
              status,
              reason,
              message: 'x',
              lastTransitionTime: now.toISOString(),
              observedRevision: 'a'.repeat(40),
            },
          ],
          diagnostics: [],
          omittedDiagnostics: 0,
        },
        resources: [],
        daemons: [],
        events: {},
      }) as Parameters<typeof statusLine>[0];
    expect(statusLine(snap('False', 'SourceUnreachable'), [], null, now)).toMatch(
      /^applied aaaaaaaaaaaa \(10s ago\); source SourceUnreachable · no agent yet/,
    );
    expect(statusLine(snap('True', 'Succeeded'), [], null, now)).toMatch(
      /^applied aaaaaaaaaaaa \(10s ago\) · /,
    );
  });
});
