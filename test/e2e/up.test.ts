/**
 * `riptides-cli up` as a newcomer runs it, in a child process: on a copy of this repository's quickstart (a
 * git repository made with the git CLI), it prints where everything is; a commit to the copy is applied and
 * seen through `ctl get` and `drift`; a hand edit of the control interface shows in `drift` and is healed;
 * SIGTERM stops it cleanly (exit 0, the API's endpoint file gone, nothing left running).
 */
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot, statusLine } from '../../reconciler/cli/commands/up.ts';
import type { DriftReport } from '../../reconciler/drift/report.ts';
import { eventually, runCli, startCli } from '../support/cli-process.ts';
import { git } from '../support/git-fixtures.ts';
import { tempDir } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';

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
    const up = startCli(['up', '--repo', repo, '--path', 'policies/quickstart', '--state-dir', state], env);
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
    expect(text).toMatch(/local agent: joining daemon group riptides\/daemongroup\/local\/quickstart/);
    expect(text).toMatch(/applied [0-9a-f]{12} \(\d+s ago\) · agent in sync · 2 identities/);
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
  }, 180_000);

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
});
