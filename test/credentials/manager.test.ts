import { inspect } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CredentialManager, fetchOnce } from '../../reconciler/credentials/manager.ts';
import { type CredentialSourceSpec, makeCredential } from '../../reconciler/credentials/types.ts';
import { type CredEnv, dynamicKey, seedSources, startCredEnv, WORKLOAD } from '../support/cred-env.ts';
import { waitFor, waitForSource } from '../support/cred-wait.ts';

let env: CredEnv;
let manager: CredentialManager | undefined;

beforeAll(async () => {
  env = await startCredEnv();
});
afterAll(async () => {
  await env.close();
});
afterEach(async () => {
  await manager?.close();
  manager = undefined;
});

describe('credential manager', () => {
  it('reports unsupported providers as ERROR "not yet supported"', async () => {
    manager = new CredentialManager(env.managerOptions());
    const gcp = {
      name: 'gcp-demo-acc-cs',
      gcp: { oidcProviderId: '//iam.googleapis.com/x' },
    } as CredentialSourceSpec;
    manager.ensure(gcp, WORKLOAD);
    const s = await waitForSource(manager, gcp.name, 'ERROR');
    expect(s.message).toBe(
      'CredentialSource gcp-demo-acc-cs: provider "gcp" is not yet supported (supported: kubernetes, vault, aws)',
    );
    expect(manager.status().bindings[0]).toMatchObject({ state: 'FAILED', phase: 'error' });
    const once = await fetchOnce(
      { name: 'o', oauth2: {} } as CredentialSourceSpec,
      WORKLOAD,
      env.managerOptions(),
    );
    expect(once).toEqual({
      source: 'o',
      workload: WORKLOAD,
      state: 'ERROR',
      message:
        'CredentialSource o: provider "oauth2" is not yet supported (supported: kubernetes, vault, aws)',
    });
  });

  it('says how to give kubernetes sources access when none is configured', async () => {
    const r = await fetchOnce(
      seedSources(env).kubernetes,
      WORKLOAD,
      env.managerOptions({ kubernetes: undefined }),
    );
    expect(r.message).toBe(
      'CredentialSource anthropic-bearer: kubernetes sources need Kubernetes access or a secrets dir: pass ' +
        '--kubeconfig, set KUBECONFIG, create ~/.kube/config, run in the cluster, or pass --secrets-dir',
    );
  });

  it('aggregates per-workload failures into the source status', async () => {
    manager = new CredentialManager(env.managerOptions());
    const spec = seedSources(env).vault; // bound to the assistant's SPIFFE ID
    manager.ensure(spec, WORKLOAD);
    manager.ensure(spec, 'other-team/app/intruder');
    await waitFor('both settled', () => manager!.status().bindings.every((b) => b.state !== 'PENDING'));
    const { sources, bindings } = manager.status();
    expect(bindings.map((b) => [b.workloadID, b.state])).toEqual([
      ['other-team/app/intruder', 'FAILED'],
      [WORKLOAD, 'OK'],
    ]);
    expect(sources[0]!.state).toBe('ERROR');
    expect(sources[0]!.message).toMatch(/^1 of 2 workloads failing; other-team\/app\/intruder: Vault https/);
  });

  it('warns when a pair starts failing, and logs retries failing the same way at debug', async () => {
    const lines: Array<{ level: string; message: string; attempt: unknown }> = [];
    const at = (level: string) => (message: string, fields?: Record<string, unknown>) =>
      lines.push({ level, message, attempt: fields?.attempt });
    manager = new CredentialManager(
      env.managerOptions({ logger: { info: at('info'), warn: at('warn'), debug: at('debug') } }),
    );
    manager.ensure(seedSources(env).vault, 'other-team/app/intruder'); // refused by the role, every time
    await waitFor(
      'three attempts',
      () => lines.filter((l) => l.message === 'credential fetch failed').length >= 3,
    );
    const failed = lines.filter((l) => l.message === 'credential fetch failed');
    expect(failed[0]).toEqual({ level: 'warn', message: 'credential fetch failed', attempt: 1 });
    expect(failed.slice(1).every((l) => l.level === 'debug')).toBe(true);
    expect(failed.map((l) => l.attempt).slice(0, 3)).toEqual([1, 2, 3]);
  });

  it('says whether a pair has had its first answer: not while it is pending, and not for a pair not kept', async () => {
    manager = new CredentialManager(env.managerOptions());
    const spec = seedSources(env).vault;
    expect(manager.pairSettled(spec.name, 'other-team/app/intruder')).toBeUndefined();
    manager.ensure(spec, 'other-team/app/intruder'); // refused by the role
    expect(manager.pairSettled(spec.name, 'other-team/app/intruder')).toBe(false);
    await waitFor('the refusal', () => manager!.pairSettled(spec.name, 'other-team/app/intruder') === true);
    expect(manager.status().bindings[0]).toMatchObject({ state: 'FAILED' });
  });

  it('never hands out a value past its expiry, whatever the timers do', async () => {
    let skew = 0;
    env.vaultSecrets.clocked = {
      leaseDuration: 600,
      maxTtl: 600,
      renewable: true,
      generate: dynamicKey(),
    };
    manager = new CredentialManager(env.managerOptions({ now: () => Date.now() + skew }));
    const spec = { ...seedSources(env).vault, name: 'clocked' };
    spec.vault = { ...spec.vault, path: 'clocked' };
    manager.ensure(spec, WORKLOAD);
    await waitForSource(manager, spec.name, 'AVAILABLE');
    expect(manager.get(spec.name, WORKLOAD)).toBeDefined();
    skew = 601_000;
    expect(manager.get(spec.name, WORKLOAD)).toBeUndefined();
    expect(manager.status().bindings[0]).toMatchObject({ state: 'FAILED', phase: 'expired' });
  });

  it('shows no pair once closed, even though its status was just asked for', async () => {
    env.kube.putSecret('riptides-system', 'closing', { token: 'closing-value' });
    const m = new CredentialManager(env.managerOptions());
    const spec = { ...seedSources(env).kubernetes, name: 'closing' };
    spec.kubernetes = { ...spec.kubernetes, secretRef: { ...spec.kubernetes.secretRef, name: 'closing' } };
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    expect(m.status().bindings).toHaveLength(1);
    await m.close();
    expect(m.status()).toEqual({ sources: [], bindings: [] });
  });

  it('replaces the session when a source spec changes, and ignores an unchanged ensure', async () => {
    env.kube.putSecret('riptides-system', 'spec-a', { token: 'from-a' });
    env.kube.putSecret('riptides-system', 'spec-b', { token: 'from-b' });
    manager = new CredentialManager(env.managerOptions());
    const a = {
      name: 'switch',
      kubernetes: { secretRef: { name: 'spec-a', key: 'token' }, type: 'BearerToken' as const },
    };
    manager.ensure(a, WORKLOAD);
    await waitFor('a', () => manager!.get('switch', WORKLOAD)?.token === 'from-a');
    const held = manager.get('switch', WORKLOAD)!;
    const gets = env.kube.count('list');
    // The same spec again (a reconcile that changed nothing): the session stays. The workload keeps the very
    // credential it holds, with no gap in which it has none, and nothing is fetched again.
    manager.ensure({ ...a }, WORKLOAD);
    expect(manager.get('switch', WORKLOAD)).toBe(held);
    expect(manager.status().bindings).toMatchObject([
      { workloadID: WORKLOAD, state: 'OK', version: held.version },
    ]);
    manager.ensure(
      { ...a, kubernetes: { ...a.kubernetes, secretRef: { name: 'spec-b', key: 'token' } } },
      WORKLOAD,
    );
    await waitFor('b', () => manager!.get('switch', WORKLOAD)?.token === 'from-b');
    // The changed spec made exactly one new read: spec-b's (a LIST, which its watch then starts from).
    expect(env.kube.count('list')).toBe(gets + 1);
  });

  it('keeps values out of JSON, inspect and spreads of a Credential', () => {
    const c = makeCredential(
      {
        kind: 'aws',
        aws: { accessKeyId: 'ASIAEXAMPLE', secretAccessKey: 'wJalrSECRET', sessionToken: 'IQoSESSION' },
      },
      { version: 3, obtainedAt: new Date(0), fingerprint: 'hmac-sha256:0123456789abcdef' },
    );
    expect(c.aws!.secretAccessKey).toBe('wJalrSECRET');
    for (const text of [JSON.stringify(c), inspect(c), JSON.stringify({ ...c }), String(Object.values(c))]) {
      expect(text).not.toMatch(/SECRET|SESSION|ASIAEXAMPLE/);
    }
    expect(JSON.parse(JSON.stringify(c))).toMatchObject({
      kind: 'aws',
      version: 3,
      fingerprint: c.fingerprint,
    });
  });
});
