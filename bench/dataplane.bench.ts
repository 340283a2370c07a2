/**
 * Data plane benchmark (`npm run bench -- dataplane`), in one run on the same machine:
 *
 *   mTLS pair      wrk → client data plane → mTLS 1.3 → server data plane → upstream
 *                  vs  wrk → HAProxy (tcp, ssl crt + verify) → HAProxy (ssl verify required) → upstream
 *                  vs  wrk → upstream (direct)
 *   intercept      wrk (TLS) → data plane (minted cert, Bearer injected, TLS to upstream verified) → upstream
 *                  vs  wrk (TLS) → HAProxy (http mode, ssl, set-header Authorization, ssl verify) → upstream
 *                  vs  wrk (TLS) → upstream (direct)
 *   node:tls floor the same TLS legs in node:tls with nothing else (a bare mTLS pair; a TLS-in, TLS-out byte
 *                  relay with no HTTP parsing): what one node thread costs before any data plane work
 *
 * Each over keep-alive (32 connections: requests/s; 1 connection: p50/p99 latency without queueing) and with
 * a new connection per request, in three rounds that take turns between the paths (medians reported, so a drift
 * of the shared machine lands on every path alike); then memory per idle connection (1,000 idle connections held through the
 * mTLS pair, RSS growth of each data plane process vs each HAProxy process), and SigV4 signing throughput of
 * @smithy/signature-v4 against a bare HMAC chain. The upstream is an HAProxy that answers every request itself.
 * Every data plane and every HAProxy runs in its own process with one thread. Needs `wrk` and `haproxy` from
 * Debian (`apt-get install wrk haproxy`). Prints figures and the issue's targets; it never fails on a target.
 *
 * The data plane pair carries application connections as streams of pooled mTLS sessions (kernel-module/README.md
 * "Pooled sessions"): the warm-up opens those sessions, so "new connection per request" measures a stream open
 * per connection, not a handshake. That is fair: a live pool is the product's steady state (a session lives
 * while it is used and 30 s idle). HAProxy keeps its configuration, an mTLS handshake per connection (resumed),
 * as does the node:tls pair, which is therefore no floor for the data plane on new connections; the 1,000 idle
 * connections of the memory figure are streams of about ten sessions (100 streams each).
 */
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resignRequest } from '../kernel-module/dataplane/aws-sigv4.ts';
import type { DataPlaneAddresses } from '../kernel-module/dataplane/dataplane.ts';
import {
  authority,
  bearerBinding,
  destination,
  egress,
  id,
  identity,
  interceptCa as newInterceptCa,
  scratch,
  svid,
  table,
  upstreamTls,
} from '../test/dataplane/support.ts';
import { median } from './lib/measure.ts';

const CLIENT = id('bench/client');
const SERVER = id('bench/server');
const THROUGHPUT = { connections: 32, seconds: 2 };
const LATENCY = { connections: 1, seconds: 1 };
/** Rounds per path, interleaved with the other paths of the scenario; the median of each figure is reported. */
const ROUNDS = 3;
const IDLE = 1_000;
const AWS_HOST = 'sts.us-east-1.amazonaws.com';
/** What an AWS SDK with placeholder keys sends: the data plane replaces the signature. */
const AWS_HEADERS = [
  `Host: ${AWS_HOST}`,
  'X-Amz-Date: 20240101T000000Z',
  'Authorization: AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/20240101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=00',
];

function need(cmd: string) {
  try {
    execFileSync('which', [cmd], { stdio: 'pipe' });
  } catch {
    console.error(`${cmd} is not installed: apt-get install ${cmd}`);
    process.exit(2);
  }
}
need('wrk');
need('haproxy');

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const tmp = scratch('riptides-bench-dp-');
const children: ChildProcess[] = [];
const cleanup = () => {
  for (const c of children) c.kill('SIGKILL');
  tmp.cleanup();
};
process.on('exit', cleanup);

function file(name: string, content: string): string {
  const p = join(tmp.dir, name);
  writeFileSync(p, content);
  return p;
}

function haproxy(name: string, config: string): ChildProcess {
  const cfg = file(`${name}.cfg`, config);
  execFileSync('haproxy', ['-c', '-q', '-f', cfg]);
  const child = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(child);
  return child;
}

const GLOBAL = `global
  nbthread 1
  maxconn 8000
  tune.ssl.default-dh-param 2048
defaults
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
`;

