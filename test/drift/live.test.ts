/**
 * Drift reports against real agents on loopback (the agent server, two agents with their control interfaces,
 * a process attested to an identity with a Bearer credential written as sysfs files), through the API and
 * `riptides-cli drift` as an operator runs it: a clean fleet exits 0; a hand edit of the control interface is
 * reported, then healed with --heal (files written back, an edited SVID replaced by a new one); an agent that
 * stopped is unreachable; stale items follow the threshold; exit codes 0/1/2; and no report (Markdown, JSON,
 * the reports directory, the webhook body) ever holds the credential's value.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../agent/agent.ts';
import { main } from '../../reconciler/cli/main.ts';
import { CredentialManager } from '../../reconciler/credentials/manager.ts';
import { ReportsDir } from '../../reconciler/drift/history.ts';
import type { DriftReport } from '../../reconciler/drift/report.ts';
import { DriftRunner } from '../../reconciler/drift/runner.ts';
import { type ApiServer, startApiServer } from '../../reconciler/http/server.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { ReconcilerMetrics } from '../../reconciler/telemetry/metrics.ts';
import { type Fleet, startFleet } from '../support/agent-fleet.ts';
import { capture } from '../support/cli.ts';
import { eventually } from '../support/cli-process.ts';
import { FLEET_TD, spiffeOf, workloadOf, writeSecret } from '../support/fleet-policy.ts';
import { uniqueName } from '../support/processes.ts';
import { scratch, tempDir } from '../support/scratch.ts';

const GROUP = 'riptides/daemongroup/drift/a';
const SECRET = 'drift-secret-value-7f3a9c2e51d4b8';
const ID = spiffeOf(workloadOf(0, 0));

let fleet: Fleet;
let dir: string;
let cleanup: () => void;
let agents: Agent[];
let proc: ChildProcess;
let api: ApiServer;
let runner: DriftRunner;
let store: StateStore;
let metrics: ReconcilerMetrics;
let hook: Server;
let hookUrl: string;
const hookBodies: string[] = [];
const printed: string[] = [];

beforeAll(async () => {
  ({ dir, cleanup } = scratch('drift-live'));
  const secrets = join(dir, 'secrets');
  writeSecret(secrets, 'drift-token', SECRET);
  fleet = await startFleet({
    credentialManager: (authority) =>
      new CredentialManager({ minter: authority.jwt, trustDomain: FLEET_TD, secretsDir: secrets }),
  });
  const name = uniqueName('rtd');
  // The workload, for the whole file (the identity keeps its SVID while it runs).
  proc = spawn(copyBinaryAt(dir, name), ['600'], { stdio: 'ignore' });
  fleet.publish({
    groups: { [GROUP]: 2 },
    selectors: { [workloadOf(0, 0)]: { 'process:name': name } },
    credentials: { [workloadOf(0, 0)]: 'drift-token' },
  });
  agents = [];
  for (const n of ['a', 'b'])
    agents.push(
      await Agent.start({
        stateDir: join(dir, `agent-${n}`),
        server: fleet.addr,
        joinToken: await fleet.token({ daemonGroup: GROUP }),
        reportIntervalMs: 250,
      }),
    );
  store = await StateStore.open({ stateDir: join(dir, 'reconciler') });
  metrics = new ReconcilerMetrics({ defaultMetrics: false });
  runner = new DriftRunner({
    source: fleet.server,
    reports: new ReportsDir(join(dir, 'reconciler', 'reports'), 5),
    store,
    metrics,
    keep: 5,
    healWaitMs: 15_000,
  });
  api = await startApiServer({
    host: '127.0.0.1',
    port: 0,
    stateDir: join(dir, 'reconciler'),
    metrics,
    status: () => ({ format: 1, generatedAt: '', source: null, resources: [], daemons: [], events: {} }),
    ready: () => ({ ready: true }),
    drift: (o) => runner.run(o),
  });
  hook = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      hookBodies.push(Buffer.concat(chunks).toString('utf8'));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
  hookUrl = `http://127.0.0.1:${(hook.address() as { port: number }).port}/hooks/drift`;
}, 60_000);

afterAll(async () => {
  await api?.close(100);
  if (hook) await new Promise((r) => hook.close(r));
  for (const a of agents ?? []) await a.stop();
  proc?.kill('SIGKILL');
  await store?.close();
  await fleet?.close();
  // Whatever was printed or sent, nothing carried the credential's value.
  for (const text of [...printed, ...hookBodies]) expect(text).not.toContain(SECRET);
  cleanup?.();
});

/** /bin/sleep under a name of the test's own (its process:name). */
function copyBinaryAt(where: string, name: string): string {
  const path = join(where, name);
  copyFileSync('/bin/sleep', path);
  chmodSync(path, 0o755);
  return path;
}

