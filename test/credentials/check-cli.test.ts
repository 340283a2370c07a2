/** `riptides-cli credentials check` against the Vault, STS and Kubernetes test servers, from a policy directory. */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { capture } from '../support/cli.ts';
import { type CredEnv, ROLE_ARN, startCredEnv, TRUST_DOMAIN, WORKLOAD } from '../support/cred-env.ts';

const BEARER = 'anthropic-test-token-0f9e8d7c6b5a';
let env: CredEnv;
let repo: string;
let caFile: string;

/** Every form a value could leak in: as is, base64 (a Basic header, a JWT segment) and URL-encoded. */
function forms(value: string): string[] {
  const bytes = Buffer.from(value);
  return [value, bytes.toString('base64'), bytes.toString('base64url'), encodeURIComponent(value)];
}

/**
 * Runs `credentials check` and asserts, for this run alone, that no value a server issued during it (the
 * Vault token and secret, the STS secret key and session token) nor the Kubernetes bearer token appears in
 * anything it printed. Returns what the servers issued, so a test can tell that there was something to hide.
 */
async function check(...args: string[]) {
  return checkWith({}, ...args);
}

async function checkWith(cliEnv: NodeJS.ProcessEnv, ...args: string[]) {
  const before = { vault: env.vault.issuedValues.length, sts: env.sts.issuedValues.length };
  const out = capture(process.cwd(), cliEnv);
  const code = await main(
    ['credentials', 'check', '--repo', repo, '--ca-dir', join(env.dir, 'ca'), '--timeout', '3', ...args],
    out.io,
  );
  const issued = {
    vault: env.vault.issuedValues.slice(before.vault),
    sts: env.sts.issuedValues.slice(before.sts),
  };
  const printed = out.stdout + out.stderr;
  for (const value of [BEARER, ...issued.vault, ...issued.sts].filter((v) => v.length >= 8))
    for (const form of forms(value))
      expect(printed, `${args.join(' ')} printed a credential`).not.toContain(form);
  expect(printed).not.toMatch(/ASIA[A-Z0-9]{12,}/);
  return { code, ...out, issued };
}

beforeAll(async () => {
  env = await startCredEnv();
  caFile = join(env.dir, 'test-ca.pem');
  writeFileSync(caFile, env.ca);
  env.kube.putSecret('riptides-system', 'anthropic-api-key', { token: BEARER });
  repo = join(env.dir, 'policy');
  mkdirSync(repo);
  const H = 'apiVersion: core.riptides.io/v1alpha1\n';
  writeFileSync(join(repo, 'riptides.config.yaml'), `trustDomain: ${TRUST_DOMAIN}\n`);
  writeFileSync(
    join(repo, 'policy.yaml'),
    [
      `${H}kind: WorkloadIdentity\nmetadata:\n  name: assistant\nspec:\n  workloadID: ${WORKLOAD}\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: node\n`,
      `${H}kind: CredentialSource\nmetadata:\n  name: vault-openai-apikeys\nspec:\n  vault:\n    address: ${env.vault.url}\n    audience:\n      - example-audience\n    jwtAuthMethodPath: jwt_production\n    path: openai/creds/riptides-role\n    role: openai-apikeys\n    type:\n      token:\n        source: api_key\n`,
      `${H}kind: CredentialSource\nmetadata:\n  name: anthropic-bearer\nspec:\n  kubernetes:\n    secretRef:\n      name: anthropic-api-key\n      key: token\n    type: BearerToken\n`,
      `${H}kind: CredentialSource\nmetadata:\n  name: aws-cred-1\nspec:\n  aws:\n    roleArn: ${ROLE_ARN}\n    audience: []\n    lifetime: 900s\n`,
      `${H}kind: CredentialSource\nmetadata:\n  name: missing-secret\nspec:\n  kubernetes:\n    secretRef:\n      name: not-there\n      key: token\n    type: BearerToken\n`,
      ...['vault-openai-apikeys', 'anthropic-bearer', 'aws-cred-1', 'missing-secret'].map(
        (s) =>
          `${H}kind: CredentialBinding\nmetadata:\n  name: bind-${s}\nspec:\n  workloadID: ${WORKLOAD}\n  credentialSource: ${s}\n  propagation:\n    sysfs: {}\n`,
      ),
    ].join('---\n'),
  );
});

afterAll(async () => {
  await env?.close();
});