async function waitPort(port: number) {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

function startChild<T>(message: unknown): Promise<{ child: ChildProcess; started: T }> {
  const script = fileURLToPath(new URL('./lib/dataplane-child.ts', import.meta.url));
  const child = fork(script, [], {
    execArgv: ['--import', 'tsx', '--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`data plane child exited ${code}`)));
    child.on('message', (m: { type: string } & T) => {
      if (m.type === 'started') resolve({ child, started: m });
    });
    child.send(message as object);
  });
}

async function startDataPlane(
  message: unknown,
): Promise<{ child: ChildProcess; addresses: DataPlaneAddresses }> {
  const { child, started } = await startChild<{ addresses: DataPlaneAddresses }>(message);
  return { child, addresses: started.addresses };
}

/** A node:tls floor process (lib/dataplane-child.ts): the same TLS legs with no policy work; its port. */
async function startFloor(floor: {
  kind: 'mtls-client' | 'mtls-server' | 'tls-relay';
  cert: string;
  key: string;
  ca: string;
  forward: number;
}): Promise<number> {
  return (await startChild<{ port: number }>({ type: 'floor', floor })).started.port;
}

function rssOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    const on = (m: { type: string; rss?: number }) => {
      if (m.type !== 'rss') return;
      child.off('message', on);
      resolve(m.rss!);
    };
    child.on('message', on);
    child.send({ type: 'rss' });
  });
}

function processRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

/**
 * The median requests/s of the throughput runs and the median p50 and p99 of the latency runs; errors are summed
 * over all of them (one failed request in any run is reported).
 */
function medianRun(t: WrkResult[], l: WrkResult[]): WrkResult {
  return {
    rps: median(t.map((r) => r.rps)),
    p50: median(l.map((r) => r.p50)),
    p99: median(l.map((r) => r.p99)),
    errors: [...t, ...l].reduce((a, r) => a + r.errors, 0),
  };
}

function ms(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text)!;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

function wrk(
  url: string,
  connections: number,
  seconds: number,
  newConnections: boolean,
  headers: string[] = [],
): WrkResult {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '--timeout', '5s'];
  for (const h of headers) args.push('-H', h);
  if (newConnections) args.push('-H', 'Connection: close');
  const out = execFileSync('wrk', [...args, url], { encoding: 'utf8' });
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]),
    p50: ms(/\n\s+50%\s+(\S+)/.exec(out)![1]!),
    p99: ms(/\n\s+99%\s+(\S+)/.exec(out)![1]!),
    errors:
      (errors ? errors.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0),
  };
}

/** RSS growth per connection of each measured process while IDLE connections are held open through `port`. */
async function idleMemory(port: number, measures: Array<() => Promise<number>>): Promise<number[]> {
  await new Promise((r) => setTimeout(r, 300));
  const before: number[] = [];
  for (const m of measures) before.push(await m());
  const sockets = [];
  for (let i = 0; i < IDLE; i++) {
    sockets.push(
      await new Promise<ReturnType<typeof connect>>((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
      }),
    );
  }
  await new Promise((r) => setTimeout(r, 1500)); // handshakes through both hops settle
  const after: number[] = [];
  for (const m of measures) after.push(await m());
  for (const s of sockets) s.destroy();
  await new Promise((r) => setTimeout(r, 500));
  return after.map((a, i) => (a - before[i]!) / IDLE);
}

