/**
 * `npm run bench -- hostile`: what the hostile inputs of issue 8 cost now, each next to the same command on
 * a well-behaved peer measured in the same run (fresh process per run, medians; wall time and peak RSS of
 * the CLI process). The tests assert the outcomes under `ulimit -v` and a timeout; this prints the figures.
 *
 *   git:         a server trickling one byte every 0.5 s (plan --timeout 2); an endless pack
 *                (plan --max-repo-size 256MiB); a 200 MiB blob of one byte in a local repository, and
 *                fetched from a server;
 *   credentials: Vault and STS answering an endless body (--timeout 3) or trickling one (--timeout 2);
 *   X.509:       verifying a leaf presented with ten self-issued CAs that share a key, vs a good chain.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initAuthority } from '../reconciler/identity/authority.ts';
import { generateKeyAndCsr } from '../reconciler/identity/issuance.ts';
import { parseCertificatesPem } from '../reconciler/identity/x509.ts';
import { parseBundlePem, verifyX509Svid, X509SvidError } from '../reconciler/identity/x509-svid.ts';
import { NOW as LOOP_NOW, selfIssuedLoop } from '../test/identity/children/many-self-issued.ts';
import { startCredEnv, WORKLOAD } from '../test/support/cred-env.ts';
import { createBareRepo, git, WorkClone } from '../test/support/git-fixtures.ts';
import { startGitServer } from '../test/support/git-server.ts';
import { fmt, median, type Sample } from './lib/measure.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const root = join(tmpdir(), 'riptides-bench-hostile');
rmSync(root, { recursive: true, force: true });
mkdirSync(root, { recursive: true });
const child = fileURLToPath(new URL('./lib/cli-child.ts', import.meta.url));

/** One CLI run in a fresh process, asynchronously (the peers run in this process). */
function cli(args: string[]): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), child, ...args], {
      cwd: root,
      env: { ...process.env, XDG_CACHE_HOME: join(root, 'xdg') },
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString('utf8');
    });
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString('utf8');
    });
    p.on('close', () => {
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1)!) as Sample);
      } catch {
        reject(new Error(`riptides-cli ${args.join(' ')} printed no figures: ${out}${err}`));
      }
    });
  });
}

let n = 0;
const rows: Array<{ name: string; ms: number; rss: number; code: unknown }> = [];
async function measure(name: string, args: () => string[]): Promise<void> {
  const samples: Sample[] = [];
  for (let i = 0; i < RUNS; i++) samples.push(await cli(args()));
  rows.push({
    name,
    ms: median(samples.map((s) => s.ms)),
    rss: median(samples.map((s) => s.maxRssMB)),
    code: samples[0]!.code,
  });
  console.log(
    `  ${name.padEnd(58)} ${fmt(rows.at(-1)!.ms).padStart(7)} ms  ${fmt(rows.at(-1)!.rss).padStart(5)} MB  exit ${samples[0]!.code}`,
  );
}

console.log(`${RUNS} runs each, median; wall time and peak RSS of the riptides-cli process\n`);

// --- git --------------------------------------------------------------------------------------------------
console.log('git');
const srv = join(root, 'srv');
await createBareRepo(srv, 'policy');
const trickle = (res: ServerResponse) => {
  res.writeHead(200, { 'Content-Type': 'application/x-git-upload-pack-advertisement' });
  const t = setInterval(() => res.write('0'), 500);
  res.on('close', () => clearInterval(t));
};
const endlessPack = (req: IncomingMessage, res: ServerResponse) => {
  req.resume();
  res.writeHead(200, { 'Content-Type': 'application/x-git-upload-pack-result' });
  res.write('0008NAK\n');
  const packet = Buffer.concat([Buffer.from('fff0\x01', 'latin1'), randomBytes(65515)]);
  const chunk = Buffer.concat([packet, packet, packet, packet]);
  const pump = () => {
    while (!res.destroyed && res.write(chunk));
  };
  res.on('drain', pump);
  pump();
};
let serverMode: 'serve' | 'trickle' | 'endless' = 'serve';
const server = await startGitServer({
  root: srv,
  intercept: (req, res) => {
    if (serverMode === 'trickle') trickle(res);
    else if (serverMode === 'endless' && req.method === 'POST') endlessPack(req, res);
    else return false;
    return true;
  },
});
const work = await WorkClone.create(`${server.url}/policy.git`, join(root, 'work'));
work.write({
  'riptides.config.yaml': 'trustDomain: example.com\n',
  'a.yaml':
    'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: a\nspec:\n  labels:\n    app: a\n',
});
await work.commit('first');
await work.push('main');
const url = `${server.url}/policy.git`;
const fresh = () => ['--cache-dir', join(root, `cache-${n++}`)];
await measure('plan, well-behaved server (baseline)', () => [
  'plan',
  '--repo',
  url,
  '--head',
  'main',
  '--base',
  'main',
  ...fresh(),
]);
serverMode = 'trickle';
await measure('plan --timeout 2, server trickling 1 byte / 0.5 s', () => [
  'plan',
  '--repo',
  url,
  '--head',
  'main',
  '--timeout',
  '2',
  ...fresh(),
]);
serverMode = 'endless';
await measure('plan --max-repo-size 256MiB, endless pack', () => [
  'plan',
  '--repo',
  url,
  '--head',
  'main',
  '--max-repo-size',
  '256MiB',
  ...fresh(),
]);
serverMode = 'serve';
const local = join(root, 'local');
mkdirSync(local);
await git(local, 'init', '--quiet', '-b', 'main');
writeFileSync(join(local, 'riptides.config.yaml'), 'trustDomain: example.com\n');
await git(local, 'add', '--all');
await git(local, 'commit', '--quiet', '-m', 'base');
await git(local, 'checkout', '--quiet', '-b', 'feature');
writeFileSync(
  join(local, 'small.yaml'),
  'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: s\nspec:\n  labels:\n    app: s\n',
);
await git(local, 'add', '--all');
await git(local, 'commit', '--quiet', '-m', 'small');
await git(local, 'checkout', '--quiet', '-b', 'huge');
writeFileSync(join(local, 'huge.yaml'), Buffer.alloc(200 * 1024 * 1024, 0x61));
await git(local, 'add', '--all');
await git(local, 'commit', '--quiet', '-m', 'huge');
await measure('plan, local repository, one small file (baseline)', () => [
  'plan',
  '--repo',
  local,
  '--head',
  'feature',
  '--base',
  'main',
  ...fresh(),
]);
await measure('plan, local repository, a 200 MiB blob (0.2 MB in git)', () => [
  'plan',
  '--repo',
  local,
  '--head',
  'huge',
  '--base',
  'main',
  ...fresh(),
]);
await git(local, 'push', '--quiet', url, 'huge');
await measure('plan, remote, a 200 MiB blob (0.2 MB on the wire)', () => [
  'plan',
  '--repo',
  url,
  '--head',
  'huge',
  '--base',
  'main',
  ...fresh(),
]);
await server.close();