describe('riptides-cli credentials check', () => {
  it('fetches a Vault credential with the workload JWT: AVAILABLE, expiry, fingerprint, lease revoked', async () => {
    const r = await check('--source', 'vault-openai-apikeys', '--vault-ca', caFile, '--format', 'json');
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(json).toMatchObject({
      source: 'vault-openai-apikeys',
      workload: WORKLOAD,
      state: 'AVAILABLE',
      message: null,
    });
    expect(json.fingerprint).toMatch(/^hmac-sha256:[0-9a-f]{16}$/);
    expect(Date.parse(json.expiresAt)).toBeGreaterThan(Date.now());
    expect(env.vault.revokedLeases()).toHaveLength(1);
    expect(env.vault.count('revoke')).toBe(1);
  });

  it('fetches a Kubernetes Secret through the API server', async () => {
    const r = await check('--source', 'anthropic-bearer', '--kubeconfig', env.kubeconfigPath);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^CredentialSource anthropic-bearer for support-assistant\/app\/assistant-api: AVAILABLE, fingerprint hmac-sha256:[0-9a-f]{16} \(key of this run only; set RIPTIDES_FINGERPRINT_KEY or pass --state-dir to compare with the reconciler's\), no expiry\n$/,
    );
  });

  it('keys fingerprints with the key from the environment, or from the state directory (created 0600)', async () => {
    const hmac = (key: Buffer) =>
      `hmac-sha256:${createHmac('sha256', key).update(BEARER).digest('hex').slice(0, 16)}`;
    const key = randomBytes(32);
    const fromEnv = await checkWith(
      { RIPTIDES_FINGERPRINT_KEY: key.toString('hex') },
      '--source',
      'anthropic-bearer',
      '--kubeconfig',
      env.kubeconfigPath,
      '--format',
      'json',
    );
    expect(JSON.parse(fromEnv.stdout)).toMatchObject({ fingerprint: hmac(key), fingerprintKey: 'env' });
    // A plain digest of the value is what a reader could test guesses against: it must not be shown.
    expect(fromEnv.stdout).not.toContain(createHash('sha256').update(BEARER).digest('hex').slice(0, 8));

    const stateDir = join(env.dir, 'state');
    const run = () =>
      check(
        '--source',
        'anthropic-bearer',
        '--kubeconfig',
        env.kubeconfigPath,
        '--state-dir',
        stateDir,
        '--format',
        'json',
      );
    const first = JSON.parse((await run()).stdout);
    const keyFile = join(stateDir, 'fingerprint.key');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(first).toMatchObject({
      fingerprint: hmac(Buffer.from(readFileSync(keyFile, 'utf8').trim(), 'hex')),
      fingerprintKey: 'state-dir',
    });
    expect(JSON.parse((await run()).stdout).fingerprint).toBe(first.fingerprint);

    chmodSync(keyFile, 0o644);
    const refused = await run();
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${keyFile} may be read by others (mode 644)`);
    expect(refused.stderr).toContain(`hint: chmod 600 ${keyFile}`);
  });

  it('fetches AWS keys from STS with the workload ID token', async () => {
    const r = await check(
      '--source',
      'aws-cred-1',
      '--sts-endpoint',
      `${env.sts.url}/`,
      '--sts-ca',
      caFile,
      '--format',
      'json',
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ state: 'AVAILABLE', workload: WORKLOAD });
  });

  it('reports ERROR with the reason and exits 1 when the Secret is missing', async () => {
    const r = await check('--source', 'missing-secret', '--kubeconfig', env.kubeconfigPath);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/missing-secret .*: ERROR: .*not-there/);
  });

  it('reports ERROR when STS refuses a workload the role does not trust', async () => {
    const r = await check(
      '--source',
      'aws-cred-1',
      '--workload',
      'someone/else',
      '--sts-endpoint',
      `${env.sts.url}/`,
      '--sts-ca',
      caFile,
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/ERROR/);
  });

  it('exits 2, not 1, when a Kubernetes source has no Kubernetes access to be checked with', async () => {
    const home = join(env.dir, 'home-without-kube');
    mkdirSync(home, { recursive: true });
    const r = await checkWith({ HOME: home }, '--source', 'anthropic-bearer');
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      'riptides-cli credentials: CredentialSource anthropic-bearer reads a Kubernetes Secret, and there is no Kubernetes access to read it with\n  hint: pass --kubeconfig FILE, set KUBECONFIG, create ~/.kube/config, run in the cluster, or pass --secrets-dir DIR\n',
    );
    // With access, the same source is checked: a finding about the credential, not about the command.
    const found = await checkWith(
      { HOME: home, KUBECONFIG: env.kubeconfigPath },
      '--source',
      'missing-secret',
    );
    expect(found.code).toBe(1);
    expect(found.stdout).toMatch(/missing-secret .*: ERROR: .*not-there/);
  });

  it('exits 2 for an unknown source, naming the close match', async () => {
    const r = await check('--source', 'vault-openai-apikey');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('did you mean "vault-openai-apikeys"?');
  });

  it('never prints the Vault token or secret, the AWS secret key or session token, or the bearer token', async () => {
    // Each run checks its own output (see check()); here each kind of secret is issued for certain, in both
    // formats, so that the check has something to find.
    const vault = await check('--source', 'vault-openai-apikeys', '--vault-ca', caFile);
    expect(vault.code).toBe(0);
    expect(vault.issued.vault.some((v) => v.startsWith('hvs.'))).toBe(true);
    expect(vault.issued.vault.some((v) => v.startsWith('sk-'))).toBe(true);
    const aws = await check(
      '--source',
      'aws-cred-1',
      '--sts-endpoint',
      `${env.sts.url}/`,
      '--sts-ca',
      caFile,
      '--format',
      'json',
    );
    expect(aws.code).toBe(0);
    expect(aws.issued.sts).toHaveLength(2);
    const kube = await check(
      '--source',
      'anthropic-bearer',
      '--kubeconfig',
      env.kubeconfigPath,
      '--format',
      'json',
    );
    expect(kube.code).toBe(0);
    expect(JSON.parse(kube.stdout).state).toBe('AVAILABLE');
  });
});
