/**
 * The credential providers against Vault, STS and Kubernetes API servers that redirect, never stop
 * answering, quote tokens, refuse revocations or compact their history: each case on loopback. The cases
 * that could hang or eat memory if a guard broke run the CLI in a child under `ulimit -v` and a timeout.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { CredentialManager, fetchOnce } from '../../reconciler/credentials/manager.ts';
import type { CredentialLogger, VaultSourceSpec } from '../../reconciler/credentials/types.ts';
import { StsTestServer } from '../servers/sts.ts';
import { runCliBounded } from '../support/bounded.ts';
import { capture } from '../support/cli.ts';
import {
  type CredEnv,
  kubeconfig,
  ROLE_ARN,
  SPIFFE_ID,
  seedSources,
  startCredEnv,
  WORKLOAD,
} from '../support/cred-env.ts';
import { waitFor, waitForSource } from '../support/cred-wait.ts';

let env: CredEnv;
let recorder: Server; // plain http: where redirects point; records every request it gets
const recorded: string[] = [];
let recorderUrl: string;
let repo: string;
let caFile: string;

const H = 'apiVersion: core.riptides.io/v1alpha1\n';

beforeAll(async () => {
  env = await startCredEnv();
  recorder = createServer((req, res) => {
    recorded.push(`${req.method} ${req.url} ${req.headers['x-vault-token'] ?? ''}`);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"auth":{"client_token":"attacker-token","lease_duration":3600}}');
  });
  await new Promise<void>((resolve) => recorder.listen(0, '127.0.0.1', resolve));
  recorderUrl = `http://127.0.0.1:${(recorder.address() as AddressInfo).port}`;
  caFile = join(env.dir, 'test-ca.pem');
  writeFileSync(caFile, env.ca);
  env.kube.putSecret('riptides-system', 'anthropic-api-key', { token: 'k8s-token-3f2e1d' });
  // A policy repository without riptides.config.yaml: the trust domain comes from the CA.
  repo = join(env.dir, 'trust-policy');
  mkdirSync(repo);
  writeFileSync(
    join(repo, 'policy.yaml'),
    [
      `${H}kind: CredentialSource\nmetadata:\n  name: vault-src\nspec:\n  vault:\n    address: ${env.vault.url}\n    audience:\n      - example-audience\n    jwtAuthMethodPath: jwt_production\n    path: openai/creds/riptides-role\n    role: openai-apikeys\n    type:\n      token:\n        source: api_key\n`,
      `${H}kind: CredentialSource\nmetadata:\n  name: aws-src\nspec:\n  aws:\n    roleArn: ${ROLE_ARN}\n    audience: []\n    lifetime: 900s\n`,
      `${H}kind: CredentialSource\nmetadata:\n  name: k8s-src\nspec:\n  kubernetes:\n    secretRef:\n      name: anthropic-api-key\n      key: token\n    type: BearerToken\n`,
    ].join('---\n'),
  );
});
afterAll(async () => {
  await new Promise<void>((resolve) => recorder.close(() => resolve()));
  await env?.close();
});
afterEach(async () => {
  for (const s of [env.vault, env.sts]) s.mode = 'none';
  env.vault.quoteTokenInErrors = false;
});

function vaultSource(extra: Partial<VaultSourceSpec['vault']> = {}, name = 'vault-src'): VaultSourceSpec {
  const base = seedSources(env).vault;
  return { name, vault: { ...base.vault, ...extra } };
}

function logger() {
  const lines: string[] = [];
  const log: CredentialLogger = {
    info: (m) => lines.push(`info ${m}`),
    warn: (m) => lines.push(`warn ${m}`),
  };
  return { lines, log };
}

const checkArgs = (source: string, ...extra: string[]) => [
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
  ...extra,
];

describe('Vault: redirects, quoted tokens, revocation on every path', () => {
  it('never follows an https Vault redirecting to http: the JWT-SVID never reaches the other server', async () => {
    env.vault.mode = 'redirect';
    env.vault.redirectTo = recorderUrl;
    const before = recorded.length;
    const r = await fetchOnce(vaultSource(), WORKLOAD, env.managerOptions());
    expect(r.state).toBe('ERROR');
    expect(r.message).toBe(
      `Vault ${env.vault.url}: login at auth/jwt_production/login as role "openai-apikeys" for ${SPIFFE_ID} failed: ` +
        `Vault answered 307 redirecting to ${recorderUrl}/v1/auth/jwt_production/login, another scheme; not followed, ` +
        "so the workload's JWT-SVID never leaves the server you configured; configure the address that answers directly",
    );
    expect(recorded.length).toBe(before);
  });

  it('keeps the Vault token and the JWT out of a 403 that quotes them', async () => {
    env.vault.quoteTokenInErrors = 'json';
    env.vaultRoles['no-read'] = { boundAudiences: ['example-audience'], tokenTtl: 3600, tokenPolicies: [] };
    const r = await fetchOnce(vaultSource({ role: 'no-read' }), WORKLOAD, env.managerOptions());
    expect(r.state).toBe('ERROR');
    expect(r.message).toContain(
      'reading openai/creds/riptides-role failed: HTTP 403 (permission denied: token *** may not read openai/creds/riptides-role)',
    );
    for (const value of env.vault.issuedValues) expect(r.message).not.toContain(value);
  });

  it('keeps the Vault token out of an HTML page that quotes it where the message is cut (at 300 characters)', async () => {
    env.vault.quoteTokenInErrors = 'html';
    env.vaultRoles['no-read'] = { boundAudiences: ['example-audience'], tokenTtl: 3600, tokenPolicies: [] };
    const r = await fetchOnce(vaultSource({ role: 'no-read' }), WORKLOAD, env.managerOptions());
    expect(r.state).toBe('ERROR');
    expect(r.message).toMatch(
      /reading openai\/creds\/riptides-role failed: HTTP 403 \(<html>.*\.\.\.token \*\*\* may not /,
    );
    const token = env.vault.issuedValues.find((v) => v.startsWith('hvs.'))!;
    expect(r.message).not.toContain(token.slice(0, 8));
  });

  it('revokes the lease it just obtained when the secret lacks the field (1 issued, 1 revoked)', async () => {
    env.vaultSecrets['no/field'] = {
      leaseDuration: 600,
      maxTtl: 600,
      renewable: true,
      generate: () => ({ other: 'x1y2z3w4' }),
    };
    const issued = env.vault.leases.size;
    const r = await fetchOnce(vaultSource({ path: 'no/field' }), WORKLOAD, env.managerOptions());
    expect(r.state).toBe('ERROR');
    expect(r.message).toContain('has no non-empty string field "api_key" (fields: other)');
    const mine = [...env.vault.leases.keys()].slice(issued);
    expect(mine).toHaveLength(1);
    expect(env.vault.revokedLeases()).toContain(mine[0]);
    expect(env.vault.liveLeases()).not.toContain(mine[0]);
  });

  it('gives a lease back by revoking its token when the policy lacks sys/leases/revoke, and says so once', async () => {
    env.vaultRoles.reader = {
      boundAudiences: ['example-audience'],
      tokenTtl: 3600,
      tokenPolicies: ['read-only'],
    };
    const { lines, log } = logger();
    const m = new CredentialManager(env.managerOptions({ logger: log }));
    const specs = [vaultSource({ role: 'reader' }, 'reader-1'), vaultSource({ role: 'reader' }, 'reader-2')];
    const issued = env.vault.leases.size;
    try {
      for (const s of specs) m.ensure(s, WORKLOAD);
      for (const s of specs) await waitForSource(m, s.name, 'AVAILABLE');
    } finally {
      await m.close();
    }
    const mine = [...env.vault.leases.keys()].slice(issued);
    expect(mine).toHaveLength(2);
    for (const id of mine) expect(env.vault.liveLeases()).not.toContain(id);
    expect(lines.filter((l) => l.includes('do not allow sys/leases/revoke'))).toEqual([
      'warn the policies of role "reader" do not allow sys/leases/revoke (update); leases are given back by revoking their token instead',
    ]);
  });

  it('leaves a lease to expire, said once, when the role may neither revoke it nor revoke its token', async () => {
    env.vaultRoles.bare = {
      boundAudiences: ['example-audience'],
      tokenTtl: 3600,
      tokenPolicies: ['read-only'],
      tokenNoDefaultPolicy: true,
    };
    const { lines, log } = logger();
    const m = new CredentialManager(env.managerOptions({ logger: log }));
    const specs = [vaultSource({ role: 'bare' }, 'bare-1'), vaultSource({ role: 'bare' }, 'bare-2')];
    const issued = env.vault.leases.size;
    try {
      for (const s of specs) m.ensure(s, WORKLOAD);
      for (const s of specs) await waitForSource(m, s.name, 'AVAILABLE');
    } finally {
      await m.close();
    }
    const mine = [...env.vault.leases.keys()].slice(issued);
    for (const id of mine) expect(env.vault.liveLeases()).toContain(id);
    expect(lines.filter((l) => l.includes('left to expire'))).toHaveLength(1);
  });
});

describe('STS endpoints', () => {
  let plainSts: StsTestServer;
  beforeAll(async () => {
    plainSts = await new StsTestServer({
      providers: [{ issuer: env.issuer.issuer, ca: env.ca, clientIds: ['sts.amazonaws.com'] }],
      roles: { [ROLE_ARN]: { sub: SPIFFE_ID } },
      plain: true,
    }).start();
  });
  afterAll(async () => plainSts?.close());

  it('accepts plain http for a loopback emulator, with a warning', async () => {
    const out = capture(env.dir);
    const code = await main(checkArgs('aws-src', '--sts-endpoint', `${plainSts.url}/`), out.io);
    expect(code).toBe(0);
    expect(out.stdout).toContain(
      'CredentialSource aws-src for support-assistant/app/assistant-api: AVAILABLE',
    );
    expect(out.stderr).toBe(
      `riptides-cli credentials: warning: --sts-endpoint ${plainSts.url}/ is plain http: accepted because it is a loopback address (a local emulator); credentials sent to it travel unencrypted on this host\n`,
    );
  });

  it('refuses plain http to any other host, and credentials in the URL, with exit 2', async () => {
    const out = capture(env.dir);
    expect(await main(checkArgs('aws-src', '--sts-endpoint', 'http://sts.example.com/'), out.io)).toBe(2);
    expect(out.stderr).toContain(
      '--sts-endpoint http://sts.example.com/ is plain http to a host that is not loopback: refused',
    );
    const withUser = capture(env.dir);
    expect(
      await main(
        checkArgs('aws-src', '--sts-endpoint', 'https://AKIAEXAMPLE:pw@sts.example.com/'),
        withUser.io,
      ),
    ).toBe(2);
    expect(withUser.stderr).not.toContain('AKIAEXAMPLE');
  });

  it('never follows an STS redirect to another origin', async () => {
    env.sts.mode = 'redirect';
    env.sts.redirectTo = recorderUrl;
    const before = recorded.length;
    const r = await fetchOnce(seedSources(env).aws, WORKLOAD, env.managerOptions());
    expect(r.state).toBe('ERROR');
    expect(r.message).toContain('AWS STS answered 307 redirecting to');
    expect(r.message).toContain(
      "not followed, so the workload's ID token never leaves the server you configured",
    );
    expect(recorded.length).toBe(before);
  });
});

describe('endless and trickling answers are cut off: at the deadline, and at the size cap', () => {
  const run = (...args: string[]) =>
    runCliBounded(args, { timeoutMs: 25_000, cwd: env.dir, env: { XDG_CACHE_HOME: join(env.dir, 'xdg') } });
  /** Peak RSS of the same check against a Vault that answers normally: "flat" means close to it. */
  let baseline: number;
  beforeAll(async () => {
    const normal = await run(...checkArgs('vault-src', '--vault-ca', caFile, '--timeout', '3'));
    expect(normal.status).toBe(0);
    baseline = normal.peakRssMiB!;
  }, 30_000);

  it('Vault answering an endless body: ERROR at the 1 MiB cap, memory flat', async () => {
    env.vault.mode = 'endless';
    const r = await run(...checkArgs('vault-src', '--vault-ca', caFile, '--timeout', '3'));
    expect(r.timedOut).toBe(false);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('failed: the answer is larger than 1048576 bytes; stopped reading it');
    expect(r.peakRssMiB).toBeLessThan(baseline + 64);
  });

  it('Vault trickling an answer: ERROR at --timeout, the request abandoned and the process gone', async () => {
    env.vault.mode = 'trickle';
    const r = await run(...checkArgs('vault-src', '--vault-ca', caFile, '--timeout', '2'));
    expect(r.timedOut).toBe(false);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain(
      'failed: no answer within 2000 ms (the request was abandoned at that deadline)',
    );
  });

  it('STS answering an endless body, or trickling: the same', async () => {
    env.sts.mode = 'endless';
    const endless = await run(
      ...checkArgs('aws-src', '--sts-endpoint', `${env.sts.url}/`, '--sts-ca', caFile, '--timeout', '3'),
    );
    expect(endless.timedOut).toBe(false);
    expect(endless.status).toBe(1);
    expect(endless.stdout).toContain('the answer is larger than 262144 bytes');
    expect(endless.peakRssMiB).toBeLessThan(baseline + 64);
    env.sts.mode = 'trickle';
    const slow = await run(
      ...checkArgs('aws-src', '--sts-endpoint', `${env.sts.url}/`, '--sts-ca', caFile, '--timeout', '2'),
    );
    expect(slow.timedOut).toBe(false);
    expect(slow.status).toBe(1);
    expect(slow.stdout).toContain('no answer within 2000 ms (the request was abandoned at that deadline)');
  });
});

