/**
 * Exit 1 means findings (validation errors, plan changes, an unavailable credential). Every other failure is
 * exit 2 with one line. Every command of the CLI, run as shipped (bin/riptides-cli.mjs), gets an unexpected
 * failure injected deep inside it (see test/support/inject-fault.mjs): thrown in the command, rejected with
 * nobody waiting, thrown from a later callback. Each must end with exit 2 and one line that names the
 * command, and a stack trace only with --debug.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonRecordFile } from '../../reconciler/agents/registry.ts';
import { commands } from '../../reconciler/cli/commands.ts';
import { main } from '../../reconciler/cli/main.ts';
import { ReportsDir } from '../../reconciler/drift/history.ts';
import { DriftRunner } from '../../reconciler/drift/runner.ts';
import { type ApiServer, startApiServer } from '../../reconciler/http/server.ts';
import { ReconcilerMetrics } from '../../reconciler/telemetry/metrics.ts';
import { capture } from '../support/cli.ts';
import { git } from '../support/git-fixtures.ts';
import { scratch } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';
import { seededBook } from '../support/status-fixture.ts';

const H = 'apiVersion: core.riptides.io/v1alpha1\n';
const MODES = ['throw', 'reject', 'callback'] as const;

let tmp: ReturnType<typeof scratch>;
/** A reconciler API for `ctl` to talk to (its address and credential in the state directory). */
let api: ApiServer | undefined;
/** A successful invocation of every command (and subcommand); each writes to stdout when it succeeds. */
let invocations: Record<string, string[][]>;

beforeAll(async () => {
  tmp = scratch('unexpected');
  const d = (...p: string[]) => join(tmp.dir, ...p);
  const ca = d('ca');
  expect(await main(['ca', 'init', '--trust-domain', 'example.com', '--dir', ca], capture().io)).toBe(0);
  // The reconciler's state directory, as `token create` expects it: its CA in ca/.
  expect(
    await main(['ca', 'init', '--trust-domain', 'example.com', '--dir', d('rstate', 'ca')], capture().io),
  ).toBe(0);

  // Registered daemons for `daemon evict`, one per fault mode.
  mkdirSync(d('rstate', 'daemons'));
  for (const mode of MODES)
    writeFileSync(
      daemonRecordFile(d('rstate', 'daemons'), `node-${mode}`),
      JSON.stringify({
        daemonId: `node-${mode}`,
        spiffeId: `spiffe://example.com/riptides/daemon/node-${mode}`,
        daemonGroup: null,
        joinedAt: '2026-12-01T00:00:00Z',
        tokenId: '00000000',
      }),
    );

  mkdirSync(d('policy'));
  writeFileSync(d('policy', 'riptides.config.yaml'), 'trustDomain: example.com\n');
  writeFileSync(
    d('policy', 'policy.yaml'),
    [
      `${H}kind: WorkloadIdentity\nmetadata:\n  name: app\nspec:\n  workloadID: apps/app\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: app\n`,
      `${H}kind: CredentialSource\nmetadata:\n  name: token\nspec:\n  kubernetes:\n    secretRef:\n      name: token\n      key: token\n    type: BearerToken\n`,
      `${H}kind: CredentialBinding\nmetadata:\n  name: app-token\nspec:\n  workloadID: apps/app\n  credentialSource: token\n  propagation:\n    sysfs: {}\n`,
    ].join('---\n'),
  );
  mkdirSync(d('secrets'));
  writeFileSync(
    d('secrets', 'token.yaml'),
    'apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n  namespace: riptides-system\nstringData:\n  token: unexpected-failures-test\n',
  );

  const repo = d('repo');
  mkdirSync(repo);
  await git(repo, 'init', '--quiet', '-b', 'main');
  writeFileSync(join(repo, 'riptides.config.yaml'), 'trustDomain: example.com\n');
  writeFileSync(
    join(repo, 'svc.yaml'),
    `${H}kind: Service\nmetadata:\n  name: a\nspec:\n  labels:\n    app: a\n`,
  );
  await git(repo, 'add', '-A');
  await git(repo, 'commit', '--quiet', '-m', 'base');

  const book = seededBook(new Date());
  api = await startApiServer({
    host: '127.0.0.1',
    port: 0,
    stateDir: d('state'),
    metrics: new ReconcilerMetrics({ defaultMetrics: false }),
    status: () => book.snapshot(),
    ready: () => ({ ready: true }),
    // A reconciler with no agents yet: drift reports nothing and prints the report.
    drift: (o) =>
      new DriftRunner({
        source: {
          publishedRevision: null,
          agents: () => [],
          desiredProgramOf: () => null,
          credentialFacts: () => undefined,
          heal: () => null,
        },
        reports: new ReportsDir(d('reports')),
      }).run(o),
  });

  const id = 'spiffe://example.com/apps/app';
  invocations = {
    validate: [['validate', '--repo', repoRoot, '--path', 'policies']],
    schema: [['schema', '--out', d('schemas')]],
    compile: [['compile', '--repo', repoRoot, '--path', 'policies']],
    plan: [['plan', '--repo', repo, '--base', 'main', '--head', 'main', '--cache-dir', d('plan-cache')]],
    credentials: [
      [
        'credentials',
        'check',
        '--repo',
        d('policy'),
        '--source',
        'token',
        '--ca-dir',
        ca,
        '--secrets-dir',
        d('secrets'),
      ],
    ],
    ca: [
      ['ca', 'init', '--trust-domain', 'example.com', '--dir', d('ca-new-{mode}')],
      ['ca', 'rotate', '--dir', ca],
      ['ca', 'show', '--dir', ca],
    ],
    svid: [['svid', 'mint', '--dir', ca, '--spiffe-id', id, '--out', d('svid-{mode}')]],
    jwt: [['jwt', 'mint', '--dir', ca, '--spiffe-id', id, '--audience', 'test']],
    bundle: [['bundle', 'show', '--dir', ca]],
    oidc: [['oidc', 'serve', '--dir', ca, '--listen', '127.0.0.1:0']],
    ctl: [['ctl', 'get', 'wid', '--state-dir', d('state')]],
    token: [['token', 'create', '--daemon-group', 'riptides/daemongroup/test', '--state-dir', d('rstate')]],
    daemon: [['daemon', 'evict', 'node-{mode}', '--state-dir', d('rstate')]],
    // A server that logs to stderr and never writes stdout: the fault is injected into its first log line.
    reconciler: [
      [
        'reconciler',
        '--repo',
        repoRoot,
        '--path',
        'policies',
        '--listen',
        '127.0.0.1:0',
        '--state-dir',
        d('rstate-{mode}'),
        '{stderr}',
      ],
    ],
    agent: [['agent', 'augment', String(process.pid)]],
    drift: [['drift', '--state-dir', d('state')]],
    // Its addresses are its first write to stdout, after the reconciler and the local agent started.
    up: [
      [
        'up',
        '--state-dir',
        d('up-{mode}'),
        '--api-listen',
        '127.0.0.1:0',
        '--agent-listen',
        '127.0.0.1:0',
        '--control-root',
        d('up-{mode}', 'control'),
        // The quickstart's data plane on ports the OS chooses (its defaults are fixed ones).
        '--proxy-listen',
        '127.0.0.1:0',
        '--inbound',
        'identity=quickstart/app/orders-api,listen=127.0.0.1:0,forward=127.0.0.1:18081',
      ],
    ],
  };
});

