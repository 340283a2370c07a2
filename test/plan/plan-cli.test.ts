/** `riptides-cli plan` against a real git server (git's http-backend on loopback), commits pushed by the git CLI. */
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { capture } from '../support/cli.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { scratch } from '../support/scratch.ts';
import { BASE, edit, H } from './plan-helpers.ts';

const TOKEN = 'ghp_TESTONLYtoken0123456789abcdefABCDEF';
const SECRET_VALUE = 'sk-live-SUPERSECRET-value-0001';
const CHANGED_SECRET = 'sk-live-SUPERSECRET-value-0002';

let tmp: ReturnType<typeof scratch>;
let server: GitServer;
let authServer: GitServer;
let work: WorkClone;
let url: string;
const commits: Record<string, string> = {};

const withPolicy = (files: Record<string, string>) =>
  Object.fromEntries([
    ['policy/riptides.config.yaml', 'trustDomain: example.com\n'],
    ...Object.entries(files).map(([k, v]) => [`policy/${k}`, v]),
  ]);

/** Makes branch `name` from `from` with `files` written in one commit, pushes it, and goes back to main. */
async function branch(
  name: string,
  from: string,
  files: Record<string, string>,
  message: string,
): Promise<string> {
  await work.git('checkout', '--quiet', '-b', name, from);
  const commit = await work.write(files).commit(message);
  await work.push(name);
  await work.git('checkout', '--quiet', 'main');
  return commit;
}

/** Runs `plan` with a cache directory of its own unless one is given (tests of warm runs share one). */
async function plan(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  cacheDir = join(tmp.dir, 'cache', String(Math.random())),
) {
  const out = capture(process.cwd(), env);
  const code = await main(['plan', '--cache-dir', cacheDir, ...args], out.io);
  return { code, ...out };
}

beforeAll(async () => {
  tmp = scratch('plan-cli');
  await createBareRepo(join(tmp.dir, 'srv'), 'policy');
  server = await startGitServer({ root: join(tmp.dir, 'srv') });
  authServer = await startGitServer({ root: join(tmp.dir, 'srv'), auth: { password: TOKEN } });
  url = `${server.url}/policy.git`;
  work = await WorkClone.create(url, join(tmp.dir, 'work'));
  commits.base = await work.write({ ...withPolicy(BASE), 'README.md': '# policy\n' }).commit('base');
  await work.push('main');
  await work.git('tag', 'v1');
  await work.git('push', '--quiet', 'origin', 'v1');
  commits.downgrade = await branch(
    'downgrade',
    'main',
    withPolicy(
      edit(
        BASE,
        'identities.yaml',
        '      mode: MUTUAL\n  allowedSPIFFEIDs',
        '      mode: PERMISSIVE\n  allowedSPIFFEIDs',
      ),
    ),
    'downgrade the server',
  );
  await branch(
    'broken',
    'main',
    withPolicy(edit(BASE, 'credentials.yaml', 'credentialSource: token', 'credentialSource: tokn')),
    'typo',
  );
});

afterAll(async () => {
  await server?.close();
  await authServer?.close();
  tmp?.cleanup();
});

