/**
 * The reconcile loop benchmark (`npm run bench -- loop`), with the shipped `riptides-cli reconciler` following
 * a repository on a loopback git server (git http-backend), webhook-triggered:
 *
 * 1. 1,000 resources (200 teams in 10 daemon groups), 50 `riptides-cli agent` processes (5 per group):
 *    time from `git push` to every agent of the changed group ACKed, p50 / p95 over 20 one-file pushes,
 *    against a bare `git push` in the same run (the floor) and the GitOps anchors (Argo CD polls every 120 s,
 *    SPIRE's agents sync every 5 s); per push: files parsed, bytes pushed, agents touched.
 * 2. 10,000 resources (2,000 teams in 20 groups), 200 simulated agents (the real join, mTLS stream and update
 *    logic, in two processes): the reconciler's peak RSS, and the time of a one-file pass (median of 10)
 *    against the cold first pass of the same repository in the same run, and against the same one-file pass
 *    over 1,000 resources with the same agents and groups (how much of the pass grows with the repository).
 *
 * Targets (issue 11): p50 < 1 s; one file parsed and only the affected group touched; peak RSS < 400 MB;
 * a one-file pass < 300 ms.
 *
 * Credential backends are not reachable here (an empty secrets directory, Vault and STS on a closed loopback
 * port): bindings are FAILED and retried with backoff, so bytes pushed are program bytes only.
 */
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeLargeRepo } from '../fixtures/generators/large-repo.ts';
import { bundlePin } from '../reconciler/agents/serving-identity.ts';
import { JoinTokenStore } from '../reconciler/agents/tokens.ts';
import { openAuthority } from '../reconciler/identity/authority.ts';
import { createBareRepo, WorkClone } from '../test/support/git-fixtures.ts';
import { startGitServer } from '../test/support/git-server.ts';
import { fmt, median } from './lib/measure.ts';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = join(here, '..', 'bin', 'riptides-cli.mjs');
const HOOK_SECRET = randomBytes(32).toString('hex');
const CLOSED = 'http://127.0.0.1:9/';

type Log = Record<string, unknown>;

const percentile = (values: number[], p: number) => {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

/** A long-running riptides-cli process whose JSON log lines are kept and can be waited for. */
class Proc {
  readonly logs: Log[] = [];
  private waiters: Array<() => void> = [];
  readonly exited: Promise<void>;
  constructor(readonly child: ChildProcess) {
    let buf = '';
    const onData = (b: Buffer) => {
      buf += b.toString('utf8');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.startsWith('{'))
          try {
            this.logs.push(JSON.parse(line) as Log);
          } catch {
            // not a log line
          }
      }
      for (const w of this.waiters.splice(0)) w();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    this.exited = new Promise((r) => child.on('exit', () => r()));
  }
  static start(args: string[]): Proc {
    return new Proc(spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  }
  wait(pred: (l: Log) => boolean, ms = 120_000, what = 'log line'): Promise<Log> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      const check = () => {
        const hit = this.logs.find(pred);
        if (hit) {
          clearTimeout(timer);
          resolve(hit);
        } else this.waiters.push(check);
      };
      check();
    });
  }
  /** Peak resident set size (VmHWM), MB. */
  peakRssMB(): number {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.child.pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  }
  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    await this.exited;
  }
}