afterAll(async () => {
  await api?.close(100);
  tmp?.cleanup();
});

function runBin(
  args: string[],
  mode: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // `{stderr}`: a command that only logs gets the fault in its first write to stderr.
  const stream = args.includes('{stderr}') ? 'stderr' : 'stdout';
  const argv = args.filter((a) => a !== '{stderr}');
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [
        '--import',
        join(repoRoot, 'test', 'support', 'inject-fault.mjs'),
        join(repoRoot, 'bin', 'riptides-cli.mjs'),
        ...argv,
      ],
      {
        cwd: tmp.dir,
        env: {
          ...process.env,
          RIPTIDES_TEST_FAULT: mode,
          RIPTIDES_TEST_FAULT_STREAM: stream,
          XDG_CACHE_HOME: join(tmp.dir, 'xdg'),
          XDG_STATE_HOME: join(tmp.dir, 'xdg-state'),
        },
        timeout: 60_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

/** Runs `jobs` at most `limit` at a time (the machine has two cores; each run starts a Node process). */
async function pool<T>(jobs: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]!();
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return results;
}

describe('an unexpected failure anywhere in the CLI', () => {
  it('covers every command the CLI has', () => {
    expect(Object.keys(invocations).sort()).toEqual(Object.keys(commands).sort());
  });

  it('exits 2 with one line naming the command, in every command, however it fails', async () => {
    const cases = Object.entries(invocations).flatMap(([name, list]) =>
      list.flatMap((args) =>
        MODES.map((mode) => ({ name, mode, args: args.map((a) => a.replace('{mode}', mode)) })),
      ),
    );
    const results = await pool(
      cases.map((c) => () => runBin(c.args, c.mode)),
      3,
    );
    const problems: string[] = [];
    cases.forEach((c, i) => {
      const r = results[i]!;
      const what = `${c.args.slice(0, 2).join(' ')} [${c.mode}]`;
      const last = r.stderr.trimEnd().split('\n').at(-1) ?? '';
      if (r.code !== 2) problems.push(`${what}: exit ${r.code}\n${r.stderr}`);
      if (
        last !==
        `riptides-cli ${c.name}: unexpected error: injected fault: ${c.mode} (run again with --debug for the stack trace)`
      )
        problems.push(`${what}: last line of stderr is ${JSON.stringify(last)}`);
      if (r.stderr.includes('second line') || /^\s+at /m.test(r.stderr))
        problems.push(`${what}: more than one line of the error, or a stack:\n${r.stderr}`);
    });
    expect(problems).toEqual([]);
    // Some forty processes; from sources (tsx, no dist/ built) each takes a second or two to start.
  }, 240_000);

  it('prints the stack with --debug', async () => {
    const r = await runBin(['bundle', 'show', '--dir', join(tmp.dir, 'ca'), '--debug'], 'callback');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^riptides-cli bundle: unexpected error: injected fault: callback$/m);
    expect(r.stderr).toMatch(
      /^TypeError: injected fault: callback\nsecond line that must not be shown\n\s+at /m,
    );
  });
});
