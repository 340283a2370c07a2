/**
 * Secret hygiene across the whole suite's scenarios: every log line, status, event payload (as it would be
 * serialised or printed), fetchOnce result, console and stdout/stderr write is captured, and none may contain
 * any credential value the servers handed out (bearer tokens, Vault client tokens and secret data, AWS secret
 * keys and session tokens) or any JWT we minted.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CredentialManager, fetchOnce } from '../../reconciler/credentials/manager.ts';
import type { CredentialSourceSpec, KubernetesSourceSpec } from '../../reconciler/credentials/types.ts';
import type { JwtMinter } from '../../reconciler/identity/jwt-svid.ts';
import {
  type CredEnv,
  dynamicKey,
  kubeconfig,
  seedSources,
  startCredEnv,
  WORKLOAD,
} from '../support/cred-env.ts';
import { waitFor, waitForSource } from '../support/cred-wait.ts';

let env: CredEnv;
let secretsDir: string;

beforeAll(async () => {
  env = await startCredEnv();
  secretsDir = mkdtempSync(join(tmpdir(), 'riptides-hygiene-'));
});
afterAll(async () => {
  await env.close();
  rmSync(secretsDir, { recursive: true, force: true });
});

describe('secret hygiene', () => {
  it('no credential value appears in any log line, status, event, result or output', async () => {
    const captured: string[] = [];
    const minted: string[] = [];
    const localValues = ['sk-local-one-1234567', 'sk-local-two-7654321', 'sk-in-broken-file-000'];
    const writes = [vi.spyOn(process.stdout, 'write'), vi.spyOn(process.stderr, 'write')];
    const consoles = (['log', 'info', 'warn', 'error', 'debug'] as const).map((k) =>
      vi.spyOn(console, k).mockImplementation((...args: unknown[]) => {
        captured.push(args.map((a) => inspect(a)).join(' '));
      }),
    );
    const minter: JwtMinter = {
      issuer: env.authority.jwt.issuer,
      jwks: () => env.authority.jwt.jwks(),
      async mint(opts) {
        const jwt = await env.authority.jwt.mint(opts);
        minted.push(jwt);
        return jwt;
      },
    };
    const logger = {
      info: (msg: string, fields?: Record<string, unknown>) =>
        captured.push(`${msg} ${JSON.stringify(fields)}`),
      warn: (msg: string, fields?: Record<string, unknown>) =>
        captured.push(`${msg} ${JSON.stringify(fields)}`),
    };
    const opts = env.managerOptions({ minter, logger });
    const m = new CredentialManager(opts);
    m.on('update', (s, w, c) => captured.push(`${s} ${w} ${JSON.stringify(c)} ${inspect(c)} ${String(c)}`));
    const snap = () => captured.push(JSON.stringify(m.status()));
    const seeds = seedSources(env);

    // Vault: happy path with renewals, a capped lease, a refused login, an outage mid-lease.
    env.vaultSecrets['hyg/short'] = {
      leaseDuration: 2,
      maxTtl: 3,
      renewable: true,
      generate: dynamicKey('hyg-'),
    };
    m.ensure(seeds.vault, WORKLOAD);
    m.ensure(
      { ...seeds.vault, name: 'hyg-short', vault: { ...seeds.vault.vault, path: 'hyg/short' } },
      WORKLOAD,
    );
    m.ensure(seeds.vault, 'other-team/app/intruder');
    // AWS: happy path with refreshes, a rejected subject.
    env.sts.expirationOverrideSec = 3;
    m.ensure(seeds.aws, WORKLOAD);
    m.ensure(seeds.aws, 'other-team/app/intruder');
    // Kubernetes: happy, edit, delete, forbidden.
    env.kube.putSecret('riptides-system', 'anthropic-api-key', { token: 'sk-ant-hygiene-first' });
    m.ensure(seeds.kubernetes, WORKLOAD);
    m.ensure(
      {
        ...seeds.kubernetes,
        name: 'forbidden',
        kubernetes: { ...seeds.kubernetes.kubernetes, namespace: 'kube-system' },
      },
      WORKLOAD,
    );
    m.ensure({ name: 'gcp', gcp: {} } as CredentialSourceSpec, WORKLOAD);
    await waitFor('all settled', () => m.status().bindings.every((b) => b.state !== 'PENDING'));
    snap();
    env.kube.putSecret('riptides-system', 'anthropic-api-key', { token: 'sk-ant-hygiene-second' });
    await waitFor('the edit', () => m.get(seeds.kubernetes.name, WORKLOAD)?.version === 2);
    await waitFor('vault relogin', () => (m.get('hyg-short', WORKLOAD)?.version ?? 0) >= 2, 8000);
    await waitFor('sts refresh', () => (m.get(seeds.aws.name, WORKLOAD)?.version ?? 0) >= 2, 8000);
    snap();
    await env.vault.down();
    await waitForSource(m, 'hyg-short', 'ERROR');
    snap();
    await env.vault.up();
    env.kube.deleteSecret('riptides-system', 'anthropic-api-key');
    await waitForSource(m, seeds.kubernetes.name, 'ERROR');
    snap();

    // Local secrets and one-shot checks of every kind, good and bad.
    writeFileSync(
      join(secretsDir, 'ok.yaml'),
      `apiVersion: v1\nkind: Secret\nmetadata: {name: anthropic-api-key}\nstringData:\n  token: ${localValues[0]}\n  other: ${localValues[1]}\n`,
    );
    const local: KubernetesSourceSpec = seeds.kubernetes;
    captured.push(JSON.stringify(await fetchOnce(local, WORKLOAD, { ...opts, secretsDir })));
    writeFileSync(
      join(secretsDir, 'broken.yaml'),
      `apiVersion: v1\nkind: Secret\nstringData:\n  token: "${localValues[2]}\n - [`,
    );
    captured.push(
      JSON.stringify(
        await fetchOnce(
          {
            ...local,
            name: 'x',
            kubernetes: { ...local.kubernetes, secretRef: { name: 'nope', key: 'token' } },
          },
          WORKLOAD,
          { ...opts, secretsDir },
        ),
      ),
    );
    const badKubeconfig = join(secretsDir, 'kubeconfig');
    writeFileSync(badKubeconfig, kubeconfig(env.kube.url, env.ca, 'wrong-token'));
    for (const [s, w, o] of [
      [seeds.vault, WORKLOAD, opts],
      [seeds.vault, 'other-team/app/intruder', opts],
      [seeds.aws, WORKLOAD, opts],
      [seeds.aws, 'other-team/app/intruder', opts],
      [seeds.kubernetes, WORKLOAD, { ...opts, kubernetes: { kubeconfigPath: badKubeconfig } }],
    ] as const)
      captured.push(JSON.stringify(await fetchOnce(s, w, o)));

    for (const b of m.status().bindings) captured.push(b.message ?? '');
    await m.close();
    snap();
    for (const w of writes) for (const call of w.mock.calls) captured.push(String(call[0]));
    for (const s of [...writes, ...consoles]) s.mockRestore();

    const values = [
      ...env.vault.issuedValues,
      ...env.sts.issuedValues,
      ...env.kube.issuedValues,
      ...localValues,
      ...minted,
    ].filter((v) => v.length >= 8);
    // The scenarios really ran: values were issued and there is plenty of text to search.
    expect(env.vault.issuedValues.length).toBeGreaterThan(4);
    expect(env.sts.issuedValues.length).toBeGreaterThan(2);
    expect(minted.length).toBeGreaterThan(4);
    expect(captured.join('\n')).toMatch(/credential fetch failed/);
    const text = captured.join('\n');
    const leaked = values.filter((v) => text.includes(v));
    expect(leaked).toEqual([]);
  });
});
