/**
 * The quickstart end to end, as policies/quickstart/README.md walks a newcomer through it, in one network
 * namespace this test creates (so the quickstart's fixed ports, 15001, 15002, 18080, 18081, 18443, 9443, are
 * free whatever else runs on the machine). Needs root (netns, nftables, setpriv), as CI runs it.
 *
 * 1. `npm start`: `riptides-cli up` with no --repo (the embedded default: this checkout's policies/quickstart
 *    and the data plane it needs: the proxy on 15001, the inbound mapping 18080 -> 18081, the echo server's
 *    certificate made in the state directory), plus the README's transparent-mode flags (`--transparent
 *    127.0.0.1:15002 --nftables`). The echo token goes into STATE/secrets after it started; the README's demo
 *    servers (the echo server with the certificate up made, the orders API) and real curl, started under the
 *    names the selectors want (symlinks named orders-client and orders-api, so the kernel's comm is theirs).
 *    mTLS and injection through up's proxy, transparent mode as another user, a clean stop (Ctrl-C).
 * 2. The same as two processes (`riptides-cli reconciler` + `riptides-cli agent` with the data plane flags), as
 *    on separate hosts, against the same demo servers, secrets directory and echo certificate.
 *
 * The token never appears in anything a process of this file wrote, in up's log, or in up's state directory
 * outside the secrets directory it was put in.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { allOutput, type CliProcess, eventually, runCli, startCli } from '../support/cli-process.ts';
import { type Family, parsePrometheus } from '../support/prometheus.ts';
import { repoRoot } from '../support/shared.ts';

const NS = `rt-qs-${randomBytes(3).toString('hex')}`;
const GROUP = 'riptides/daemongroup/local/quickstart';
const CLIENT_ID = 'spiffe://example.com/quickstart/app/orders-client';
const API_ID = 'spiffe://example.com/quickstart/app/orders-api';
const BINDING = 'quickstart-orders-client-echo';
const TOKEN = `qs-${randomBytes(16).toString('hex')}`;
const PROXY = 'http://127.0.0.1:15001';
const ECHO_SERVER = join(repoRoot, 'policies/quickstart/echo-server.mjs');

const inNs = (cmd: string[]) => ['ip', 'netns', 'exec', NS, ...cmd];

/** A command in the namespace: its exit code and output (never throws on a non-zero exit). */
function nsRun(cmd: string[], opts: { env?: NodeJS.ProcessEnv } = {}) {
  const [file, ...args] = inNs(cmd);
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(file!, args, {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      allOutput.push(stdout + stderr);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A long-running demo process in the namespace, its stdout kept as JSON lines. */
function demo(cmd: string[], env: NodeJS.ProcessEnv = {}) {
  const [file, ...args] = inNs(cmd);
  const child = spawn(file!, args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: Array<Record<string, unknown>> = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    allOutput.push(l);
    lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  return { child, lines };
}

function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Every regular file under `dir`, but `skip`. */
function filesUnder(dir: string, skip: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .filter((f) => !f.startsWith(`${skip}/`));
}

type Families = Record<string, Family>;
const sample = (families: Families, name: string, labels: Record<string, string>) =>
  families[name.replace(/_total$/, '')]?.samples.find(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  )?.value ?? 0;

/** GET /metrics in the namespace with a bearer credential, parsed by an independent parser. */
async function scrape(url: string, credential: string): Promise<Families> {
  const r = await nsRun(['curl', '-sS', '-H', `Authorization: Bearer ${credential}`, url]);
  expect(r.code).toBe(0);
  return parsePrometheus(r.stdout);
}

/** The README's two calls by orders-client through a proxy: mTLS to the orders API, the echo with injection. */
const ordersCall = () =>
  nsRun([
    join(bin, 'orders-client'),
    ...['-sS', '--max-time', '10', '--proxy', PROXY, 'http://127.0.0.1:18080/orders'],
  ]);
const echoCall = (caBundle: string) =>
  nsRun([
    join(bin, 'orders-client'),
    ...['-sS', '--max-time', '10', '--proxy', PROXY, '--cacert', caBundle, 'https://127.0.0.1:18443/v1/echo'],
  ]);

let dir = '';
let bin = '';
let state = '';
const demos: ChildProcess[] = [];
let echo: ReturnType<typeof demo>;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'riptides-quickstart-'));
  // `nobody` runs the transparent-mode clients: it must reach the binaries and the CA bundle copy.
  chmodSync(dir, 0o755);
  bin = join(dir, 'bin');
  mkdirSync(bin, { mode: 0o755 });
  state = join(dir, 'state');
  execFileSync('ip', ['netns', 'add', NS]);
  execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  // The workloads' executables, under the names the selectors match.
  symlinkSync(execFileSync('which', ['curl']).toString().trim(), join(bin, 'orders-client'));
  symlinkSync(process.execPath, join(bin, 'orders-api'));
});