async function drift(...args: string[]) {
  const out = capture(process.cwd(), { XDG_CACHE_HOME: tempDir('drift-cache') });
  const code = await main(
    [
      'drift',
      ...args,
      ...(args.includes('--server') || args.includes('--state-dir')
        ? []
        : ['--state-dir', join(dir, 'reconciler')]),
    ],
    out.io,
  );
  printed.push(out.stdout, out.stderr);
  return { code, stdout: out.stdout, stderr: out.stderr };
}

const statusOf = (a: Agent) => fleet.server.agents().find((s) => s.daemonId === a.identity.daemonId)!;

/** Every agent reports the published program, the SVID of the running process and the credential, and no edit. */
async function converged(list = agents) {
  await eventually(
    () =>
      list.every((a) => {
        const r = statusOf(a).report;
        return (
          r &&
          r.programVersion === fleet.server.desiredProgramOf(a.identity.daemonId)?.version &&
          r.identities.find((i) => i.spiffeId === ID)?.svidSerial &&
          r.credentials.length === 1 &&
          r.control?.drift.length === 0
        );
      }),
    30_000,
    'every agent converged',
  );
}

describe('drift against live agents', () => {
  it('reports no drift for a converged fleet and exits 0', async () => {
    await converged();
    const r = await drift();
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[2]).toMatch(/^\*\*No drift\*\*: 2 node\(s\) run revision /);
    const json = await drift('--format', 'json');
    const report = JSON.parse(json.stdout) as DriftReport;
    expect(report).toMatchObject({ drifted: false, summary: { nodes: 2, nodesDrifted: 0 } });
    expect(report.nodes.map((n) => n.liveVersion)).toEqual(report.nodes.map((n) => n.desiredVersion));
  });

  it('reports a hand edit of the control interface, then heals it with --heal', async () => {
    const [a] = agents as [Agent, Agent];
    const root = a.node.writer.root;
    const sid = createHash('sha256').update(ID).digest('hex').slice(0, 16);
    const serialBefore = statusOf(a).report!.identities.find((i) => i.spiffeId === ID)!.svidSerial;
    const bundle = join(root, 'certs', 'ca-certificates.crt');
    const original = readFileSync(bundle, 'utf8');
    writeFileSync(bundle, `${original}# trust this too\n`);
    writeFileSync(join(root, 'identities', sid, 'svid.key'), 'not the key the agent made\n');
    const tokenDir = join(root, 'credentials', readdirSync(join(root, 'credentials'))[0]!);
    const token = join(tokenDir, readdirSync(tokenDir)[0]!, 'token');
    writeFileSync(token, 'a token typed by hand\n');
    await eventually(() => (statusOf(a).report?.control?.drift.length ?? 0) >= 3, 20_000, 'edits reported');

    const found = await drift();
    expect(found.code).toBe(1);
    expect(found.stdout.split('\n')[2]).toMatch(/^\*\*Drift detected\*\*: \d+ item\(s\) on 1 of 2 node\(s\)/);
    for (const path of ['certs/ca-certificates.crt', `identities/${sid}/svid.key`, 'credentials/'])
      expect(found.stdout).toContain(path);
    expect(found.stdout).toContain('| out-of-band | file |');

    const healed = await drift('--heal', '--format', 'json', '--webhook', hookUrl);
    expect(healed.code).toBe(1);
    const report = JSON.parse(healed.stdout) as DriftReport;
    expect(report.drifted).toBe(true);
    expect(report.heal?.actions).toEqual([{ node: a.identity.daemonId, sent: ['repair'] }]);
    expect(report.heal?.after).toMatchObject({ drifted: false, nodesDrifted: 0 });
    // The files are the agent's again, the edited SVID was replaced (new key, new serial), the token rewritten.
    expect(readFileSync(bundle, 'utf8')).toBe(original);
    expect(readFileSync(token, 'utf8')).toContain('drift-secret-value');
    // The new SVID is asked for and reported after the files are back (a CSR round trip): waited for.
    await eventually(
      () => statusOf(a).report!.identities.find((i) => i.spiffeId === ID)!.svidSerial !== serialBefore,
      20_000,
      'a new SVID serial reported',
    );
    expect(readFileSync(join(root, 'identities', sid, 'svid.key'), 'utf8')).toMatch(
      /^-----BEGIN PRIVATE KEY-----/,
    );
    expect(JSON.parse(hookBodies.at(-1)!)).toEqual(report);

    const after = await drift();
    expect(after.code).toBe(0);
    // Kept in the reports directory and the store's history, newest last.
    const history = [...store.drift.entries()].map(([, v]) => v.drifted);
    expect(history.slice(-3)).toEqual([true, true, false]);
    const files = readdirSync(join(dir, 'reconciler', 'reports'));
    expect(files.filter((f) => f.endsWith('.md'))).toHaveLength(5);
    for (const f of files)
      expect(readFileSync(join(dir, 'reconciler', 'reports', f), 'utf8')).not.toContain(SECRET);
    const m = await metrics.exposition();
    expect(m.body).toMatch(/riptides_drift_reports_total\{result="drift"\} [2-9]/);
    expect(m.body).toContain('riptides_drift_items{kind="out-of-band"} 0');
  }, 60_000);

  it('reports SVIDs and credentials inside the stale threshold', async () => {
    const strict = new DriftRunner({
      source: fleet.server,
      reports: new ReportsDir(tempDir('drift-stale')),
      thresholds: { staleThresholdSeconds: 2 * 3600 },
    });
    const { report } = await strict.run();
    const stale = report.nodes.flatMap((n) => n.items).filter((i) => i.kind === 'stale');
    // One SVID per agent (1-hour SVIDs are inside a 2-hour threshold); the Secret-backed credential never expires.
    expect(stale.map((i) => `${i.what} ${i.subject}`)).toEqual([`svid ${ID}`, `svid ${ID}`]);
    expect(stale[0]!.expiresAt).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('reports an agent that stopped as unreachable', async () => {
    const b = agents[1]!;
    await b.stop();
    await eventually(() => !statusOf(b).connected, 10_000, 'the reconciler sees the stream end');
    const r = await drift('--format', 'json');
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as DriftReport;
    const node = report.nodes.find((n) => n.node === b.identity.daemonId)!;
    expect(node).toMatchObject({ reachable: false, items: [{ kind: 'unreachable', what: 'agent' }] });
    expect(report.summary.counts.unreachable).toBe(1);
    const md = await drift();
    expect(md.stdout).toContain('**unreachable**');
    // A heal cannot reach it, and says so.
    const healed = JSON.parse((await drift('--heal', '--format', 'json')).stdout) as DriftReport;
    expect(healed.heal?.actions).toEqual([
      { node: b.identity.daemonId, sent: [], note: 'unreachable: nothing could be sent' },
    ]);
  });

  it('exits 2 when it cannot run, never 1', async () => {
    const nowhere = await drift('--state-dir', tempDir('no-reconciler'));
    expect(nowhere.code).toBe(2);
    expect(nowhere.stderr).toContain('no reconciler serves from state directory');
    const refused = await drift('--webhook', 'http://127.0.0.1:1/x');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('the webhook did not take the report');
    const bad = await drift('--format', 'yaml');
    expect(bad.code).toBe(2);
    const plain = await drift('--webhook', 'http://hooks.example.com/x');
    expect(plain.code).toBe(2);
    expect(plain.stderr).toContain('must be https');
  });
});
