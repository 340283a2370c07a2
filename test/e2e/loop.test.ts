/**
 * The reconcile loop end to end, as an operator runs it: a real git server (git http-backend) on loopback,
 * commits pushed with the git CLI, a `riptides-cli reconciler` process following the branch, three
 * `riptides-cli agent` processes (two in daemon group A, one in B) programming their control interfaces, a
 * workload process attested on group A. Checked through what people look at: `ctl get`, the agents' control
 * interfaces, /metrics, the logs, the store. One setup for the file; the SIGKILL series comes last.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlReader } from '../../kernel-module/control/index.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { allOutput, type CliProcess, eventually, runCli, startCli } from '../support/cli-process.ts';
import { writeSecret } from '../support/fleet-policy.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { uniqueName } from '../support/processes.ts';
import { parsePrometheus } from '../support/prometheus.ts';
import { scratch } from '../support/scratch.ts';

const TD = 'loop.example.org';
const A = 'riptides/daemongroup/loop/a';
const B = 'riptides/daemongroup/loop/b';
const SECRET = `loop-bearer-${randomBytes(12).toString('hex')}`;
const HOOK_SECRET = randomBytes(32).toString('hex');

/** The policy repository: every kind, both credential forms. `inbound` tweaks the worker's allow list. */
function policyFiles(processName: string, opts: { inbound?: string; broken?: boolean } = {}) {
  const identities = `apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: { name: api, namespace: riptides-system }
spec:
  workloadID: loop/api
  scope: { daemonGroup: { id: ${A} } }
  selectors:
    - process:name: ${processName}
  connection: { tls: { mode: PERMISSIVE } }
  egress:
    - selectors: [{ app: payments }]
      credentialName: api-legacy
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: { name: worker, namespace: riptides-system }
spec:
  workloadID: loop/worker
  scope: { daemonGroup: { id: ${A} } }
  selectors:
    - process:name: loop-worker-never-runs
  ${opts.broken ? 'conection' : 'connection'}: { tls: { mode: MUTUAL } }
  allowedSPIFFEIDs:
    inbound: [spiffe://${TD}/loop/api${opts.inbound ? `, spiffe://${TD}/${opts.inbound}` : ''}]
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: { name: reporter, namespace: riptides-system }
spec:
  workloadID: loop/reporter
  scope: { daemonGroup: { id: ${B} } }
  selectors:
    - process:name: loop-reporter-never-runs
`;
  const services = `apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata: { name: payments, namespace: riptides-system }
spec:
  addresses: [{ address: payments.internal, port: 8080 }]
  labels: { app: payments }
`;
  const credentials = `apiVersion: core.riptides.io/v1alpha1
kind: CredentialSource
metadata: { name: loop-token, namespace: riptides-system }
spec:
  kubernetes: { type: BearerToken, secretRef: { name: loop-token, key: token } }
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata: { name: api-token, namespace: riptides-system }
spec:
  workloadID: loop/api
  credentialSource: loop-token
  propagation: { sysfs: {} }
---
apiVersion: core.riptides.io/v1alpha1
kind: WorkloadCredential
metadata: { name: api-legacy, namespace: riptides-system }
spec:
  workloadID: loop/api
  credentialSource: loop-token
`;
  return {
    'policies/riptides.config.yaml': `trustDomain: ${TD}\n`,
    'policies/identities.yaml': identities,
    'policies/services.yaml': services,
    'policies/credentials.yaml': credentials,
  };
}

/** HMAC-SHA256 by openssl, independent of the code under test. */
function githubSignature(body: string, secret = HOOK_SECRET): string {
  const out = execFileSync('openssl', ['dgst', '-sha256', '-hmac', secret], { input: body }).toString();
  return `sha256=${out.trim().split('= ')[1]}`;
}

interface Node {
  /** Its daemon ID (assigned at join). */
  name: string;
  group: string;
  dir: string;
  reader: ControlReader;
  proc: CliProcess;
}

describe('the reconcile loop, end to end', () => {
  const tmp = scratch('loop-e2e');
  const base = tmp.dir;
  const state = join(base, 'state');
  const secrets = join(base, 'secrets');
  const hookFile = join(base, 'hook-secret');
  const processName = uniqueName('rtl');
  let server: GitServer;
  let clone: WorkClone;
  let reconciler: CliProcess;
  let listen = '127.0.0.1:0';
  let apiUrl = '';
  const nodes: Node[] = [];
  let workload: ChildProcess | undefined;
  let delivery = 0;
  /** Every ctl output and API answer, for the no-secret check at the end. */
  const seen: string[] = [];

  const startReconciler = async (wait = true) => {
    const p = startCli(
      [
        'reconciler',
        '--repo',
        `${server.url}/policy.git`,
        '--path',
        'policies',
        '--listen',
        listen,
        '--state-dir',
        state,
        '--secrets-dir',
        secrets,
        '--webhook-secret-file',
        hookFile,
        '--poll-interval',
        'off',
        '--apply-timeout',
        '20s',
      ],
      { XDG_CACHE_HOME: join(base, 'cache') },
      { keep: true },
    );
    if (!wait) return p;
    const serving = await p.waitForLog((l) => l.msg === 'serving agents', 60_000, 'serving agents');
    listen = String(serving.listen);
    apiUrl = String(serving.api);
    return p;
  };

  const commit = async (files: Record<string, string>, message: string) => {
    clone.write(files);
    const id = await clone.commit(message);
    await clone.push();
    return id;
  };

  const webhook = async (body: string, headers: Record<string, string>) => {
    const res = await fetch(`${apiUrl}/hooks/github`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', 'x-github-event': 'push', ...headers },
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  // Every real push payload differs (GitHub's carries the time); `pushed_at` makes ours differ too.
  let pushed = 0;
  const pushEvent = (after: string) =>
    JSON.stringify({
      ref: 'refs/heads/main',
      after,
      pushed_at: ++pushed,
      repository: { full_name: 'org/policy' },
    });
  const notify = (after: string) => {
    const body = pushEvent(after);
    return webhook(body, {
      'x-hub-signature-256': githubSignature(body),
      'x-github-delivery': `delivery-${++delivery}`,
    });
  };

  const passes = (p = reconciler) => p.logs().filter((l) => l.msg === 'pass');
  const applied = (revision: string, p = reconciler) =>
    p.waitForLog((l) => l.msg === 'pass' && l.applied === revision, 60_000, `pass applying ${revision}`);

  const ctl = (...args: string[]) => {
    const r = runCli(['ctl', ...args, '--state-dir', state]);
    seen.push(r.stdout, r.stderr);
    return r;
  };
  const ctlJson = <T>(...args: string[]) => {
    const r = ctl(...args, '-o', 'json');
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  type Daemon = {
    name: string;
    appliedVersion: string | null;
    desiredVersion: string | null;
    health: string;
  };
  const daemons = () => ctlJson<{ items: Daemon[] }>('get', 'daemons').items;
  const allInSync = async () => {
    const list = daemons();
    if (list.length !== 3 || !list.every((d) => d.appliedVersion && d.appliedVersion === d.desiredVersion))
      return false;
    // What each node's control interface enforces, not only what the reconciler believes.
    for (const n of nodes) {
      const own = list.find((d) => d.name === n.name);
      if ((await n.reader.enforced())?.version !== own?.desiredVersion) return false;
    }
    return list;
  };

  beforeAll(async () => {
    const root = join(base, 'srv');
    mkdirSync(root);
    await createBareRepo(root, 'policy');
    server = await startGitServer({ root });
    clone = await WorkClone.create(`${server.url}/policy.git`, join(base, 'clone'));
    await commit(policyFiles(processName), 'first');
    writeSecret(secrets, 'loop-token', SECRET);
    writeFileSync(hookFile, `${HOOK_SECRET}\n`, { mode: 0o600 });
    chmodSync(hookFile, 0o600);
    reconciler = await startReconciler();
    await applied(await clone.git('rev-parse', 'HEAD'));
    for (const [label, group] of [
      ['a1', A],
      ['a2', A],
      ['b1', B],
    ] as const) {
      const token = runCli(['token', 'create', '--state-dir', state, '--daemon-group', group]);
      expect(token.status, token.stderr).toBe(0);
      const dir = join(base, label);
      const proc = startCli(
        ['agent', '--server', listen, '--join-token', token.stdout.trim(), '--state-dir', dir],
        {},
        { keep: true },
      );
      const joined = await proc.waitForLog((l) => l.msg === 'joined', 60_000, `${label} joined`);
      const name = String(joined.spiffeId).split('/').at(-1)!;
      nodes.push({ name, group, dir, reader: new ControlReader(join(dir, 'control')), proc });
    }
    // The workload the api identity selects by name (a copy of sleep), attested by both group-A agents.
    const bin = join(base, processName);
    copyFileSync('/bin/sleep', bin);
    chmodSync(bin, 0o755);
    workload = spawn(bin, ['600'], { stdio: 'ignore', detached: true });
    await eventually(allInSync, 60_000, 'every agent in sync');
  }, 180_000);

  afterAll(async () => {
    if (workload?.pid) process.kill(-workload.pid, 'SIGKILL');
    for (const n of nodes) await n.proc.stop('SIGTERM');
    await reconciler?.stop('SIGTERM');
    await server?.close();
    tmp.cleanup();
  });

  it('a push is applied on every agent of its group; ctl get shows the revision', async () => {
    const before = daemons();
    const head = await commit(policyFiles(processName, { inbound: 'loop/first-change' }), 'widen the worker');
    expect((await notify(head)).status).toBe(202);
    const pass = await applied(head);
    expect(pass).toMatchObject({ result: 'applied', revision: head, parsed: 1, scopesChanged: 1 });
    expect(pass.agentsToUpdate).toBe(2);
    const after = await eventually(allInSync, 30_000, 'agents in sync with the push');
    // Group A moved to a new version; group B's program did not change.
    const [a1, a2, b1] = nodes.map((n) => n.name);
    const version = (list: Daemon[], name: string | undefined) =>
      list.find((d) => d.name === name)!.appliedVersion;
    expect(version(after, a1)).not.toBe(version(before, a1));
    expect(version(after, a1)).toBe(version(after, a2));
    expect(version(after, b1)).toBe(version(before, b1));
    const worker = (await nodes[0]!.reader.rules())!.identities.find((i) => i.spiffeId.endsWith('/worker'));
    expect(worker!.inbound.allowedSpiffeIds).toContain(`spiffe://${TD}/loop/first-change`);

    const source = ctl('get', 'source');
    expect(source.status).toBe(0);
    const row = source.stdout.split('\n')[1]!;
    expect(row).toMatch(
      new RegExp(`^policy\\s+main\\s+${head.slice(0, 12)} .*${head.slice(0, 12)} .*\\s+True\\s+`),
    );
    expect(ctlJson<{ lastAppliedRevision: string }>('get', 'source').lastAppliedRevision).toBe(head);
  });

  it('webhook signatures: good accepted, bad and missing refused with 401 and counted, a replay starts nothing', async () => {
    const head = await clone.git('rev-parse', 'HEAD');
    const body = pushEvent(head);
    const bad = await webhook(body, { 'x-hub-signature-256': githubSignature(body, 'not-the-secret-0000') });
    expect(bad).toMatchObject({ status: 401, body: { result: 'rejected', reason: 'bad-signature' } });
    const missing = await webhook(body, {});
    expect(missing).toMatchObject({ status: 401, body: { result: 'rejected', reason: 'missing-signature' } });
    const count = passes().length;
    const headers = {
      'x-hub-signature-256': githubSignature(body),
      'x-github-delivery': 'replayed-delivery',
    };
    expect((await webhook(body, headers)).status).toBe(202);
    await eventually(() => passes().length === count + 1, 20_000, 'the pass of the good delivery');
    const replay = await webhook(body, headers);
    expect(replay).toMatchObject({ status: 200, body: { result: 'duplicate' } });
    // A signed, new delivery after the replay starts one pass: the replay started none.
    expect((await notify(head)).status).toBe(202);
    await eventually(() => passes().length === count + 2, 20_000, 'the pass after the replay');
    await new Promise((r) => setTimeout(r, 300));
    expect(passes().length).toBe(count + 2);
  });

  it('a commit that does not validate applies nothing: ctl get source shows file and line, the last good stays', async () => {
    const good = await clone.git('rev-parse', 'HEAD');
    const versions = daemons().map((d) => d.appliedVersion);
    const files = policyFiles(processName, { inbound: 'loop/never', broken: true });
    const typoLine =
      files['policies/identities.yaml'].split('\n').findIndex((l) => l.includes('conection')) + 1;
    const bad = await commit(files, 'a typo');
    expect((await notify(bad)).status).toBe(202);
    const pass = await reconciler.waitForLog(
      (l) => l.msg === 'pass' && l.revision === bad,
      60_000,
      'the pass of the bad commit',
    );
    expect(pass).toMatchObject({ result: 'stalled', code: 'ValidationFailed', applied: good });
    const source = ctl('get', 'source');
    expect(source.stdout).toContain(
      `Diagnostics of ${bad.slice(0, 12)} (not applied; ${good.slice(0, 12)} stays in force):`,
    );
    expect(source.stdout).toContain(
      `policies/identities.yaml:${typoLine}:3: error RT020: unknown field "spec.conection"`,
    );
    expect(source.stdout.split('\n')[1]).toMatch(/\sFalse\s/);
    expect(daemons().map((d) => d.appliedVersion)).toEqual(versions);
    for (const n of nodes) expect((await n.reader.rules())!.identities.length).toBeGreaterThan(0);
    // Fixed: applied again.
    const fixed = await commit(policyFiles(processName, { inbound: 'loop/first-change' }), 'fix the typo');
    expect((await notify(fixed)).status).toBe(202);
    await applied(fixed);
    expect(ctlJson<{ diagnostics: unknown[] }>('get', 'source').diagnostics).toEqual([]);
  });

  it('a burst of 20 pushes is coalesced into few passes, and the last commit is applied', async () => {
    const heads: string[] = [];
    for (let i = 0; i < 20; i++)
      heads.push(await commit(policyFiles(processName, { inbound: `loop/burst-${i}` }), `burst ${i}`));
    const before = passes().length;
    const answers = await Promise.all(heads.map((h) => notify(h)));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(202));
    await applied(heads.at(-1)!);
    await eventually(() => {
      const burst = passes().slice(before);
      const counted = burst.reduce(
        (n, l) => n + Number((l.triggers as { webhook?: number }).webhook ?? 0),
        0,
      );
      return counted === 20 ? burst : false;
    }, 20_000);
    const burst = passes().slice(before);
    // One pass starts at the first delivery; everything arriving while it runs makes exactly one more.
    expect(burst.length).toBeLessThanOrEqual(3);
    expect(burst.at(-1)!.applied).toBe(heads.at(-1));
    await eventually(allInSync, 30_000, 'agents on the last commit');
    const worker = (await nodes[1]!.reader.rules())!.identities.find((i) => i.spiffeId.endsWith('/worker'));
    expect(worker!.inbound.allowedSpiffeIds).toContain(`spiffe://${TD}/loop/burst-19`);
  });

  it('ctl get shows every kind with its STATE columns, from the running reconciler', async () => {
    const table = (kind: string) => {
      const r = ctl('get', kind);
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trimEnd().split('\n');
    };
    const wid = await eventually(
      () => {
        const t = table('wid');
        return /^api\s+loop\/api\s+daemonGroup:riptides\/daemongroup\/loop\/a\s+2\s+2\s+in \d+m\s+True$/.test(
          t.find((l) => l.startsWith('api ')) ?? '',
        )
          ? t
          : false;
      },
      30_000,
      'the api identity with its two nodes, two processes and SVID expiry',
    );
    expect(wid[0]).toMatch(/^NAME\s+WORKLOAD ID\s+SCOPE\s+NODES\s+PROCESSES\s+SVID EXPIRY\s+READY$/);
    expect(wid.find((l) => l.startsWith('reporter '))).toMatch(/daemongroup\/loop\/b\s+1\s+0\s+-\s+True$/);
    expect(table('svc')).toEqual([
      expect.stringMatching(/^NAME\s+ADDRESSES\s+EXTERNAL\s+LABELS$/),
      expect.stringMatching(/^payments\s+payments\.internal:8080\s+false\s+app=payments$/),
    ]);
    expect(table('credsrc')[1]).toMatch(/^loop-token\s+kubernetes\s+AVAILABLE\s+-$/);
    expect(table('cb')[1]).toMatch(/^api-token\s+loop\/api\s+loop-token\s+OK\s+-$/);
    expect(table('workloadcredential')[1]).toMatch(/^api-legacy\s+loop\/api\s+loop-token\s+OK\s+-$/);
    const wide = ctl('get', 'cb', '-o', 'wide').stdout;
    expect(wide).toMatch(/sysfs\s+hmac-sha256:[0-9a-f]{16}\s+1/);
    const d = table('daemons');
    expect(d[0]).toMatch(/^NAME\s+WORKLOAD ID\s+GROUP\s+HEALTH\s+VERSION\s+LAST CONTACT$/);
    expect(d.slice(1).map((l) => l.split(/\s+/).slice(0, 4))).toEqual(
      [...nodes]
        .sort((x, y) => (x.name < y.name ? -1 : 1))
        .map((n) => [n.name, `riptides/daemon/${n.name}`, n.group, 'ok']),
    );
    expect(ctl('get', 'wid', '-o', 'name').stdout).toBe(
      [
        'workloadidentity.core.riptides.io/api',
        'workloadidentity.core.riptides.io/reporter',
        'workloadidentity.core.riptides.io/worker',
        '',
      ].join('\n'),
    );
    const described = ctl('describe', 'wid', 'api').stdout;
    expect(described).toMatch(/Ready\s+True\s+Applied/);
  });

  it('/metrics is served to the metrics credential and parses as Prometheus text', async () => {
    const token = readFileSync(join(state, 'api', 'metrics.token'), 'utf8').trim();
    await new Promise((r) => setTimeout(r, 300)); // any pass still logging ends
    const passesAtScrape = passes().length;
    expect((await fetch(`${apiUrl}/metrics`)).status).toBe(401);
    const res = await fetch(`${apiUrl}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const text = await res.text();
    seen.push(text);
    const m = parsePrometheus(text);
    const head = await clone.git('rev-parse', 'HEAD');
    const sample = (family: string, labels: Record<string, string> = {}) =>
      m[family]?.samples.find(
        (s) => !s.name.endsWith('_created') && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
      )?.value;
    expect(sample('riptides_applied_revision_info', { revision: head })).toBe(1);
    expect(sample('riptides_agents_connected')).toBe(3);
    // The agent server's own counts reach the same scrape.
    expect(sample('riptides_agent_joins')).toBe(3);
    expect(sample('riptides_webhook_rejections', { provider: 'github', reason: 'bad-signature' })).toBe(1);
    expect(sample('riptides_webhook_rejections', { provider: 'github', reason: 'missing-signature' })).toBe(
      1,
    );
    expect(sample('riptides_webhook_requests', { provider: 'github', result: 'duplicate' })).toBe(1);
    expect(sample('riptides_credential_sources', { state: 'AVAILABLE' })).toBe(1);
    expect(sample('riptides_credential_bindings', { state: 'OK' })).toBe(1);
    expect(sample('riptides_triggers', { source: 'webhook' })).toBeGreaterThanOrEqual(25);
    const durations = m.riptides_reconcile_duration_seconds!.samples.filter((s) => s.name.endsWith('_count'));
    expect(durations.reduce((n, s) => n + s.value, 0)).toBe(passesAtScrape);
    expect(sample('riptides_program_pushes')).toBeGreaterThanOrEqual(4);
    // Public: readiness, liveness and the OIDC documents need no credential.
    expect((await fetch(`${apiUrl}/readyz`)).status).toBe(200);
    const discovery = (await (await fetch(`${apiUrl}/oidc/.well-known/openid-configuration`)).json()) as {
      issuer: string;
      jwks_uri: string;
    };
    expect(discovery).toMatchObject({
      issuer: 'https://localhost/oidc',
      jwks_uri: 'https://localhost/oidc/keys',
    });
    const jwks = (await (await fetch(`${apiUrl}/oidc/keys`)).json()) as { keys: Array<{ kty: string }> };
    expect(jwks.keys[0]).toMatchObject({ kty: 'EC', use: 'sig', alg: 'ES256' });
  });

  it('killed with SIGKILL at random points twenty times, then restarted: converges, loses nothing, issues nothing again', async () => {
    const apiId = `spiffe://${TD}/loop/api`;
    const svidSerials = async () =>
      Promise.all(nodes.slice(0, 2).map(async (n) => (await n.reader.svid(apiId))?.serial ?? null));
    const held = await eventually(
      async () => ((await svidSerials()).every(Boolean) ? svidSerials() : false),
      30_000,
      'the api SVIDs on both A nodes',
    );
    expect(await reconciler.stop('SIGTERM')).toBe(0);
    const readStore = async () => {
      const store = await StateStore.open({ stateDir: state });
      try {
        return {
          applied: store.applied.get(),
          serials: new Map(store.serials.entries()),
          status: store.status.get(),
        };
      } finally {
        await store.close();
      }
    };
    const before = await readStore();
    // Every SVID the agents hold is in the store: 3 agent SVIDs at join, and the api identity's on n-a1, n-a2.
    for (const serial of held) expect(before.serials.has(serial!)).toBe(true);
    expect(before.serials.size).toBe(5);

    let seed = Number.parseInt(randomBytes(4).toString('hex'), 16);
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const log: string[] = [`seed ${seed}`];
    for (let i = 0; i < 20; i++) {
      if (i % 3 === 0) {
        // During start-up: opening the store, restoring the applied revision, the first pass.
        const p = await startReconciler(false);
        const delay = Math.round(random() * 1500);
        await new Promise((r) => setTimeout(r, delay));
        await p.stop('SIGKILL');
        log.push(`start-up +${delay}ms`);
      } else {
        // During a pass started by a push: fetch, render, push, the store write, the wait for ACKs.
        const p = await startReconciler();
        const head = await commit(policyFiles(processName, { inbound: `loop/kill-${i}` }), `kill ${i}`);
        const body = pushEvent(head);
        const answer = await fetch(`${apiUrl}/hooks/github`, {
          method: 'POST',
          body,
          headers: { 'x-github-event': 'push', 'x-hub-signature-256': githubSignature(body) },
        }).catch(() => null);
        const delay = Math.round(random() * 400);
        await new Promise((r) => setTimeout(r, delay));
        await p.stop('SIGKILL');
        log.push(`pass ${answer?.status ?? 'down'} +${delay}ms`);
      }
    }
    reconciler = await startReconciler();
    const head = await commit(policyFiles(processName, { inbound: 'loop/after-kills' }), 'after the kills');
    expect((await notify(head)).status).toBe(202);
    await applied(head);
    await eventually(allInSync, 60_000, `agents in sync after the kills (${log.join(', ')})`);
    expect(ctlJson<{ lastAppliedRevision: string }>('get', 'source').lastAppliedRevision).toBe(head);
    // The SVIDs still valid were not issued again: the same serials on the nodes, no new record in the store.
    expect(await svidSerials()).toEqual(held);
    expect(await reconciler.stop('SIGTERM')).toBe(0);
    const after = await readStore();
    expect(after.applied?.revision).toBe(head);
    expect([...after.serials.keys()].sort()).toEqual([...before.serials.keys()].sort());
    expect(after.status?.source?.lastAppliedRevision).toBe(head);
    reconciler = await startReconciler();
  }, 300_000);

  it('no credential value in any log, status, API answer or file of the state directory', async () => {
    const status = await fetch(`${apiUrl}/api/v1/status`, {
      headers: { authorization: `Bearer ${readFileSync(join(state, 'api', 'admin.token'), 'utf8').trim()}` },
    });
    seen.push(await status.text());
    const files = readdirSync(state, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(files.some((f) => f.name === 'status.0.log' || f.name === 'status.snap')).toBe(true);
    for (const f of files) seen.push(readFileSync(join(f.parentPath, f.name)).toString('latin1'));
    // Agents' state directories too, but for the credential files sysfs propagation exists to write.
    for (const n of nodes)
      for (const f of readdirSync(n.dir, { recursive: true, withFileTypes: true }))
        if (f.isFile() && !join(f.parentPath, f.name).includes(`${join('control', 'credentials')}`))
          seen.push(readFileSync(join(f.parentPath, f.name)).toString('latin1'));
    // The value did flow where it should: to the A nodes' sysfs files.
    const credDir = (await nodes[0]!.reader.rules())!.identities
      .find((i) => i.spiffeId.endsWith('/api'))!
      .credentials.find((c) => c.sysfs)!.sysfs!.dir;
    expect((await nodes[0]!.reader.sysfsCredential(credDir))?.token).toBe(SECRET);
    for (const text of [...seen, ...allOutput]) expect(text).not.toContain(SECRET);
  });
});