async function main() {
  // PKI: the trust domain CA issues both SVIDs; the upstream has its own CA; the intercept CA mints.
  const ca = await authority(join(tmp.dir, 'ca'));
  const clientSvid = await svid(ca, CLIENT);
  const serverSvid = await svid(ca, SERVER);
  const bundle = ca.bundlePem();
  const interceptCa = await newInterceptCa();
  const up = upstreamTls(['localhost', '127.0.0.1', AWS_HOST]);
  const bundleFile = file('bundle.pem', bundle);
  const upCaFile = file('up-ca.pem', up.ca);
  const upPem = file('up.pem', up.cert + up.key);
  const clientPem = file('client.pem', clientSvid.cert + clientSvid.key);
  const serverPem = file('server.pem', serverSvid.cert + serverSvid.key);
  const frontPem = file('front.pem', up.cert + up.key);

  const [upPlain, upTls, hapA, hapB, hapC] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  haproxy(
    'upstream',
    `${GLOBAL}frontend plain
  mode http
  bind 127.0.0.1:${upPlain}
  http-request return status 200 content-type text/plain string "hello"
frontend tls
  mode http
  bind 127.0.0.1:${upTls} ssl crt ${upPem}
  http-request return status 200 content-type text/plain string "hello"
`,
  );
  const pairB = haproxy(
    'pair-b',
    `${GLOBAL}frontend in
  mode tcp
  bind 127.0.0.1:${hapB} ssl crt ${serverPem} ca-file ${bundleFile} verify required ssl-min-ver TLSv1.3 alpn riptides
  default_backend up
backend up
  mode tcp
  server u 127.0.0.1:${upPlain}
`,
  );
  const pairA = haproxy(
    'pair-a',
    `${GLOBAL}frontend in
  mode tcp
  bind 127.0.0.1:${hapA}
  default_backend peer
backend peer
  mode tcp
  server b 127.0.0.1:${hapB} ssl crt ${clientPem} ca-file ${bundleFile} verify required ssl-min-ver TLSv1.3 alpn riptides
`,
  );
  haproxy(
    'intercept',
    `${GLOBAL}frontend in
  mode http
  option http-keep-alive
  bind 127.0.0.1:${hapC} ssl crt ${frontPem}
  http-request set-header Authorization "Bearer bench-token"
  default_backend up
backend up
  mode http
  server u 127.0.0.1:${upTls} ssl ca-file ${upCaFile} verify required
`,
  );
  for (const p of [upPlain, upTls, hapA, hapB, hapC]) await waitPort(p);

  const server = await startDataPlane({
    type: 'start',
    inputs: {
      rules: table([identity(SERVER, { mode: 'MUTUAL', inbound: [CLIENT] })]),
      svids: { [SERVER]: serverSvid },
      bundle,
      interceptCa,
      credentials: {},
      byName: {},
    },
    options: {
      inbound: [
        {
          spiffeId: SERVER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: upPlain },
        },
      ],
    },
  });
  const fronted = server.addresses.inbound[0]!.port;
  const peer = destination('127.0.0.1', fronted);
  const api = destination('127.0.0.1', upTls);
  const sts = destination(AWS_HOST, upTls);
  const awsRef = { ...bearerBinding('bench-aws', 'bench-aws', [sts]), kind: 'aws' as const };
  const client = await startDataPlane({
    type: 'start',
    loopback: true,
    inputs: {
      rules: table([
        identity(CLIENT, {
          egress: [
            egress([peer], { mode: 'MUTUAL' }, [SERVER]),
            egress([api, sts], { mode: 'SIMPLE', intercept: true }),
          ],
          credentials: [bearerBinding('bench-cred', 'bench-token', [api]), awsRef],
        }),
      ]),
      svids: { [CLIENT]: clientSvid },
      bundle,
      interceptCa,
      credentials: {
        'bench-cred': { kind: 'bearer', token: 'bench-token' },
        'bench-aws': {
          kind: 'aws',
          accessKeyId: 'ASIABENCH',
          secretAccessKey: 'bench-secret',
          sessionToken: 'bench-session',
          expiresAt: null,
        },
      },
      byName: { wrk: CLIENT, node: CLIENT },
    },
    options: {
      upstreamCa: up.ca,
      outbound: [
        { listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: fronted } },
        { listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: upTls } },
        { listen: { host: '127.0.0.1', port: 0 }, destination: { host: AWS_HOST, port: upTls } },
      ],
    },
  });
  const [dpMtls, dpIntercept, dpAws] = client.addresses.outbound.map((o) => o.port) as [
    number,
    number,
    number,
  ];

  const floorServer = await startFloor({
    kind: 'mtls-server',
    ...serverSvid,
    ca: bundle,
    forward: upPlain,
  });
  const floorClient = await startFloor({
    kind: 'mtls-client',
    ...clientSvid,
    ca: bundle,
    forward: floorServer,
  });
  const floorRelay = await startFloor({
    kind: 'tls-relay',
    cert: up.cert,
    key: up.key,
    ca: up.ca,
    forward: upTls,
  });

  const routes = {
    mtls: {
      direct: `http://127.0.0.1:${upPlain}/`,
      dataplane: `http://127.0.0.1:${dpMtls}/`,
      haproxy: `http://127.0.0.1:${hapA}/`,
      'node:tls floor': `http://127.0.0.1:${floorClient}/`,
    },
    intercept: {
      direct: `https://127.0.0.1:${upTls}/`,
      dataplane: `https://127.0.0.1:${dpIntercept}/`,
      haproxy: `https://127.0.0.1:${hapC}/`,
      'node:tls floor': `https://127.0.0.1:${floorRelay}/`,
    },
  };
  // Memory per idle connection through the mTLS pair, measured first, on fresh processes.
  const [dpClient, dpServer] = (await idleMemory(dpMtls, [
    () => rssOf(client.child),
    () => rssOf(server.child),
  ])) as [number, number];
  const [hapClient, hapServer] = (await idleMemory(hapA, [
    async () => processRss(pairA.pid!),
    async () => processRss(pairB.pid!),
  ])) as [number, number];
  const memory =
    `Memory per idle connection (${IDLE} idle connections through the mTLS pair, fresh processes): ` +
    `client data plane ${(dpClient / 1024).toFixed(1)} KB, server data plane ${(dpServer / 1024).toFixed(1)} KB ` +
    `(target < 64 KB per data plane: ${Math.max(dpClient, dpServer) < 65_536 ? 'met' : 'MISSED'}); ` +
    `HAProxy ${(hapClient / 1024).toFixed(1)} KB and ${(hapServer / 1024).toFixed(1)} KB`;

  // What the application names: the upstream it believes it calls (the data plane sends a credential only to
  // the Host its connection was decided for; wrk would name the loopback listener it is pointed at).
  const headersOf: Record<string, string[]> = { mtls: [], intercept: [`Host: 127.0.0.1:${upTls}`] };
  // Warm-up: mint the intercept certificate, fill pools.
  for (const [scenario, urls] of Object.entries(routes))
    for (const url of Object.values(urls)) wrk(url, THROUGHPUT.connections, 2, false, headersOf[scenario]);

  const rows: string[] = [];
  const summary: Record<
    string,
    Record<string, { rps: number; p50: number; p99: number; errors: number }>
  > = {};
  // Interleaved rounds: each path is measured ROUNDS times, taking turns with the others, and its median kept.
  // On a shared VM the CPU a process gets drifts over tens of seconds (steal, frequency): measured one after
  // the other, a drift between two paths' turns would land in their ratio.
  for (const [scenario, urls] of Object.entries(routes)) {
    for (const fresh of [false, true]) {
      const key = `${scenario} ${fresh ? 'new connection per request' : 'keep-alive'}`;
      const runs: Record<string, { t: WrkResult[]; l: WrkResult[] }> = {};
      for (let round = 0; round < ROUNDS; round++)
        for (const [path, url] of Object.entries(urls)) {
          runs[path] ??= { t: [], l: [] };
          const r = runs[path]!;
          r.t.push(wrk(url, THROUGHPUT.connections, THROUGHPUT.seconds, fresh, headersOf[scenario]));
          r.l.push(wrk(url, LATENCY.connections, LATENCY.seconds, fresh, headersOf[scenario]));
        }
      summary[key] = {};
      for (const [path, r] of Object.entries(runs)) {
        const m = medianRun(r.t, r.l);
        summary[key]![path] = m;
        rows.push(
          `| ${key} | ${path} | ${m.rps.toFixed(0)} | ${m.p50.toFixed(3)} | ${m.p99.toFixed(3)} | ${m.errors} |`,
        );
      }
    }
  }
  {
    const url = `https://127.0.0.1:${dpAws}/?Action=GetCallerIdentity&Version=2011-06-15`;
    wrk(url, 4, 1, false, AWS_HEADERS);
    const t: WrkResult[] = [];
    const l: WrkResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      t.push(wrk(url, THROUGHPUT.connections, THROUGHPUT.seconds, false, AWS_HEADERS));
      l.push(wrk(url, LATENCY.connections, LATENCY.seconds, false, AWS_HEADERS));
    }
    const m = medianRun(t, l);
    summary.sigv4 = { dataplane: m };
    rows.push(
      `| intercept + SigV4 re-signing, keep-alive | dataplane | ${m.rps.toFixed(0)} | ${m.p50.toFixed(3)} | ${m.p99.toFixed(3)} | ${m.errors} |`,
    );
  }
  console.log('| scenario | path | req/s (32 conns) | p50 ms (1 conn) | p99 ms (1 conn) | errors |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);

  console.log('\nTargets (issue 12):');
  for (const [key, s] of Object.entries(summary)) {
    if (!s.haproxy) continue;
    const hops = key.startsWith('mtls') ? 2 : 1;
    const ratio = s.dataplane!.rps / s.haproxy!.rps;
    const floor = s['node:tls floor']!;
    // On new connections the node:tls legs make a handshake per application connection, where the data plane
    // reuses upstream connections (intercept, as HAProxy does) and pooled mTLS sessions (the pair): no floor there.
    const floorNote =
      key === 'intercept new connection per request'
        ? 'node:tls relay, not a floor here: '
        : key === 'mtls new connection per request'
          ? 'node:tls pair, not a floor here: '
          : 'node:tls floor ';
    // A failed request (non-2xx or socket error) is not a served one: say so rather than print a ratio.
    const failed = Object.entries(s).filter(([, r]) => r.errors > 0);
    if (failed.length) {
      console.log(
        `- ${key}: NOT MEASURED: ${failed.map(([p, r]) => `${p} ${r.errors} failed request(s)`).join(', ')}`,
      );
      continue;
    }
    const added = (s.dataplane!.p50 - s.direct!.p50) / hops;
    const addedHap = (s.haproxy!.p50 - s.direct!.p50) / hops;
    const addedFloor = (floor.p50 - s.direct!.p50) / hops;
    console.log(
      `- ${key}: data plane ${(ratio * 100).toFixed(0)}% of HAProxy's throughput (target ≥ 50%: ${ratio >= 0.5 ? 'met' : 'MISSED'}; ` +
        `${floorNote}${((floor.rps / s.haproxy!.rps) * 100).toFixed(0)}%); ` +
        `added p50 per hop ${added.toFixed(3)} ms (HAProxy ${addedHap.toFixed(3)} ms, ${floorNote}${addedFloor.toFixed(3)} ms; ` +
        `target < 1 ms: ${added < 1 ? 'met' : 'MISSED'})`,
    );
  }

  console.log(`\n${memory}`);

  // SigV4: the maintained signer against the bare HMAC work every SigV4 signature needs.
  const request = {
    method: 'POST',
    target: '/',
    headers: [
      ['Host', 'sts.us-east-1.amazonaws.com'],
      ['Content-Type', 'application/x-www-form-urlencoded; charset=utf-8'],
      ['X-Amz-Date', '20240101T000000Z'],
    ] as Array<[string, string]>,
    body: 'Action=GetCallerIdentity&Version=2011-06-15',
  };
  const creds = { accessKeyId: 'ASIAEXAMPLE', secretAccessKey: 'secret', sessionToken: 'token' };
  const N = 20_000;
  const perSecond = async (sign: () => unknown) => {
    const t = performance.now();
    for (let i = 0; i < N; i++) await sign();
    return N / ((performance.now() - t) / 1000);
  };
  const smithy = await perSecond(() => resignRequest(request, creds, { date: new Date() }));
  // The hand-written signer this project had before (deleted for the library), from git, in the same run.
  let handwritten: number | null = null;
  try {
    const deleting = execFileSync(
      'git',
      ['log', '--diff-filter=D', '--format=%H', '-1', '--', 'kernel-module/sigv4.ts'],
      { encoding: 'utf8' },
    ).trim();
    const source = execFileSync('git', ['show', `${deleting}^:kernel-module/sigv4.ts`], { encoding: 'utf8' });
    const old = (await import(file('sigv4-handwritten.ts', source))) as {
      resignHeaders: (r: typeof request, c: typeof creds, o: { date: Date }) => unknown;
    };
    handwritten = await perSecond(() => old.resignHeaders(request, creds, { date: new Date() }));
  } catch {
    // not a git checkout: only the library's figure
  }
  const bare = await perSecond(() => {
    let k: Buffer = createHmac('sha256', 'AWS4secret').update('20240101').digest();
    for (const part of ['us-east-1', 'sts', 'aws4_request'])
      k = createHmac('sha256', k).update(part).digest();
    return createHmac('sha256', k).update(request.body).digest('hex');
  });
  const signing = summary.sigv4!.dataplane!.rps;
  const bearer = summary['intercept keep-alive']!.dataplane!.rps;
  console.log(
    `\nSigV4 re-signing, one core: @smithy/signature-v4 ${smithy.toFixed(0)}/s (${((1 / smithy) * 1e6).toFixed(0)} µs each)` +
      (handwritten ? `, the hand-written signer it replaced ${handwritten.toFixed(0)}/s` : '') +
      `, bare HMAC chain ${bare.toFixed(0)}/s. Through the data plane: ${bearer.toFixed(0)} requests/s with a Bearer token, ` +
      `${signing.toFixed(0)} with SigV4 re-signing.`,
  );

  for (const c of [client.child, server.child]) c.send({ type: 'stop' });
}

main().then(
  () => {
    cleanup();
    process.exit(0);
  },
  (e) => {
    console.error(e);
    cleanup();
    process.exit(2);
  },
);
