/**
 * Vault lease metadata in the store, and what it is for: a reconciler process killed with SIGKILL cannot give
 * its Vault lease back; the next one finds the record, revokes that lease when it logs in for the same pair,
 * and records its own. A graceful stop gives everything back and leaves no record. Against the Vault test
 * server (JWT auth, leases tied to tokens, sys/leases/revoke as the role's policy grants it).
 */
import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { eventually, startCli } from '../support/cli-process.ts';
import { type CredEnv, seedSources, startCredEnv, TRUST_DOMAIN, WORKLOAD } from '../support/cred-env.ts';
import { scratch } from '../support/scratch.ts';

describe('Vault leases across a crash', () => {
  const tmp = scratch('leases');
  let env: CredEnv;
  const values: string[] = [];

  beforeAll(async () => {
    env = await startCredEnv();
    // Every value the test Vault hands out, to look for it afterwards.
    const engine = env.vaultSecrets['openai/creds/riptides-role']!;
    const generate = engine.generate;
    engine.generate = () => {
      const v = generate();
      values.push(String(v.api_key));
      return v;
    };
  });
  afterAll(async () => {
    await env?.close();
    tmp.cleanup();
  });

  it('records the lease, revokes the one a killed reconciler left, and leaves none after a graceful stop', async () => {
    const repo = join(tmp.dir, 'policy');
    mkdirSync(repo);
    const source = seedSources(env).vault;
    writeFileSync(join(repo, 'riptides.config.yaml'), `trustDomain: ${TRUST_DOMAIN}\n`);
    writeFileSync(
      join(repo, 'policy.yaml'),
      `apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata: { name: assistant, namespace: riptides-system }
spec:
  workloadID: ${WORKLOAD}
  scope: { daemonGroup: { id: riptides/daemongroup/leases } }
  selectors: [{ process:name: assistant }]
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialSource
metadata: { name: ${source.name}, namespace: riptides-system }
spec:
  vault: ${JSON.stringify(source.vault)}
---
apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata: { name: assistant-openai, namespace: riptides-system }
spec:
  workloadID: ${WORKLOAD}
  credentialSource: ${source.name}
  propagation: { sysfs: {} }
`,
    );
    // The reconciler signs with the CA whose discovery document Vault trusts.
    const state = join(tmp.dir, 'state');
    mkdirSync(state, { mode: 0o700 });
    cpSync(join(env.dir, 'ca'), join(state, 'ca'), { recursive: true });
    const caFile = join(tmp.dir, 'ca.pem');
    writeFileSync(caFile, env.ca);
    const start = () =>
      startCli([
        'reconciler',
        '--repo',
        repo,
        '--listen',
        '127.0.0.1:0',
        '--state-dir',
        state,
        '--vault-ca',
        caFile,
        '--oidc-issuer',
        env.issuer.issuer,
        '--poll-interval',
        'off',
        '--secrets-dir',
        join(tmp.dir, 'no-secrets'),
      ]);
    const storedLeases = async () => {
      const store = await StateStore.open({ stateDir: state });
      try {
        return new Map(store.leases.entries());
      } finally {
        await store.close();
      }
    };

    const first = start();
    const [lease] = await eventually(
      () => (env.vault.liveLeases().length === 1 ? env.vault.liveLeases() : false),
      30_000,
      'a Vault lease',
    );
    // Killed outright: nothing is given back.
    await first.stop('SIGKILL');
    expect(env.vault.liveLeases()).toEqual([lease]);
    const recorded = await storedLeases();
    expect([...recorded.keys()]).toEqual([lease]);
    expect(recorded.get(lease!)).toMatchObject({
      source: source.name,
      workloadID: WORKLOAD,
      renewable: true,
      fingerprint: expect.stringMatching(/^hmac-sha256:[0-9a-f]{16}$/),
    });

    const second = start();
    // The orphan is revoked once the same pair logs in again; the new lease is the only one alive.
    await eventually(
      () => env.vault.revokedLeases().includes(lease!) && env.vault.liveLeases().length === 1,
      30_000,
      'the orphan revoked and a new lease',
    );
    const [fresh] = env.vault.liveLeases();
    expect(fresh).not.toBe(lease);
    await second.waitForLog((l) => l.msg === 'revoked a Vault lease left by an earlier run', 10_000);
    expect(await second.stop('SIGTERM')).toBe(0);
    // A graceful stop releases the pair: its lease is revoked and its record gone.
    expect(env.vault.liveLeases()).toEqual([]);
    expect((await storedLeases()).size).toBe(0);

    // SIGTERM while starting (usually before 'serving agents'), Vault slow to answer the login the restored
    // revision needs: the start is let finish and stopped gracefully, exit 0, nothing left to the next run.
    env.vault.mode = 'slow';
    env.vault.delayMs = 1500;
    const third = start();
    await third.waitForLog((l) => l.msg === 'serving the last applied revision', 30_000);
    const stopping = third.stop('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    env.vault.mode = 'none';
    expect(await stopping).toBe(0);
    expect(env.vault.liveLeases()).toEqual([]);
    expect((await storedLeases()).size).toBe(0);

    expect(values.length).toBeGreaterThanOrEqual(2);
    const files = readdirSync(state, { recursive: true, withFileTypes: true }).filter((f) => f.isFile());
    for (const text of [
      ...files.map((f) => readFileSync(join(f.parentPath, f.name)).toString('latin1')),
      first.output(),
      second.output(),
      third.output(),
    ])
      for (const v of values) expect(text).not.toContain(v);
  }, 120_000);
});