describe('plan over a real git server', () => {
  it('exits 0 with "no changes" when head equals base', async () => {
    const r = await plan(['--repo', url, '--path', 'policy', '--base', 'main', '--head', 'main']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('no changes');
  });

  it('plans a branch against the merge base with the default branch by default, and exits 1', async () => {
    const r = await plan(['--repo', url, '--path', 'policy', '--head', 'downgrade']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      `plan merge-base(main) (${commits.base!.slice(0, 8)}) → downgrade (${commits.downgrade!.slice(0, 8)})`,
    );
    expect(r.stdout).toContain('[high] tls-downgrade');
    expect(r.stdout).toContain('spec.connection.tls.mode: MUTUAL → PERMISSIVE');
  });

  it('accepts tags and commit ids (full and short) as refs', async () => {
    for (const [base, head] of [
      ['v1', 'downgrade'],
      [commits.base!, commits.downgrade!],
      [commits.base!.slice(0, 10), 'downgrade'],
    ]) {
      const r = await plan([
        '--repo',
        url,
        '--path',
        'policy',
        '--base',
        base!,
        '--head',
        head!,
        '--format',
        'json',
      ]);
      expect(r.code, `${base}..${head}`).toBe(1);
      const json = JSON.parse(r.stdout);
      expect(json.base.commit).toBe(commits.base);
      expect(json.head.commit).toBe(commits.downgrade);
    }
  });

  it('prints the documented JSON fields', async () => {
    const r = await plan([
      '--repo',
      url,
      '--path',
      'policy',
      '--base',
      'main',
      '--head',
      'downgrade',
      '--format',
      'json',
    ]);
    const json = JSON.parse(r.stdout);
    expect(json.resources).toEqual([
      {
        kind: 'WorkloadIdentity',
        namespace: 'riptides-system',
        name: 'server',
        change: 'changed',
        file: 'policy/identities.yaml',
        fields: [{ path: 'spec.connection.tls.mode', before: 'MUTUAL', after: 'PERMISSIVE' }],
      },
    ]);
    expect(json.access.changed).toHaveLength(1);
    expect(json.access).toMatchObject({ added: [], removed: [] });
    expect(json.risks).toEqual([
      expect.objectContaining({
        rule: 'tls-downgrade',
        severity: 'high',
        resource: 'WorkloadIdentity/riptides-system/server',
      }),
    ]);
  });

  it('says first that head does not validate, and exits 2', async () => {
    const r = await plan([
      '--repo',
      url,
      '--path',
      'policy',
      '--base',
      'main',
      '--head',
      'broken',
      '--format',
      'markdown',
    ]);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/^### Riptides plan[^\n]*\n\n:x: \*\*Head does not validate: 1 error\(s\)/);
    expect(r.stdout).toContain('`policy/credentials.yaml:18:21` **RT042**');
  });

  it('fails clearly on an unknown ref', async () => {
    const r = await plan(['--repo', url, '--path', 'policy', '--base', 'main', '--head', 'no-such-branch']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no-such-branch');
  });

  it('sees a force-pushed branch as it is now', async () => {
    const cacheDir = join(tmp.dir, 'cache-force');
    const run = async () => {
      const r = await plan(
        ['--repo', url, '--path', 'policy', '--base', 'main', '--head', 'rewrite', '--format', 'json'],
        {},
        cacheDir,
      );
      return { code: r.code, json: r.stdout ? JSON.parse(r.stdout) : null, stderr: r.stderr };
    };
    await work.git('checkout', '--quiet', '-b', 'rewrite', 'main');
    await work
      .write(withPolicy(edit(BASE, 'services.yaml', 'port: 9000', 'port: 9001')))
      .commit('first version');
    await work.push('rewrite');
    expect((await run()).json.resources[0].fields[0].after).toBe(9001);
    await work.git('reset', '--quiet', '--hard', 'main');
    await work.write(withPolicy(edit(BASE, 'services.yaml', 'port: 9000', 'port: 9002'))).commit('rewritten');
    await work.git('push', '--quiet', '--force', 'origin', 'rewrite');
    const second = await run();
    expect(second.code).toBe(1);
    expect(second.json.resources[0].fields[0].after).toBe(9002);
    await work.git('checkout', '--quiet', 'main');
  });

  it('refuses without credentials, names the variables to set, and works with a token from the environment', async () => {
    const authUrl = `${authServer.url}/policy.git`;
    const refused = await plan([
      '--repo',
      authUrl,
      '--path',
      'policy',
      '--base',
      'main',
      '--head',
      'downgrade',
    ]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/RIPTIDES_GIT_TOKEN/);
    const wrong = await plan(
      ['--repo', authUrl, '--path', 'policy', '--base', 'main', '--head', 'downgrade'],
      { RIPTIDES_GIT_TOKEN: `${TOKEN}x` },
    );
    expect(wrong.code).toBe(2);
    expect(wrong.stdout + wrong.stderr).not.toContain(TOKEN);
    const ok = await plan(['--repo', authUrl, '--path', 'policy', '--base', 'main', '--head', 'downgrade'], {
      RIPTIDES_GIT_TOKEN: TOKEN,
    });
    expect(ok.code).toBe(1);
    expect(ok.stdout + ok.stderr).not.toContain(TOKEN);
  });

  it('fails within the timeout when the server is down or hangs', async () => {
    const closed: Server = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const down = await plan([
      '--repo',
      `http://127.0.0.1:${port}/policy.git`,
      '--head',
      'main',
      '--timeout',
      '2',
    ]);
    expect(down.code).toBe(2);
    expect(down.stderr).toMatch(/unreachable|refused|ECONNREFUSED/i);

    const hanging = await startGitServer({ root: join(tmp.dir, 'srv') });
    hanging.setMode('hang');
    const started = Date.now();
    const hung = await plan(['--repo', `${hanging.url}/policy.git`, '--head', 'main', '--timeout', '1']);
    expect(hung.code).toBe(2);
    expect(Date.now() - started).toBeLessThan(15_000);
    await hanging.close();
  });

  it('plans a local working copy without any server, re-parsing only changed files on a warm cache', async () => {
    const cacheDir = join(tmp.dir, 'cache-local');
    const run = (head: string) =>
      plan(['--repo', work.dir, '--path', 'policy', '--base', 'main', '--head', head], {}, cacheDir);
    // Head's three files, plus the one file that differs at base.
    expect((await run('downgrade')).stderr).toMatch(/parsed 4 file\(s\)/);
    expect((await run('downgrade')).stderr).toMatch(/parsed 0 file\(s\)/);
  });
});

describe('validation records in the cache', () => {
  it('keeps showing head warnings on re-runs, and never records an invalid base as clean', async () => {
    const cacheDir = join(tmp.dir, 'cache-records');
    const run = (base: string, head: string) =>
      plan(['--repo', url, '--path', 'policy', '--base', base, '--head', head], {}, cacheDir);
    await branch(
      'warned',
      'main',
      withPolicy(
        edit(
          BASE,
          'credentials.yaml',
          '        - app: billing\n',
          '        - app: billing\n        - app: nowhere\n',
        ),
      ),
      'selector that matches nothing',
    );
    for (let i = 0; i < 2; i++) {
      const r = await run('main', 'warned');
      expect(r.code, `run ${i}`).toBe(1);
      expect(r.stdout, `run ${i}`).toContain('warning RT045');
    }
    for (let i = 0; i < 2; i++) {
      const r = await run('broken', 'main');
      expect(r.stdout, `run ${i}`).toContain('base broken does not validate itself');
    }
  });
});

describe('no secret value reaches any plan output', () => {
  it('shows a changed Secret as fingerprints in text, markdown and json, and in the invalid case too', async () => {
    const secret = (v: string) =>
      `apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-key\ntype: Opaque\nstringData:\n  token: ${v}\n`;
    await branch('secret-base', 'main', { 'policy/secret.yaml': secret(SECRET_VALUE) }, 'secret');
    await branch('secret-head', 'secret-base', { 'policy/secret.yaml': secret(CHANGED_SECRET) }, 'rotate');
    for (const format of ['text', 'markdown', 'json']) {
      const args = [
        '--repo',
        url,
        '--path',
        'policy',
        '--base',
        'secret-base',
        '--head',
        'secret-head',
        '--format',
        format,
      ];
      const allowed = await plan([...args, '--allow-plaintext-secrets']);
      expect(allowed.code, format).toBe(1);
      const all = allowed.stdout + allowed.stderr;
      expect(all).toContain('sha256:');
      expect(all).toContain('stringData.token');
      expect(all).not.toContain(SECRET_VALUE);
      expect(all).not.toContain(CHANGED_SECRET);
      const refused = await plan(args);
      expect(refused.code, format).toBe(2);
      expect(refused.stdout + refused.stderr).toContain('RT050');
      expect(refused.stdout + refused.stderr).not.toContain(CHANGED_SECRET);
    }
  });
});

describe('markdown for a pull-request comment', () => {
  it('stays under 65,536 characters and says what it cut', async () => {
    const many = Array.from(
      { length: 1500 },
      (_, i) =>
        `${H}kind: Service\nmetadata:\n  name: bulk-${i}\nspec:\n  addresses:\n    - address: bulk-${i}.internal.example.com\n      port: 8443\n  labels:\n    app: bulk-${i}\n`,
    ).join('---\n');
    await branch('bulk', 'main', { 'policy/bulk.yaml': many }, 'bulk');
    const r = await plan([
      '--repo',
      url,
      '--path',
      'policy',
      '--base',
      'main',
      '--head',
      'bulk',
      '--format',
      'markdown',
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBeLessThanOrEqual(65_536);
    expect(r.stdout).toContain("cut to fit GitHub's 65536-character comment limit");
    expect(r.stdout).toMatch(/\| Resources \| 1500 \| 0 \| 0 \|/);
    expect(r.stdout).toMatch(/more line\(s\) cut to fit the comment limit/);
  });
});
