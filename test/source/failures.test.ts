import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentialsFromEnv, openSource, type SourceError } from '../../reconciler/source/index.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { testTls } from '../support/test-tls.ts';
import { scratch, sourceError } from './helpers.ts';

const USER = 'alice';
const PASSWORD = 'pw-Zq8vK2mXr7Lp';
const TOKEN = 'tok-9fA3kQ7wB2xR5sD1';

describe('git source failures are clear and bounded', () => {
  const tmp = scratch('git-failures');
  const root = join(tmp.dir, 'srv');
  let open: GitServer; // no auth, used to push fixtures
  let basic: GitServer; // requires alice:PASSWORD
  let tokenServer: GitServer; // requires any user with TOKEN as the password
  let tls: GitServer;
  let caFile: string;
  let head: string;
  let cacheN = 0;
  const cacheDir = () => join(tmp.dir, `cache-${cacheN++}`);

  beforeAll(async () => {
    await createBareRepo(root, 'policy');
    open = await startGitServer({ root });
    const work = await WorkClone.create(`${open.url}/policy.git`, join(tmp.dir, 'work'));
    // Random bytes do not compress: the pack is at least this big, which the size-cap test relies on.
    work.write({
      'policies/a.yaml': 'kind: Service\n',
      'blob.bin': randomBytes(64 * 1024).toString('base64'),
    });
    head = await work.commit('first');
    await work.push('main');
    basic = await startGitServer({ root, auth: { username: USER, password: PASSWORD } });
    tokenServer = await startGitServer({ root, auth: { password: TOKEN } });
    const ca = testTls();
    caFile = join(tmp.dir, 'ca.pem');
    writeFileSync(caFile, ca.ca);
    tls = await startGitServer({ root, tls: { key: Buffer.from(ca.key), cert: Buffer.from(ca.cert) } });
  });
  afterAll(async () => {
    await Promise.all([open, basic, tokenServer, tls].map((s) => s?.close()));
    tmp.cleanup();
  });

  /** Every piece of text a failure shows: message, hint, stack. */
  const allText = (err: SourceError, progress: string[]) =>
    [err.message, err.hint, err.stack ?? '', ...progress].join('\n');

  it('refuses missing credentials with a hint naming the environment variables', async () => {
    const src = await openSource({ repo: `${basic.url}/policy.git`, cacheDir: cacheDir() });
    const err = await sourceError(src.fetch());
    expect(err.code).toBe('auth');
    expect(err.message).toContain('requires credentials (HTTP 401)');
    expect(err.hint).toContain('RIPTIDES_GIT_TOKEN');
    expect(err.hint).toContain('RIPTIDES_GIT_CREDENTIALS_FILE');
  });

  it('refuses wrong credentials, and never shows the secret in errors or progress', async () => {
    const progress: string[] = [];
    const wrong = 'wrong-Secret-4Hs8Jq2';
    const src = await openSource({
      repo: `${basic.url}/policy.git`,
      cacheDir: cacheDir(),
      auth: credentialsFromEnv(basic.url, { RIPTIDES_GIT_USERNAME: USER, RIPTIDES_GIT_PASSWORD: wrong }),
      onProgress: (m) => progress.push(m),
    });
    const err = await sourceError(src.fetch());
    expect(err.code).toBe('auth');
    expect(err.message).toContain('refused the credentials (HTTP 401)');
    const text = allText(err, progress);
    for (const secret of [wrong, Buffer.from(`${USER}:${wrong}`).toString('base64')]) {
      expect(text).not.toContain(secret);
    }
  });

  it('accepts Basic credentials from the environment and a token from the environment', async () => {
    const progress: string[] = [];
    const withPassword = await openSource({
      repo: `${basic.url}/policy.git`,
      cacheDir: cacheDir(),
      auth: credentialsFromEnv(basic.url, { RIPTIDES_GIT_USERNAME: USER, RIPTIDES_GIT_PASSWORD: PASSWORD }),
      onProgress: (m) => progress.push(m),
    });
    await withPassword.fetch();
    expect(await withPassword.resolveRef('main')).toBe(head);

    const tokenCache = cacheDir();
    const withToken = await openSource({
      repo: `${tokenServer.url}/policy.git`,
      cacheDir: tokenCache,
      auth: credentialsFromEnv(tokenServer.url, { RIPTIDES_GIT_TOKEN: TOKEN }),
      onProgress: (m) => progress.push(m),
    });
    await withToken.fetch();
    expect(await withToken.resolveRef('main')).toBe(head);
    const text = progress.join('\n');
    expect(progress.length).toBeGreaterThan(2);
    for (const secret of [PASSWORD, TOKEN]) expect(text).not.toContain(secret);
    // Nor is the token written to the cache on disk (git config, refs, FETCH_HEAD…).
    const files = readdirSync(tokenCache, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(files.length).toBeGreaterThan(3);
    for (const f of files) {
      const content = readFileSync(join(f.parentPath, f.name), 'latin1');
      expect(content).not.toContain(TOKEN);
      expect(content).not.toContain(Buffer.from(`x-access-token:${TOKEN}`).toString('base64'));
    }
  });

  it('reads credentials from a git-credentials file, matched on protocol and host', async () => {
    const file = join(tmp.dir, 'git-credentials');
    writeFileSync(
      file,
      `https://bob:not-this-one@127.0.0.1\n${basic.url.replace('//', `//${USER}:${encodeURIComponent(PASSWORD)}@`)}\n`,
    );
    const auth = credentialsFromEnv(`${basic.url}/policy.git`, { RIPTIDES_GIT_CREDENTIALS_FILE: file });
    expect(auth).toEqual({ username: USER, password: PASSWORD });
    const src = await openSource({ repo: `${basic.url}/policy.git`, cacheDir: cacheDir(), auth });
    await src.fetch();
    expect(await src.resolveRef('main')).toBe(head);
  });

  it('refuses credentials embedded in the URL without echoing them', async () => {
    const err = await sourceError(
      openSource({
        repo: basic.url.replace('//', `//${USER}:${PASSWORD}@`) + '/policy.git',
        cacheDir: cacheDir(),
      }),
    );
    expect(err.code).toBe('auth');
    expect(allText(err, [])).not.toContain(PASSWORD);
  });

  it('refuses to send credentials over plain http to a non-loopback host (before any connection)', async () => {
    const err = await sourceError(
      openSource({
        repo: 'http://git.example.invalid/policy.git',
        auth: { token: TOKEN },
        cacheDir: cacheDir(),
      }),
    );
    expect(err.code).toBe('auth');
    expect(err.hint).toContain('https://');
  });

  it('trusts a self-hosted HTTPS server through caFile, and refuses it without', async () => {
    const trusted = await openSource({ repo: `${tls.url}/policy.git`, cacheDir: cacheDir(), caFile });
    await trusted.fetch();
    expect(await trusted.resolveRef('main')).toBe(head);

    const untrusted = await openSource({ repo: `${tls.url}/policy.git`, cacheDir: cacheDir() });
    const err = await sourceError(untrusted.fetch());
    expect(err.code).toBe('unreachable');
    expect(err.message).toContain('TLS verification');
    expect(err.hint).toContain('caFile');
  });

  it('fails fast and clearly when nothing listens on the port', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const src = await openSource({ repo: `http://127.0.0.1:${port}/policy.git`, cacheDir: cacheDir() });
    const err = await sourceError(src.fetch());
    expect(err.code).toBe('unreachable');
    expect(err.message).toContain('ECONNREFUSED');
  });

  it('gives up on a server that accepts but never answers, within the timeout', async () => {
    const hang = await startGitServer({ root });
    hang.setMode('hang');
    try {
      const src = await openSource({ repo: `${hang.url}/policy.git`, cacheDir: cacheDir(), timeoutMs: 300 });
      const err = await sourceError(src.fetch());
      expect(err.code).toBe('unreachable');
      expect(err.message).toContain('no response within 300 ms');
      expect(hang.requests).toEqual(['GET /policy.git/info/refs?service=git-upload-pack']);
    } finally {
      await hang.close();
    }
  });

  it('gives up on a server that starts a response and then stalls', async () => {
    const stall = await startGitServer({ root });
    stall.setMode('stall');
    try {
      const src = await openSource({ repo: `${stall.url}/policy.git`, cacheDir: cacheDir(), timeoutMs: 300 });
      const err = await sourceError(src.fetch());
      expect(err.code).toBe('unreachable');
      expect(err.message).toContain('no response within 300 ms (GET /policy.git/info/refs)');
    } finally {
      await stall.close();
    }
  });

  it('stops a fetch that goes over the size cap, and writes no pack', async () => {
    const dir = cacheDir();
    const src = await openSource({ repo: `${open.url}/policy.git`, cacheDir: dir, maxRepoBytes: 16 * 1024 });
    const err = await sourceError(src.fetch());
    expect(err.code).toBe('too-large');
    expect(err.hint).toContain('maxRepoBytes');
    const packDir = join(dir, 'objects', 'pack');
    expect(existsSync(packDir) ? readdirSync(packDir).filter((f) => f.endsWith('.pack')) : []).toEqual([]);
  });

  it('counts what is already cached against the cap', async () => {
    const dir = cacheDir();
    const first = await openSource({ repo: `${open.url}/policy.git`, cacheDir: dir });
    await first.fetch();
    const again = await openSource({
      repo: `${open.url}/policy.git`,
      cacheDir: dir,
      maxRepoBytes: 16 * 1024,
    });
    expect((await sourceError(again.fetch())).code).toBe('too-large');
  });

  it('a transfer cut off mid-pack leaves the refs where they were', async () => {
    const dir = cacheDir();
    const src = await openSource({ repo: `${open.url}/policy.git`, cacheDir: dir });
    await src.fetch();
    const work = await WorkClone.create(`${open.url}/policy.git`, join(tmp.dir, 'work-big'));
    work.write({ 'more.bin': randomBytes(64 * 1024).toString('base64') });
    await work.commit('second big blob');
    await work.push('main');
    try {
      const packed = readdirSync(join(dir, 'objects', 'pack')).filter((f) => f.endsWith('.pack'));
      expect(packed.length).toBe(1);
      const capped = await openSource({
        repo: `${open.url}/policy.git`,
        cacheDir: dir,
        maxRepoBytes: 120 * 1024,
      });
      const err = await sourceError(capped.fetch());
      expect(err.code).toBe('too-large');
      expect(err.message).toMatch(/already cached/);
      expect(await capped.resolveRef('main')).toBe(head);
      expect((await capped.listFiles('main')).map((f) => f.path)).toEqual(['blob.bin', 'policies/a.yaml']);
    } finally {
      // Put the shared repository back as the other tests expect it.
      await work.git('push', '--quiet', '--force', 'origin', `${head}:refs/heads/main`);
    }
  });

  it('a failed fetch leaves the cached revision readable (offline use of the last fetch)', async () => {
    const dir = cacheDir();
    const src = await openSource({ repo: `${open.url}/policy.git`, cacheDir: dir });
    await src.fetch();
    open.setMode('hang');
    try {
      const offline = await openSource({ repo: `${open.url}/policy.git`, cacheDir: dir, timeoutMs: 200 });
      expect((await sourceError(offline.fetch())).code).toBe('unreachable');
      expect(await offline.resolveRef('main')).toBe(head);
    } finally {
      open.setMode('serve');
    }
  });
});
