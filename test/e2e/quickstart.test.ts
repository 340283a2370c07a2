/**
 * The quickstart end to end, as policies/quickstart/README.md tells a newcomer to run it: the real
 * `riptides-cli reconciler` on policies/quickstart with the echo token in a Secret manifest outside git
 * (`--secrets-dir`), the real `riptides-cli agent` with its data plane (proxy, inbound fronting of the
 * orders API, transparent listener with the nftables redirect it installs), the README's echo server, and real
 * curl started under the names the selectors want (symlinks named orders-client and orders-api, so the
 * kernel's comm is theirs). Everything runs in a network namespace this test creates, so the quickstart's
 * fixed ports (18080, 18443, 15001, 15002) are free whatever else runs on the machine. Needs root (netns,
 * nftables, setpriv), as CI runs it.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allOutput, type CliProcess, eventually, runCli, startCli } from '../support/cli-process.ts';
import { parsePrometheus } from '../support/prometheus.ts';
import { repoRoot } from '../support/shared.ts';

const NS = `rt-qs-${randomBytes(3).toString('hex')}`;
const GROUP = 'riptides/daemongroup/local/quickstart';
const CLIENT_ID = 'spiffe://example.com/quickstart/app/orders-client';
const API_ID = 'spiffe://example.com/quickstart/app/orders-api';
const BINDING = 'quickstart-orders-client-echo';
const TOKEN = `qs-${randomBytes(16).toString('hex')}`;
const PROXY = 'http://127.0.0.1:15001';

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

describe('policies/quickstart end to end: reconciler + agent with its data plane, real curl', () => {
  let dir = '';
  let bin = '';
  let reconciler: CliProcess;
  let agent: CliProcess;
  let controlRoot = '';
  let metricsToken = '';
  const demos: ChildProcess[] = [];
  let echo: ReturnType<typeof demo>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'riptides-quickstart-'));
    // `nobody` runs the transparent-mode clients: it must reach the binaries and the CA bundle copy.
    chmodSync(dir, 0o755);
    bin = join(dir, 'bin');
    mkdirSync(bin, { mode: 0o755 });
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);

    // The README's steps: the echo token as a Secret manifest outside git, the echo server's certificate,
    // and the two workloads' executables under the names the selectors match.
    const secrets = join(dir, 'secrets');
    mkdirSync(secrets);
    writeFileSync(
      join(secrets, 'quickstart-echo-token.yaml'),
      `apiVersion: v1\nkind: Secret\nmetadata: { name: quickstart-echo-token, namespace: riptides-system }\nstringData: { token: ${TOKEN} }\n`,
    );
    execFileSync(
      'openssl',
      [
        ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'],
        ...['-subj', '/CN=quickstart-echo', '-addext', 'subjectAltName=IP:127.0.0.1'],
        ...['-keyout', join(dir, 'echo.key'), '-out', join(dir, 'echo.crt')],
      ],
      { stdio: 'pipe' },
    );
    symlinkSync(execFileSync('which', ['curl']).toString().trim(), join(bin, 'orders-client'));
    symlinkSync(process.execPath, join(bin, 'orders-api'));

    const state = join(dir, 'reconciler');
    reconciler = startCli(
      [
        ...['reconciler', '--repo', repoRoot, '--path', 'policies/quickstart', '--listen', '127.0.0.1:9443'],
        ...['--state-dir', state, '--secrets-dir', secrets],
      ],
      {},
      { wrap: inNs([]), keep: true },
    );
    await reconciler.waitForLog((l) => l.msg === 'serving agents', 60_000, 'the reconciler serving agents');
    const token = runCli(['token', 'create', '--state-dir', state, '--daemon-group', GROUP]);
    expect(token.status).toBe(0);
    agent = startCli(
      [
        ...['agent', '--server', '127.0.0.1:9443', '--join-token', token.stdout.trim()],
        ...['--state-dir', join(dir, 'agent'), '--proxy-listen', '127.0.0.1:15001'],
        ...['--upstream-ca', join(dir, 'echo.crt')],
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

    echo = demo(
      [
        ...[
          process.execPath,
          join(repoRoot, 'policies/quickstart/echo-server.mjs'),
          '--listen',
          '127.0.0.1:18443',
        ],
        ...[
          '--cert',
          join(dir, 'echo.crt'),
          '--key',
          join(dir, 'echo.key'),
          '--expect-bearer-env',
          'ECHO_TOKEN',
        ],
      ],
      { ECHO_TOKEN: TOKEN },
    );
    const api = demo([
      join(bin, 'orders-api'),
      join(repoRoot, 'policies/quickstart/echo-server.mjs'),
      ...['--listen', '127.0.0.1:18081'],
    ]);
    demos.push(echo.child, api.child);
    await eventually(
      () => echo.lines.some((l) => l.listening) && api.lines.some((l) => l.listening),
      20_000,
      'the demo servers',
    );
    // orders-api is attested by its name and gets its SVID: the inbound listener can serve MUTUAL.
    await agent.waitForLog(
      (l) => l.msg === 'SVID installed' && l.spiffeId === API_ID,
      30_000,
      'the orders-api SVID',
    );
  }, 120_000);

  afterAll(async () => {
    for (const c of demos) await stop(c);
    await agent?.stop('SIGKILL');
    await reconciler?.stop('SIGKILL');
    try {
      execFileSync('ip', ['netns', 'del', NS]);
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
    // Every line any process of this file wrote, and every curl output: never the token.
    for (const out of allOutput) expect(out).not.toContain(TOKEN);
  });

  const metrics = async () => {
    const r = await nsRun([
      'curl',
      '-sS',
      '-H',
      `Authorization: Bearer ${metricsToken}`,
      'http://127.0.0.1:15090/metrics',
    ]);
    expect(r.code).toBe(0);
    return parsePrometheus(r.stdout);
  };
  const sample = (
    families: Record<
      string,
      { samples: Array<{ name: string; labels: Record<string, string>; value: number }> }
    >,
    name: string,
    labels: Record<string, string>,
  ) =>
    families[name.replace(/_total$/, '')]?.samples.find(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    )?.value ?? 0;

  it('mTLS: orders-client reaches the orders API through the proxy; another process is refused', async () => {
    const before = await metrics();
    const ok = await nsRun([
      join(bin, 'orders-client'),
      ...['-sS', '--max-time', '10', '--proxy', PROXY, 'http://127.0.0.1:18080/orders'],
    ]);
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

    const after = await metrics();
    const delta = (name: string, labels: Record<string, string>) =>
      sample(after, name, labels) - sample(before, name, labels);
    expect(delta('riptides_dataplane_connections_total', { direction: 'inbound', mode: 'mtls' })).toBe(1);
    expect(
      delta('riptides_dataplane_handshakes_failed_total', { direction: 'inbound', reason: 'protocol' }),
    ).toBe(2);
    // The agent's log names who talked to whom: the peer's SPIFFE ID was the client's.
    expect(agent.logs().some((l) => l.msg === 'SVID installed' && l.spiffeId === CLIENT_ID)).toBe(true);
  });

  it('credential injection: the echo server sees the token the client never had; curl under another name does not', async () => {
    const ok = await nsRun([
      join(bin, 'orders-client'),
      ...[
        '-sS',
        '--max-time',
        '10',
        '--proxy',
        PROXY,
        '--cacert',
        join(controlRoot, 'certs/ca-certificates.crt'),
      ],
      'https://127.0.0.1:18443/v1/echo',
    ]);
    expect(ok.stderr).toBe('');
    const body = JSON.parse(ok.stdout);
    // The upstream compared the header with the token it expects: it arrived, exactly.
    expect(body).toMatchObject({ server: 'echo', path: '/v1/echo', bearer: 'matches' });
    expect(body.headers.authorization).toMatch(/^Bearer \(redacted, \d+ characters\)$/);
    expect(echo.lines.at(-1)).toMatchObject({ path: '/v1/echo', bearer: 'matches' });

    // A process named curl, trusting the echo server itself: its TLS passes through, no token is added.
    const other = await nsRun([
      'curl',
      ...['-sS', '--max-time', '10', '--proxy', PROXY, '--cacert', join(dir, 'echo.crt')],
      ...['-o', '/dev/null', '-w', '%{http_code}', 'https://127.0.0.1:18443/v1/echo'],
    ]);
    expect(other.stdout).toBe('401');
    expect(echo.lines.at(-1)).toMatchObject({ path: '/v1/echo', bearer: 'absent' });

    const m = await metrics();
    expect(sample(m, 'riptides_dataplane_credentials_injected_total', { binding: BINDING })).toBeGreaterThan(
      0,
    );
  });

  it('transparent mode: the redirect the agent installed intercepts unmodified clients run as another user', async () => {
    const rules = await nsRun(['nft', 'list', 'table', 'inet', 'riptides']);
    expect(rules.stdout).toMatch(/ip daddr 127\.0\.0\.1 tcp dport 18080 redirect to :15002/);
    expect(rules.stdout).toMatch(/ip daddr 127\.0\.0\.1 tcp dport 18443 redirect to :15002/);
    expect(rules.stdout).toMatch(/meta skuid 0 return/);
    // nobody can read a copy of what applications trust (the agent's state directory is the agent's).
    const bundle = join(dir, 'ca-certificates.crt');
    copyFileSync(join(controlRoot, 'certs/ca-certificates.crt'), bundle);
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

  it('stops cleanly on SIGTERM: listeners closed, the redirect deleted, the connections table empty', async () => {
    expect(await agent.stop('SIGTERM')).toBe(0);
    expect(readFileSync(join(controlRoot, 'connections'), 'utf8')).toBe('');
    const tables = await nsRun(['nft', 'list', 'tables']);
    expect(tables.stdout).not.toContain('riptides');
    const proxy = await nsRun(['curl', '-sS', '--max-time', '5', PROXY]);
    expect(proxy.stderr).toMatch(/Failed to connect|Connection refused/);
  });
});