describe('Kubernetes: compacted history (410 Gone) and relisting with backoff', () => {
  it('watches from the list resourceVersion, so a compacted history does not break a quiet Secret', async () => {
    env.kube.putSecret('riptides-system', 'quiet', { token: 'quiet-v1' });
    const m = new CredentialManager(env.managerOptions());
    const s = {
      name: 'quiet-src',
      kubernetes: { secretRef: { name: 'quiet', key: 'token' }, type: 'BearerToken' as const },
    };
    try {
      // Other objects change and the history is compacted: "quiet"'s own resourceVersion is long gone.
      for (let i = 0; i < 5; i++) env.kube.putSecret('riptides-system', `noise-${i}`, { token: `n${i}` });
      env.kube.compact();
      const expired = env.kube.expired;
      m.ensure(s, WORKLOAD);
      await waitForSource(m, s.name, 'AVAILABLE');
      await waitFor('the watch', () => env.kube.watchCount >= 1);
      env.kube.putSecret('riptides-system', 'quiet', { token: 'quiet-v2' });
      await waitFor('the edit', () => m.get(s.name, WORKLOAD)?.token === 'quiet-v2');
      expect(env.kube.expired).toBe(expired);
    } finally {
      await m.close();
    }
  });

  it('on an ERROR 410 event, lists again after a backoff wait and watches from there', async () => {
    env.kube.putSecret('riptides-system', 'churn', { token: 'churn-v1' });
    const m = new CredentialManager(env.managerOptions({ backoff: { initialMs: 400, maxMs: 1000 } }));
    const s = {
      name: 'churn-src',
      kubernetes: { secretRef: { name: 'churn', key: 'token' }, type: 'BearerToken' as const },
    };
    // Between the client's list and its watch, the store moves on and compacts: the watch gets 410.
    env.kube.afterNextList = () => {
      env.kube.putSecret('riptides-system', 'churn', { token: 'churn-v2' });
      env.kube.compact();
    };
    const start = env.kube.timeline.length;
    const expired = env.kube.expired;
    try {
      m.ensure(s, WORKLOAD);
      await waitFor(
        'the new value after relisting',
        () => m.get(s.name, WORKLOAD)?.token === 'churn-v2',
        8000,
      );
      await waitFor('a watch that holds', () => env.kube.watchCount >= 1);
      expect(env.kube.expired).toBe(expired + 1);
      const events = env.kube.timeline.slice(start);
      expect(events.map(([kind]) => kind).slice(0, 4)).toEqual(['list', 'watch', 'list', 'watch']);
      // The relist waited (backoff ≥ half the first delay), not a hot loop.
      expect(events[2]![1] - events[1]![1]).toBeGreaterThanOrEqual(200);
      env.kube.putSecret('riptides-system', 'churn', { token: 'churn-v3' });
      await waitFor('an edit through the new watch', () => m.get(s.name, WORKLOAD)?.token === 'churn-v3');
    } finally {
      await m.close();
    }
  });
});

