/**
 * The git source against servers that redirect, trickle or never stop, and URLs that carry tokens. Each
 * case runs against a loopback server; the CLI cases that could hang or eat memory if the guard broke run
 * in a child under `ulimit -v` and a timeout (support/bounded.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { credentialsFromEnv, openSource } from '../../reconciler/source/index.ts';
import { runCliBounded } from '../support/bounded.ts';
import { capture } from '../support/cli.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { holdLock } from '../support/hold-lock.ts';
import { testTls } from '../support/test-tls.ts';
import { scratch, sourceError } from './helpers.ts';

const TOKEN = 'ghp_Rd7Kq2Vx9Lm4Tz8Ws1Yb5Nc3';
const CONFIG = 'trustDomain: example.com\n';
const SERVICE =
  'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: api\nspec:\n  labels:\n    app: api\n';

describe('the git source and plan against hostile servers', () => {
  const tmp = scratch('git-trust');
  const root = join(tmp.dir, 'srv');
  let open: GitServer;
  let plainHttp: GitServer; // where redirects point: records what it was sent
  let redirecting: GitServer; // https, token required, redirects info/refs to plainHttp
  let otherTls: GitServer; // https on another port
  let sameOrigin: GitServer; // redirects /old.git/… to /policy.git/… on itself
  let trickle: GitServer; // one byte every 500 ms, forever
  let endless: GitServer; // refs from git, then a pack that never ends
  let caFile: string;
  let n = 0;
  const cacheDir = () => join(tmp.dir, `cache-${n++}`);
  const intervals = new Set<NodeJS.Timeout>();

  const redirectTo = (target: () => string) => (req: IncomingMessage, res: ServerResponse) => {
    if (!req.url?.includes('/info/refs')) return false;
    res.writeHead(307, { Location: `${target()}/policy.git/info/refs?service=git-upload-pack` });
    res.end();
    return true;
  };

  beforeAll(async () => {
    await createBareRepo(root, 'policy');
    open = await startGitServer({ root });
    const work = await WorkClone.create(`${open.url}/policy.git`, join(tmp.dir, 'work'));
    work.write({ 'riptides.config.yaml': CONFIG, 'services.yaml': SERVICE });
    await work.commit('first');
    await work.push('main');
    const tls = testTls();
    caFile = join(tmp.dir, 'ca.pem');
    writeFileSync(caFile, tls.ca);
    const cert = { key: Buffer.from(tls.key), cert: Buffer.from(tls.cert) };
    plainHttp = await startGitServer({ root });
    otherTls = await startGitServer({ root, tls: cert });
    redirecting = await startGitServer({
      root,
      tls: cert,
      auth: { password: TOKEN },
      intercept: (req, res) =>
        req.url?.startsWith('/to-tls/')
          ? redirectTo(() => otherTls.url)(req, res)
          : redirectTo(() => plainHttp.url)(req, res),
    });
    sameOrigin = await startGitServer({
      root,
      intercept: (req, res) => {
        if (!req.url?.startsWith('/old.git/')) return false;
        res.writeHead(301, { Location: req.url.replace('/old.git/', '/policy.git/') });
        res.end();
        return true;
      },
    });
    trickle = await startGitServer({
      root,
      intercept: (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/x-git-upload-pack-advertisement' });
        const timer = setInterval(() => res.write('0'), 500);
        intervals.add(timer);
        res.on('close', () => clearInterval(timer));
        return true;
      },
    });
    endless = await startGitServer({
      root,
      intercept: (req, res) => {
        if (req.method !== 'POST') return false;
        req.resume();
        res.writeHead(200, { 'Content-Type': 'application/x-git-upload-pack-result' });
        // Well framed: NAK, then side-band-64k packets of pack data (band 1), forever.
        res.write('0008NAK\n');
        const data = randomBytes(65515);
        const packet = Buffer.concat([Buffer.from('fff0\x01', 'latin1'), data]);
        const chunk = Buffer.concat(Array.from({ length: 4 }, () => packet));
        const pump = () => {
          while (!res.destroyed && res.write(chunk));
        };
        res.on('drain', pump);
        pump();
        return true;
      },
    });
  });
  afterAll(async () => {
    for (const t of intervals) clearInterval(t);
    await Promise.all(
      [open, plainHttp, redirecting, otherTls, sameOrigin, trickle, endless].map((s) => s?.close()),
    );
    tmp.cleanup();
  });

  const auth = credentialsFromEnv('https://x', { RIPTIDES_GIT_TOKEN: TOKEN })!;

  it('refuses a redirect from https to http: the token is never sent there, and the error says why', async () => {
    const before = plainHttp.requests.length;
    const src = await openSource({
      repo: `${redirecting.url}/policy.git`,
      cacheDir: cacheDir(),
      caFile,
      auth,
    });
    const err = await sourceError(src.fetch());
    expect(err.code).toBe('redirect');
    expect(err.message).toBe(
      `${redirecting.url}/policy.git: the server redirected GET /policy.git/info/refs to ${plainHttp.url}/policy.git/info/refs, another scheme; not followed, so that credentials and the repository's integrity stay with the origin you named`,
    );
    expect(`${err.message} ${err.hint}`).not.toContain(TOKEN);
    // The redirecting server got the token (it is the origin we named); the http server got nothing at all.
    expect(redirecting.authorizations.at(-1)).toBe(
      `Basic ${Buffer.from(`x-access-token:${TOKEN}`).toString('base64')}`,
    );
    expect(plainHttp.requests.length).toBe(before);
  });

  it('refuses a redirect to another https origin too', async () => {
    const before = otherTls.requests.length;
    const src = await openSource({
      repo: `${redirecting.url}/to-tls/policy.git`,
      cacheDir: cacheDir(),
      caFile,
      auth,
    });
    const err = await sourceError(src.fetch());
    expect(err.code).toBe('redirect');
    expect(err.message).toContain(`to ${otherTls.url}/policy.git/info/refs, another origin; not followed`);
    expect(otherTls.requests.length).toBe(before);
  });

  it('keeps the token out of a progress line that quotes it, on a terminal too (the phase drawn by the bar)', async () => {
    const pkt = (b: Buffer) => Buffer.concat([Buffer.from((b.length + 4).toString(16).padStart(4, '0')), b]);
    const header = Buffer.alloc(12);
    header.write('PACK', 0, 'latin1');
    header.writeUInt32BE(2, 4);
    const emptyPack = Buffer.concat([header, createHash('sha1').update(header).digest()]);
    const quoting = await startGitServer({
      root,
      intercept: (req, res) => {
        if (req.method !== 'POST') return false;
        req.resume();
        res.writeHead(200, { 'Content-Type': 'application/x-git-upload-pack-result' });
        res.end(
          Buffer.concat([
            pkt(Buffer.from('NAK\n')),
            pkt(Buffer.from(`\x02Compressing objects for ${TOKEN}: 50% (1/2)\n`)),
            pkt(Buffer.concat([Buffer.from([1]), emptyPack])),
            Buffer.from('0000'),
          ]),
        );
        return true;
      },
    });
    try {
      const seen: unknown[] = [];
      const src = await openSource({
        repo: `${quoting.url}/policy.git`,
        cacheDir: cacheDir(),
        auth,
        onProgress: (msg, transfer) => seen.push(msg, transfer),
      });
      await src.fetch();
      expect(seen).toContainEqual({ phase: 'Compressing objects for ***', loaded: 1, total: 2 });
      const out = capture(tmp.dir, { RIPTIDES_GIT_TOKEN: TOKEN, XDG_CACHE_HOME: join(tmp.dir, 'xdg') });
      out.io.stderrTTY = { columns: 200 };
      await main(
        ['plan', '--repo', `${quoting.url}/policy.git`, '--head', 'main', '--cache-dir', cacheDir()],
        out.io,
      );
      expect(out.stderr).toContain('Compressing objects for *** [##########----------] 50%');
      expect(`${out.stdout}${out.stderr}`).not.toContain(TOKEN);
    } finally {
      await quoting.close();
    }
  });

  it('follows a redirect within the same origin', async () => {
    const src = await openSource({ repo: `${sameOrigin.url}/old.git`, cacheDir: cacheDir() });
    await src.fetch();
    expect((await src.listFiles('main')).map((f) => f.path)).toEqual([
      'riptides.config.yaml',
      'services.yaml',
    ]);
  });

  it('plan with --ca-file and a redirect to http exits 2 with a one-line reason, not a crash with exit 1', async () => {
    const out = capture(tmp.dir, { RIPTIDES_GIT_TOKEN: TOKEN, XDG_CACHE_HOME: join(tmp.dir, 'xdg') });
    const code = await main(
      [
        'plan',
        '--repo',
        `${redirecting.url}/policy.git`,
        '--head',
        'main',
        '--ca-file',
        caFile,
        '--cache-dir',
        cacheDir(),
      ],
      out.io,
    );
    expect(code).toBe(2);
    expect(out.stderr).toContain(
      `riptides-cli plan: ${redirecting.url}/policy.git: the server redirected GET /policy.git/info/refs to http://`,
    );
    expect(out.stdout).toBe('');
    expect(out.stderr).not.toContain(TOKEN);
  });

  it('refuses a token given as the URL user name without printing it, and says where tokens go', async () => {
    for (const repo of [
      `https://${TOKEN}:x-oauth-basic@git.example.com/org/policy.git`,
      `https://${TOKEN}@git.example.com/org/policy.git`,
      `https://user:${TOKEN}@git.example.com/org/policy.git`,
    ]) {
      const err = await sourceError(openSource({ repo, cacheDir: cacheDir() }));
      expect(err.code).toBe('auth');
      expect(err.message).toBe(
        'https://git.example.com/org/policy.git: credentials in the repository URL are refused (they would end up in shell history, process lists and CI logs); nothing from them was used or shown',
      );
      expect(err.hint).toContain('RIPTIDES_GIT_TOKEN');
      const out = capture(tmp.dir, { XDG_CACHE_HOME: join(tmp.dir, 'xdg') });
      expect(await main(['plan', '--repo', repo, '--head', 'main'], out.io)).toBe(2);
      expect(out.stderr + out.stdout).not.toContain(TOKEN);
      expect(out.stderr).toContain('RIPTIDES_GIT_TOKEN');
    }
  });

  /** The trickling server's repository, with a 1 s wait bound, 1 B/s minimum rate and a 1.5 s fetch deadline. */
  const openTrickle = (dir: string) =>
    openSource({
      repo: `${trickle.url}/policy.git`,
      cacheDir: dir,
      timeoutMs: 1000,
      minBytesPerSecond: 1,
      deadlineMs: 1500,
    });

  it('ends a fetch at its deadline even when the server keeps up the minimum rate', async () => {
    const src = await openTrickle(cacheDir());
    const err = await sourceError(src.fetch());
    expect(err.code).toBe('unreachable');
    expect(err.message).toMatch(
      /the fetch did not finish within its deadline of 2 s \(GET \/policy\.git\/info\/refs\)$/,
    );
  });

  it('counts a wait for another process holding the cache toward the fetch deadline', async () => {
    const dir = cacheDir();
    const src = await openTrickle(dir);
    // Another process holds the cache for 1 s, then is killed; the server then trickles past the deadline.
    const holder = await holdLock(join(dir, 'riptides.lock'));
    setTimeout(() => holder.kill('SIGKILL'), 1000);
    const started = performance.now();
    const err = await sourceError(src.fetch());
    const elapsed = performance.now() - started;
    expect(err.message).toMatch(/the fetch did not finish within its deadline of 2 s/);
    // 1.5 s from the ask, not 1 s of waiting plus a fresh 1.5 s.
    expect(elapsed).toBeLessThan(2300);
  });

  it('counts a wait for the cache in the open toward the first fetch deadline', async () => {
    const dir = cacheDir();
    mkdirSync(dir, { recursive: true });
    // Held while the open prepares the cache (as when another plan is fetching), killed after 1 s.
    const holder = await holdLock(join(dir, 'riptides.lock'));
    setTimeout(() => holder.kill('SIGKILL'), 1000);
    const started = performance.now();
    const src = await openTrickle(dir);
    const err = await sourceError(src.fetch());
    expect(err.message).toMatch(/the fetch did not finish within its deadline of 2 s/);
    expect(performance.now() - started).toBeLessThan(2300);
  });

  it('plan --timeout 2 gives up on a server sending one byte every half second', async () => {
    const run = await runCliBounded(
      [
        'plan',
        '--repo',
        `${trickle.url}/policy.git`,
        '--head',
        'main',
        '--timeout',
        '2',
        '--cache-dir',
        cacheDir(),
      ],
      { timeoutMs: 20_000, env: { XDG_CACHE_HOME: join(tmp.dir, 'xdg') } },
    );
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(
      /the transfer is too slow: \d bytes in the last 2\.\d s \(GET \/policy\.git\/info\/refs\), below the minimum of 1024 bytes\/s/,
    );
  });

  it('plan stops an endless pack at --max-repo-size, holding one chunk in memory, and its hint names that flag', async () => {
    const dir = cacheDir();
    const run = await runCliBounded(
      [
        'plan',
        '--repo',
        `${endless.url}/policy.git`,
        '--head',
        'main',
        '--max-repo-size',
        '256MiB',
        '--cache-dir',
        dir,
      ],
      { timeoutMs: 60_000, env: { XDG_CACHE_HOME: join(tmp.dir, 'xdg') } },
    );
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('the repository is over the size cap of 268435456 bytes');
    expect(run.stderr).toContain('hint: raise the cap with --max-repo-size (plan)');
    // 256 MiB went through; none of it stayed in memory (it was spooled, then removed).
    expect(run.peakRssMiB).toBeLessThan(200);
    const help = capture();
    await main(['plan', '--help'], help.io);
    expect(help.stdout).toContain('--max-repo-size SIZE');
  });

  it('creates the git cache 0700, and tightens one that exists', async () => {
    const dir = join(tmp.dir, 'shared-cache');
    mkdirSync(join(dir, 'git'), { recursive: true, mode: 0o755 });
    const out = capture(tmp.dir, { XDG_CACHE_HOME: join(tmp.dir, 'xdg') });
    expect(
      await main(
        ['plan', '--repo', `${open.url}/policy.git`, '--head', 'main', '--base', 'main', '--cache-dir', dir],
        out.io,
      ),
    ).toBe(0);
    expect(statSync(join(dir, 'git')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'parsed')).mode & 0o777).toBe(0o700);
    const fresh = join(tmp.dir, 'fresh-cache');
    await (await openSource({ repo: `${open.url}/policy.git`, cacheDir: join(fresh, 'git') })).fetch();
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
    expect(statSync(join(fresh, 'git')).mode & 0o777).toBe(0o700);
  });
});