afterAll(async () => {
  for (const c of demos) await stop(c);
  try {
    execFileSync('ip', ['netns', 'del', NS]);
  } catch {
    // already gone
  }
  // Every line any process of this file wrote, and every curl output: never the token. Nor anything up
  // keeps (its log, store, reports, control interface), but the Secret manifest it was given.
  for (const out of allOutput) expect(out).not.toContain(TOKEN);
  const kept = existsSync(state) ? filesUnder(state, join(state, 'secrets')) : [];
  expect(kept).toContain(join(state, 'up.log'));
  for (const f of kept) expect(readFileSync(f).includes(TOKEN), f).toBe(false);
  rmSync(dir, { recursive: true, force: true });
});

describe('npm start, stopped with SIGTERM sent to npm', () => {
  it('stops riptides-cli up with it: nothing keeps running or listening', async () => {
    const npmState = join(dir, 'npm-state');
    const [file, ...args] = inNs(['npm', 'start', '--', '--state-dir', npmState]);
    const child = spawn(file!, args, {
      cwd: repoRoot,
      env: { ...process.env, XDG_CACHE_HOME: join(dir, 'cache-npm') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const entry = allOutput.push('') - 1;
    for (const s of [child.stdout, child.stderr])
      s.on('data', (b: Buffer) => {
        out += b.toString();
        allOutput[entry] = out;
      });
    const running = () => {
      try {
        return execFileSync('pgrep', ['-f', `riptides-cli.mjs up --state-dir ${npmState}`]).length > 0;
      } catch {
        return false;
      }
    };
    onTestFinished(() => {
      if (running()) execFileSync('pkill', ['-KILL', '-f', npmState]);
    });
    await eventually(() => /^ {2}logs +/m.test(out), 60_000, 'up printing its addresses');
    expect(running()).toBe(true);
    // What a service manager or `kill` does: the signal goes to npm's process only, not to its group.
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
    await eventually(() => !running(), 20_000, 'riptides-cli up stopped');
    const proxy = await nsRun(['curl', '-sS', '--max-time', '5', PROXY]);
    expect(proxy.stderr).toMatch(/Failed to connect|Connection refused/);
  }, 90_000);
});

describe('npm start with a port of the quickstart taken', () => {
  it('exits 2 naming the flag that moves it, and leaves nothing listening', async () => {
    // Something else holds the orders API's address, 127.0.0.1:18080.
    const squatter = demo([process.execPath, ECHO_SERVER, '--listen', '127.0.0.1:18080', '--name', 'other']);
    demos.push(squatter.child);
    onTestFinished(() => stop(squatter.child));
    await eventually(() => squatter.lines.some((l) => l.listening), 20_000, 'the squatter');
    const up = startCli(
      ['up'],
      { RIPTIDES_STATE_DIR: state, XDG_CACHE_HOME: join(dir, 'cache') },
      { wrap: inNs([]) },
    );
    expect(await up.exited).toBe(2);
    expect(up.output()).toMatch(
      /^riptides-cli up: the data plane cannot listen on 127\.0\.0\.1:18080: address already in use \(the quickstart's default --inbound, .*pass --inbound identity=…,listen=HOST:PORT,forward=HOST:PORT/m,
    );
    // One line, no stack trace; nothing came up.
    expect(up.output()).not.toMatch(/riptides is up|^\s+at |Error:/m);
    // The proxy it had bound first is closed again; the squatter still answers.
    const proxy = await nsRun(['curl', '-sS', '--max-time', '5', PROXY]);
    expect(proxy.stderr).toMatch(/Failed to connect|Connection refused/);
    expect(JSON.parse((await nsRun(['curl', '-sS', 'http://127.0.0.1:18080/'])).stdout)).toMatchObject({
      server: 'other',
    });
  }, 60_000);
});

describe('npm start (riptides-cli up on its embedded default) with the data plane, real curl', () => {
  let up: CliProcess;
  let api = '';
  let metricsCredential = '';
  const upLog = () =>
    readFileSync(join(state, 'up.log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const metrics = () => scrape(`${api}/metrics`, metricsCredential);

  beforeAll(async () => {
    // `npm start -- --transparent 127.0.0.1:15002 --nftables`: the README's transparent mode on top of the
    // defaults (the proxy and the inbound mapping are still the quickstart's: no flag of theirs is given).
    up = startCli(
      ['up', '--transparent', '127.0.0.1:15002', '--nftables'],
      { RIPTIDES_STATE_DIR: state, XDG_CACHE_HOME: join(dir, 'cache') },
      { wrap: inNs([]), keep: true },
    );
    await eventually(() => /^ {2}logs +/m.test(up.output()), 60_000, 'up printing its addresses');
    api = /^ {2}API +(http:\/\/\S+)/m.exec(up.output())![1]!;
    metricsCredential = readFileSync(join(state, 'api', 'metrics.token'), 'utf8').trim();

    // The walkthrough: the echo token in a Secret manifest in STATE/secrets (watched), then the demo servers,
    // the echo server with the certificate up made for it.
    writeFileSync(
      join(state, 'secrets', 'quickstart-echo-token.yaml'),
      `apiVersion: v1\nkind: Secret\nmetadata: { name: quickstart-echo-token, namespace: riptides-system }\nstringData: { token: ${TOKEN} }\n`,
    );
    echo = demo(
      [
        ...[process.execPath, ECHO_SERVER, '--listen', '127.0.0.1:18443'],
        ...['--cert', join(state, 'quickstart/echo.crt'), '--key', join(state, 'quickstart/echo.key')],
        ...['--expect-bearer-env', 'ECHO_TOKEN'],
      ],
      { ECHO_TOKEN: TOKEN },
    );
    const ordersApi = demo([join(bin, 'orders-api'), ECHO_SERVER, '--listen', '127.0.0.1:18081']);
    demos.push(echo.child, ordersApi.child);
    await eventually(
      () => echo.lines.some((l) => l.listening) && ordersApi.lines.some((l) => l.listening),
      20_000,
      'the demo servers',
    );
    // The status line says the token arrived; orders-api is attested by its name and has its SVID.
    await eventually(() => up.output().includes('credentials 1 AVAILABLE'), 30_000, 'the echo token');
    await eventually(
      () => upLog().some((l) => l.msg === 'SVID installed' && l.spiffeId === API_ID),
      30_000,
      'the orders-api SVID',
    );
  }, 120_000);

  it('prints the data plane: the quickstart defaults, the transparent listener, the certificate it made', () => {
    const text = up.output();
    const field = (name: string) => new RegExp(`^ {2}${name} +(.+)$`, 'm').exec(text)?.[1];
    expect(field('policy')?.startsWith(repoRoot)).toBe(true);
    expect(field('policy')).toMatch(/, path policies\/quickstart$/);
    expect(field('proxy')).toBe("127.0.0.1:15001  (for workloads' HTTPS_PROXY / http_proxy)");
    expect(field('inbound')).toBe(`127.0.0.1:18080 -> 127.0.0.1:18081  (${API_ID})`);
    expect(field('transparent')).toBe('127.0.0.1:15002  (nftables redirect installed)');
    expect(field('CA bundle')).toBe(
      `${join(state, 'agent/control/certs/ca-certificates.crt')}  (what workloads trust for intercepted TLS)`,
    );
    expect(field('upstream CA')).toBe(
      `${join(state, 'quickstart/echo.crt')}  (the quickstart echo server's certificate; its key: ${join(state, 'quickstart/echo.key')})`,
    );
    expect(text).toMatch(/agent in sync · data plane 3 listeners(, \d+ connections? \(\d+ open\))? ·/);
  });

  it('mTLS: orders-client reaches the orders API through the default proxy; another process is refused', async () => {
    const before = await metrics();
    const ok = await ordersCall();
    expect(ok.stderr).toBe('');
    expect(JSON.parse(ok.stdout)).toMatchObject({ server: 'orders-api', method: 'GET', path: '/orders' });
    // The same call from a process named curl: no identity, so plaintext reaches the MUTUAL front and is refused.
    const viaProxy = await nsRun([
      'curl',
      ...['-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', '--proxy', PROXY],
      'http://127.0.0.1:18080/orders',
    ]);
    expect(viaProxy.stdout).toBe('502');
    const direct = await nsRun(['curl', '-sS', '--max-time', '10', 'http://127.0.0.1:18080/orders']);
    expect(direct.code).not.toBe(0);
    expect(direct.stdout).toBe('');

    // up's own /metrics carries its data plane's counters: one mTLS connection admitted, two refused.
    const after = await metrics();
    const delta = (name: string, labels: Record<string, string>) =>
      sample(after, name, labels) - sample(before, name, labels);
    expect(delta('riptides_dataplane_connections_total', { direction: 'inbound', mode: 'mtls' })).toBe(1);
    expect(
      delta('riptides_dataplane_handshakes_failed_total', { direction: 'inbound', reason: 'protocol' }),
    ).toBe(2);
    expect(upLog().some((l) => l.msg === 'SVID installed' && l.spiffeId === CLIENT_ID)).toBe(true);
  });

  it('injection: the echo server, with the certificate up made, sees the token the client never had', async () => {
    const ok = await echoCall(join(state, 'agent/control/certs/ca-certificates.crt'));
    expect(ok.stderr).toBe('');
    const body = JSON.parse(ok.stdout);
    // The upstream compared the header with the token it expects: it arrived, exactly.
    expect(body).toMatchObject({ server: 'echo', path: '/v1/echo', bearer: 'matches' });
    expect(body.headers.authorization).toMatch(/^Bearer \(redacted, \d+ characters\)$/);

    // A process named curl, trusting the echo server's certificate itself: passed through, nothing added.
    const other = await nsRun([
      'curl',
      ...['-sS', '--max-time', '10', '--proxy', PROXY, '--cacert', join(state, 'quickstart/echo.crt')],
      ...['-o', '/dev/null', '-w', '%{http_code}', 'https://127.0.0.1:18443/v1/echo'],
    ]);
    expect(other.stdout).toBe('401');
    expect(echo.lines.at(-1)).toMatchObject({ path: '/v1/echo', bearer: 'absent' });
    expect(
      sample(await metrics(), 'riptides_dataplane_credentials_injected_total', { binding: BINDING }),
    ).toBe(1);
  });

  it('transparent mode: the redirect up installed intercepts unmodified clients run as another user', async () => {
    const rules = await nsRun(['nft', 'list', 'table', 'inet', 'riptides']);
    expect(rules.stdout).toMatch(/ip daddr 127\.0\.0\.1 tcp dport 18080 redirect to :15002/);
    expect(rules.stdout).toMatch(/ip daddr 127\.0\.0\.1 tcp dport 18443 redirect to :15002/);
    expect(rules.stdout).toMatch(/meta skuid 0 return/);
    // nobody can read a copy of what applications trust (the state directory is up's).
    const bundle = join(dir, 'ca-certificates.crt');
    copyFileSync(join(state, 'agent/control/certs/ca-certificates.crt'), bundle);
    chmodSync(bundle, 0o644);
    const asNobody = (cmd: string[]) =>
      nsRun(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...cmd]);
    const mtls = await asNobody([
      join(bin, 'orders-client'),
      '-sS',
      '--max-time',
      '10',
      'http://127.0.0.1:18080/t',
    ]);
    expect(mtls.stderr).toBe('');
    expect(JSON.parse(mtls.stdout)).toMatchObject({ server: 'orders-api', path: '/t' });
    const injected = await asNobody([
      join(bin, 'orders-client'),
      ...['-sS', '--max-time', '10', '--cacert', bundle, 'https://127.0.0.1:18443/t'],
    ]);
    expect(JSON.parse(injected.stdout)).toMatchObject({ server: 'echo', bearer: 'matches' });
    const refused = await asNobody(['curl', '-sS', '--max-time', '10', 'http://127.0.0.1:18080/t']);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout).toBe('');
  });

  it('Ctrl-C stops it all: listeners closed, the redirect deleted, the connections table empty', async () => {
    expect(await up.stop('SIGINT')).toBe(0);
    expect(up.output()).toMatch(/stopped\n$/);
    expect(readFileSync(join(state, 'agent/control/connections'), 'utf8')).toBe('');
    const tables = await nsRun(['nft', 'list', 'tables']);
    expect(tables.stdout).not.toContain('riptides');
    for (const at of ['127.0.0.1:15001', '127.0.0.1:15002', '127.0.0.1:18080']) {
      const r = await nsRun(['curl', '-sS', '--max-time', '5', `http://${at}/`]);
      expect(r.stderr, at).toMatch(/Failed to connect|Connection refused/);
    }
    expect(upLog().some((l) => l.msg === 'data plane listening')).toBe(true);
  });
});

describe('the same as two processes: reconciler + agent with its data plane flags', () => {
  let reconciler: CliProcess;
  let agent: CliProcess;
  let controlRoot = '';
  let metricsToken = '';

  beforeAll(async () => {
    // npm start is stopped; the demo servers run on, and the secrets directory and the echo certificate it
    // made are reused, as the README's section does.
    const rstate = join(dir, 'reconciler');
    reconciler = startCli(
      [
        ...['reconciler', '--repo', repoRoot, '--path', 'policies/quickstart', '--listen', '127.0.0.1:9443'],
        ...['--state-dir', rstate, '--secrets-dir', join(state, 'secrets')],
      ],
      {},
      { wrap: inNs([]), keep: true },
    );
    await reconciler.waitForLog((l) => l.msg === 'serving agents', 60_000, 'the reconciler serving agents');
    const token = runCli(['token', 'create', '--state-dir', rstate, '--daemon-group', GROUP]);
    expect(token.status).toBe(0);
    agent = startCli(
      [
        ...['agent', '--server', '127.0.0.1:9443', '--join-token', token.stdout.trim()],
        ...['--state-dir', join(dir, 'agent'), '--proxy-listen', '127.0.0.1:15001'],
        ...['--upstream-ca', join(state, 'quickstart/echo.crt')],
        '--inbound',
        `identity=quickstart/app/orders-api,listen=127.0.0.1:18080,forward=127.0.0.1:18081`,
        ...['--transparent', '127.0.0.1:15002', '--nftables', '--metrics-listen', '127.0.0.1:15090'],
      ],
      {},
      { wrap: inNs([]), keep: true },
    );
    const running = await agent.waitForLog((l) => l.msg === 'agent running', 60_000, 'the agent running');
    controlRoot = String(running.controlRoot);
    metricsToken = readFileSync(String(running.metricsCredential), 'utf8').trim();
    await agent.waitForLog((l) => l.msg === 'program enforced (ACK)', 30_000, 'the program ACKed');
    // orders-api (running since the first part) is attested and gets its SVID from this agent.
    await agent.waitForLog(
      (l) => l.msg === 'SVID installed' && l.spiffeId === API_ID,
      30_000,
      'the orders-api SVID',
    );
  }, 120_000);

  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await reconciler?.stop('SIGKILL');
  });

  it('mTLS and injection through the agent proxy, counted at its metrics endpoint', async () => {
    const orders = await ordersCall();
    expect(orders.stderr).toBe('');
    expect(JSON.parse(orders.stdout)).toMatchObject({ server: 'orders-api', path: '/orders' });
    const echoed = await echoCall(join(controlRoot, 'certs/ca-certificates.crt'));
    expect(echoed.stderr).toBe('');
    expect(JSON.parse(echoed.stdout)).toMatchObject({ server: 'echo', bearer: 'matches' });
    const m = await scrape('http://127.0.0.1:15090/metrics', metricsToken);
    expect(sample(m, 'riptides_dataplane_connections_total', { direction: 'inbound', mode: 'mtls' })).toBe(1);
    expect(sample(m, 'riptides_dataplane_credentials_injected_total', { binding: BINDING })).toBe(1);
    const rules = await nsRun(['nft', 'list', 'table', 'inet', 'riptides']);
    expect(rules.stdout).toMatch(/ip daddr 127\.0\.0\.1 tcp dport 18443 redirect to :15002/);
  });

  it('stops cleanly on SIGTERM: listeners closed, the redirect deleted, the connections table empty', async () => {
    expect(await agent.stop('SIGTERM')).toBe(0);
    expect(readFileSync(join(controlRoot, 'connections'), 'utf8')).toBe('');
    const tables = await nsRun(['nft', 'list', 'tables']);
    expect(tables.stdout).not.toContain('riptides');
    const proxy = await nsRun(['curl', '-sS', '--max-time', '5', PROXY]);
    expect(proxy.stderr).toMatch(/Failed to connect|Connection refused/);
  });
});