describe('credentials check finds Kubernetes access as kubectl does', () => {
  const k8s = (extraEnv: Record<string, string>, ...extra: string[]) => {
    const out = capture(env.dir, extraEnv);
    return main(checkArgs('k8s-src', ...extra), out.io).then((code) => ({ code, ...out }));
  };

  it('uses KUBECONFIG (merging its files, the first that names a thing wins) when --kubeconfig is not given', async () => {
    const decoy = join(env.dir, 'decoy-kubeconfig');
    // Names another cluster and sets no current context: merged, it must not override the real one.
    writeFileSync(
      decoy,
      kubeconfig('https://127.0.0.1:1', env.ca, 'nope')
        .replace(/current-context: test\n/, '')
        .replace(/\btest\b/g, 'decoy')
        .replace(/\breconciler\b/g, 'decoy-user'),
    );
    const r = await k8s({ KUBECONFIG: `${decoy}:${env.kubeconfigPath}`, HOME: join(env.dir, 'nohome') });
    expect(r.stdout).toContain('CredentialSource k8s-src for support-assistant/app/assistant-api: AVAILABLE');
    expect(r.code).toBe(0);
  });

  it('then ~/.kube/config', async () => {
    const home = join(env.dir, 'home');
    mkdirSync(join(home, '.kube'), { recursive: true });
    writeFileSync(join(home, '.kube', 'config'), kubeconfig(env.kube.url, env.ca, 'reconciler-sa-token'));
    const r = await k8s({ HOME: home });
    expect(r.code).toBe(0);
  });

  it('says how to give access when there is none, instead of https://undefined:undefined', async () => {
    // Exit 2 up front (could not check), not 1 (a credential unavailable): see check-cli.test.ts.
    const r = await k8s({ HOME: join(env.dir, 'nohome') });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'pass --kubeconfig FILE, set KUBECONFIG, create ~/.kube/config, run in the cluster',
    );
    expect(r.stdout + r.stderr).not.toContain('undefined');
  });

  it('exits 2 for a --kubeconfig file that does not exist', async () => {
    const r = await k8s({ HOME: join(env.dir, 'nohome') }, '--kubeconfig', 'no-such-kubeconfig');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--kubeconfig ${join(env.dir, 'no-such-kubeconfig')}: no such file`);
  });

  it('takes the trust domain from --ca-dir when the repository names none', async () => {
    // The repository has no riptides.config.yaml and no --trust-domain is given: exit 0, not "no trust domain".
    const r = await k8s({}, '--kubeconfig', env.kubeconfigPath);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});