// --- credentials ------------------------------------------------------------------------------------------
console.log('\ncredentials check');
const env = await startCredEnv();
const caFile = join(env.dir, 'ca.pem');
writeFileSync(caFile, env.ca);
const repo = join(env.dir, 'policy');
mkdirSync(repo);
writeFileSync(
  join(repo, 'sources.yaml'),
  `apiVersion: core.riptides.io/v1alpha1\nkind: CredentialSource\nmetadata:\n  name: v\nspec:\n  vault:\n    address: ${env.vault.url}\n    audience:\n      - example-audience\n    jwtAuthMethodPath: jwt_production\n    path: openai/creds/riptides-role\n    role: openai-apikeys\n    type:\n      token:\n        source: api_key\n---\napiVersion: core.riptides.io/v1alpha1\nkind: CredentialSource\nmetadata:\n  name: s\nspec:\n  aws:\n    roleArn: arn:aws:iam::123456789012:role/any-workload\n`,
);
const check = (source: string, ...extra: string[]) => [
  'credentials',
  'check',
  '--repo',
  repo,
  '--ca-dir',
  join(env.dir, 'ca'),
  '--source',
  source,
  '--workload',
  WORKLOAD,
  '--vault-ca',
  caFile,
  '--sts-endpoint',
  `${env.sts.url}/`,
  '--sts-ca',
  caFile,
  ...extra,
];
await measure('Vault, well-behaved (baseline)', () => check('v', '--timeout', '3'));
env.vault.mode = 'endless';
await measure('Vault answering an endless body, --timeout 3', () => check('v', '--timeout', '3'));
env.vault.mode = 'trickle';
await measure('Vault trickling its answer, --timeout 2', () => check('v', '--timeout', '2'));
env.vault.mode = 'none';
await measure('STS, well-behaved (baseline)', () => check('s', '--timeout', '3'));
env.sts.mode = 'endless';
await measure('STS answering an endless body, --timeout 3', () => check('s', '--timeout', '3'));
env.sts.mode = 'trickle';
await measure('STS trickling its answer, --timeout 2', () => check('s', '--timeout', '2'));
env.sts.mode = 'none';
await env.close();

// --- X.509 path building ------------------------------------------------------------------------------------
console.log('\nX.509 verification (in process, median of 20)');
const authority = await initAuthority({ trustDomain: 'example.org', dir: join(root, 'ca') });
const { csrPem } = await generateKeyAndCsr('spiffe://example.org/w');
const good = await authority.signX509Svid({ csrPem });
const bundles = new Map([['example.org', parseBundlePem(authority.bundlePem()).slice(0, 1)]]);
const time = (fn: () => void) => {
  const t: number[] = [];
  for (let i = 0; i < 20; i++) {
    const s = performance.now();
    fn();
    t.push(performance.now() - s);
  }
  return median(t);
};
const goodMs = time(() => verifyX509Svid(parseCertificatesPem(good.chainPem), bundles));
const loop = selfIssuedLoop(10);
let verdict = '';
const loopMs = time(() => {
  try {
    verifyX509Svid(loop.chain, loop.bundles, { now: LOOP_NOW });
  } catch (err) {
    if (!(err instanceof X509SvidError)) throw err;
    verdict = err.code;
  }
});
console.log(`  a good chain (leaf + signing CA, root in the bundle)      ${fmt(goodMs, 2).padStart(7)} ms`);
console.log(
  `  leaf + 10 self-issued CAs sharing a key                   ${fmt(loopMs, 2).padStart(7)} ms  → ${verdict}`,
);
rmSync(root, { recursive: true, force: true });