async function setup(label: string, teams: number, groups: number) {
  const dir = join(tmpdir(), `riptides-bench-loop-${label}-${randomBytes(4).toString('hex')}`);
  mkdirSync(dir, { recursive: true });
  const root = join(dir, 'srv');
  mkdirSync(root);
  await createBareRepo(root, 'policy');
  const server = await startGitServer({ root });
  const clone = await WorkClone.create(`${server.url}/policy.git`, join(dir, 'clone'));
  writeLargeRepo(join(clone.dir, 'policies'), { teams, groups });
  await clone.commit('generated');
  await clone.push();
  const hookFile = join(dir, 'hook');
  writeFileSync(hookFile, HOOK_SECRET, { mode: 0o600 });
  mkdirSync(join(dir, 'no-secrets'));
  const state = join(dir, 'state');
  const reconciler = Proc.start([
    'reconciler',
    '--repo',
    `${server.url}/policy.git`,
    '--path',
    'policies',
    '--listen',
    '127.0.0.1:0',
    '--state-dir',
    state,
    '--webhook-secret-file',
    hookFile,
    '--poll-interval',
    'off',
    // Every agent of the benchmark joins from 127.0.0.1: the per-address limit is for real fleets.
    '--join-rate',
    '200/400',
    '--apply-timeout',
    '60s',
    '--secrets-dir',
    join(dir, 'no-secrets'),
    '--sts-endpoint',
    CLOSED,
  ]);
  const serving = await reconciler.wait((l) => l.msg === 'serving agents', 120_000, 'serving agents');
  const first = await reconciler.wait((l) => l.msg === 'pass', 300_000, 'the first pass');
  const authority = await openAuthority(join(state, 'ca'));
  const tokens = new JoinTokenStore(join(state, 'tokens'));
  await tokens.init();
  const token = async (group: string) =>
    (
      await tokens.create({
        pin: bundlePin(authority),
        ttlSeconds: 3600,
        daemonGroup: group,
        daemonId: null,
      })
    ).token;
  /** Team `team`'s file with its identity's second selector changed (one identity of one group). */
  let round = 0;
  const oneFileCommit = async (team: number) => {
    const file = join(
      clone.dir,
      'policies',
      `region-${team % groups}`,
      `team-${String(team).padStart(5, '0')}.yaml`,
    );
    const text = readFileSync(file, 'utf8').replace(
      /process:cmdline: \/usr\/bin\/health-probe --team (\d+).*/,
      `process:cmdline: /usr/bin/health-probe --team $1 --round ${++round}`,
    );
    writeFileSync(file, text);
    return clone.commit(`team ${team}: round ${round}`);
  };
  const hook = async (after: string) => {
    const body = JSON.stringify({ ref: 'refs/heads/main', after, pushed_at: Date.now() });
    const sig = execFileSync('openssl', ['dgst', '-sha256', '-hmac', HOOK_SECRET], { input: body })
      .toString()
      .trim()
      .split('= ')[1];
    const res = await fetch(`${serving.api}/hooks/github`, {
      method: 'POST',
      body,
      headers: { 'x-github-event': 'push', 'x-hub-signature-256': `sha256=${sig}` },
    });
    if (res.status !== 202) throw new Error(`webhook answered ${res.status}`);
  };
  const passOf = (revision: string) =>
    reconciler.wait((l) => l.msg === 'pass' && l.revision === revision, 120_000, `pass of ${revision}`);
  return {
    dir,
    state,
    server,
    clone,
    reconciler,
    addr: String(serving.listen),
    first,
    token,
    oneFileCommit,
    hook,
    passOf,
    group: (team: number) => `riptides/daemongroup/region-${team % groups}/workers`,
    async close() {
      await reconciler.stop();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ── 1. 1,000 resources, 50 agent processes ──────────────────────────────────────────────────────────────

{
  const GROUPS = 10;
  const AGENTS = 50;
  const PUSHES = 20;
  const s = await setup('1k', 200, GROUPS);
  const agents: Array<{ proc: Proc; group: string }> = [];
  for (let i = 0; i < AGENTS; i++) {
    const group = `riptides/daemongroup/region-${i % GROUPS}/workers`;
    const dir = join(s.dir, `agent-${i}`);
    agents.push({
      group,
      proc: Proc.start([
        'agent',
        '--server',
        s.addr,
        '--join-token',
        await s.token(group),
        '--state-dir',
        dir,
      ]),
    });
    // A fleet comes up a few nodes at a time; this machine has two cores.
    if (i % 5 === 4)
      await Promise.all(agents.slice(-5).map((a) => a.proc.wait((l) => l.msg === 'program enforced (ACK)')));
  }
  await Promise.all(agents.map((a) => a.proc.wait((l) => l.msg === 'program enforced (ACK)')));
  await new Promise((r) => setTimeout(r, 2000));

  const times: number[] = [];
  const pushOnly: number[] = [];
  const passMs: number[] = [];
  const parsed: number[] = [];
  const touched: number[] = [];
  const bytes: number[] = [];
  const wrongGroup: string[] = [];
  for (let k = 0; k <= PUSHES; k++) {
    const team = (k * 7) % 200;
    const commit = await s.oneFileCommit(team);
    const acksBefore = agents.map(
      (a) => a.proc.logs.filter((l) => l.msg === 'program enforced (ACK)').length,
    );
    const start = performance.now();
    await s.clone.push();
    const pushed = performance.now();
    await s.hook(commit);
    const pass = await s.passOf(commit);
    const ms = performance.now() - start;
    if (pass.pending !== 0 || pass.acked !== pass.agentsToUpdate)
      throw new Error(`push ${k}: ${JSON.stringify(pass)}`);
    // Who acknowledged something: exactly the agents of the team's group.
    const acked = agents.filter(
      (a, i) => a.proc.logs.filter((l) => l.msg === 'program enforced (ACK)').length > acksBefore[i]!,
    );
    for (const a of acked) if (a.group !== s.group(team)) wrongGroup.push(a.group);
    if (k === 0) continue; // warm-up
    times.push(ms);
    pushOnly.push(pushed - start);
    passMs.push(Number(pass.durationMs));
    parsed.push(Number(pass.parsed));
    touched.push(acked.length);
    bytes.push(Number(pass.bytesPushed) / Math.max(1, acked.length));
  }
  const rss = s.reconciler.peakRssMB();
  await Promise.all(agents.map((a) => a.proc.stop()));
  await s.close();
  console.log(
    `1,000 resources (200 files), ${AGENTS} agent processes in ${GROUPS} groups, webhook-triggered, ${PUSHES} one-file pushes:`,
  );
  console.log(
    `  git push → every agent of the group ACKed: p50 ${fmt(median(times))} ms, p95 ${fmt(percentile(times, 95))} ms ` +
      `(target p50 < 1000 ms; baseline in this run: the bare git push alone p50 ${fmt(median(pushOnly))} ms; ` +
      `Argo CD's default poll 120 000 ms, SPIRE agents' sync 5 000 ms)`,
  );
  console.log(
    `  the pass itself (fetch → ACKs): p50 ${fmt(median(passMs))} ms; files parsed per push: ${[...new Set(parsed)].join(', ')}; ` +
      `agents touched: ${[...new Set(touched)].join(', ')} of ${AGENTS} (${AGENTS / GROUPS} per group), ` +
      `${wrongGroup.length} outside the changed group; bytes pushed per touched agent: p50 ${fmt(median(bytes))}; ` +
      `reconciler peak RSS ${fmt(rss)} MB`,
  );
}

// ── 2. 10,000 resources, 200 simulated agents; the same at 1,000 resources ─────────────────────────────

/**
 * The one-file passes of a repository of `teams` teams (5 resources each) followed by 200 simulated agents in
 * 20 groups: every pass's log line, the cold first pass's, and the reconciler's peak RSS.
 */
async function onePassRuns(label: string, teams: number) {
  const GROUPS = 20;
  const AGENTS = 200;
  const PASSES = 10;
  const s = await setup(label, teams, GROUPS);
  const sims = Array.from({ length: 2 }, () =>
    fork(join(here, 'lib', 'agents-sim.ts'), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  await Promise.all(sims.map((c) => new Promise((r) => c.once('message', r))));
  const tokens: string[] = [];
  for (let i = 0; i < AGENTS; i++)
    tokens.push(await s.token(`riptides/daemongroup/region-${i % GROUPS}/workers`));
  await Promise.all(
    sims.map(
      (c, i) =>
        new Promise((resolve) => {
          c.once('message', resolve);
          c.send({ cmd: 'join', addr: s.addr, tokens: tokens.filter((_, k) => k % 2 === i) });
        }),
    ),
  );
  await new Promise((r) => setTimeout(r, 3000));
  const passes: Log[] = [];
  for (let k = 0; k <= PASSES; k++) {
    const commit = await s.oneFileCommit((k * 13) % teams);
    await s.clone.push();
    await s.hook(commit);
    const pass = await s.passOf(commit);
    if (pass.pending !== 0 || pass.acked !== pass.agentsToUpdate) throw new Error(JSON.stringify(pass));
    if (k > 0) passes.push(pass);
  }
  const rss = s.reconciler.peakRssMB();
  for (const c of sims) c.send({ cmd: 'stop' });
  await s.close();
  return { passes, first: s.first, rss, agents: AGENTS, groups: GROUPS };
}

{
  // The same agents and groups over a tenth of the resources, first: what a one-file pass costs that does not
  // depend on the repository's size, so that the 10,000-resource pass can be read in proportion.
  const small = await onePassRuns('1k-sim', 200);
  const { passes, first, rss, agents, groups } = await onePassRuns('10k', 2000);
  const t = (l: Log, step: string) => Number((l.timings as Record<string, number>)[step] ?? 0);
  const ms = passes.map((p) => Number(p.durationMs));
  const mid = passes[passes.map((p) => Number(p.durationMs)).indexOf(median(ms))]!;
  const smallMs = median(small.passes.map((p) => Number(p.durationMs)));
  const smallMid = small.passes[small.passes.map((p) => Number(p.durationMs)).indexOf(smallMs)]!;
  const steps = (l: Log) =>
    ['fetch', 'render', 'apply', 'collect', 'status'].map((k) => `${k} ${t(l, k)}`).join(', ');
  console.log(`10,000 resources (2,000 files), ${agents} simulated agents in ${groups} groups:`);
  console.log(
    `  one-file pass: median ${fmt(median(ms))} ms (target < 300 ms; fetch ${t(mid, 'fetch')}, render ${t(mid, 'render')}, ` +
      `apply ${t(mid, 'apply')}, collect ${t(mid, 'collect')}, status ${t(mid, 'status')} ms), parsing ${[...new Set(passes.map((p) => p.parsed))].join(', ')} file(s), ` +
      `touching ${[...new Set(passes.map((p) => p.agentsToUpdate))].join(', ')} agent(s); ` +
      `baseline in this run: the cold first pass ${first.durationMs} ms (render ${t(first, 'render')} ms, parsing ${first.parsed} files)`,
  );
  console.log(
    `  in proportion: the same one-file pass over 1,000 resources (200 files, the same agents and groups) ${fmt(smallMs)} ms: ` +
      `${fmt(median(ms) / smallMs, 2)}× for 10× the resources (${steps(smallMid)} ms)`,
  );
  console.log(`  reconciler peak RSS: ${fmt(rss)} MB (target < 400 MB)`);
}
process.exit(0);
