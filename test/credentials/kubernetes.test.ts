import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CredentialManager, fetchOnce } from '../../reconciler/credentials/manager.ts';
import type { Credential, KubernetesSourceSpec } from '../../reconciler/credentials/types.ts';
import { type CredEnv, kubeconfig, seedSources, startCredEnv, WORKLOAD } from '../support/cred-env.ts';
import { bindingStatus, waitFor, waitForSource } from '../support/cred-wait.ts';

let env: CredEnv;
let manager: CredentialManager | undefined;
let n = 0;

beforeAll(async () => {
  env = await startCredEnv();
});
afterAll(async () => {
  await env.close();
});
afterEach(async () => {
  await manager?.close();
  manager = undefined;
  env.kube.mode = 'none';
  if (!env.kube.port) await env.kube.up();
  env.kube.resetCounters();
});

function start(extra = {}): CredentialManager {
  manager = new CredentialManager(env.managerOptions(extra));
  return manager;
}

/** A fresh Secret name per test, so tests do not see each other's objects. */
function spec(key = 'token', namespace?: string): KubernetesSourceSpec {
  n++;
  return {
    name: `k8s-${n}`,
    kubernetes: {
      secretRef: { name: `api-key-${n}`, key },
      type: 'BearerToken',
      ...(namespace ? { namespace } : {}),
    },
  };
}

describe('kubernetes provider', () => {
  it('reads the Secret key as a bearer token (seed 000)', async () => {
    env.kube.putSecret('riptides-system', 'anthropic-api-key', { token: 'sk-ant-first\n' });
    const m = start();
    const s = seedSources(env).kubernetes;
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    const cred = m.get(s.name, WORKLOAD)!;
    expect(cred.kind).toBe('bearer');
    expect(cred.token).toBe('sk-ant-first');
    expect(cred.expiresAt).toBeUndefined();
  });

  it('delivers an edit through the watch, without re-reading or re-creating anything', async () => {
    const s = spec();
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { token: 'v1-token' });
    const m = start();
    const seen: Array<Credential | undefined> = [];
    m.on('update', (_s, _w, c) => seen.push(c));
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    await waitFor('the watch', () => env.kube.watchCount === 1);
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { token: 'v2-token' });
    await waitFor('version 2', () => m.get(s.name, WORKLOAD)?.version === 2);
    expect(m.get(s.name, WORKLOAD)!.token).toBe('v2-token');
    expect(env.kube.count('list')).toBe(1);
    expect(seen.map((c) => c?.version)).toEqual([1, 2]);
  });

  it('withdraws the credential when the Secret is deleted, and picks it up again when re-created', async () => {
    const s = spec();
    const name = s.kubernetes.secretRef.name;
    env.kube.putSecret('riptides-system', name, { token: 'doomed' });
    const m = start();
    const seen: Array<string | undefined> = [];
    m.on('update', (_s, _w, c) => seen.push(c?.fingerprint));
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    await waitFor('the watch', () => env.kube.watchCount === 1);
    env.kube.deleteSecret('riptides-system', name);
    const err = await waitForSource(m, s.name, 'ERROR');
    expect(err.message).toBe(
      `Secret riptides-system/${name} not found (Kubernetes API ${env.kube.url}); create it with a "token" key or fix secretRef.name`,
    );
    expect(m.get(s.name, WORKLOAD)).toBeUndefined();
    expect(bindingStatus(m, s.name, WORKLOAD)?.state).toBe('FAILED');
    env.kube.putSecret('riptides-system', name, { token: 'reborn' });
    await waitForSource(m, s.name, 'AVAILABLE');
    expect(m.get(s.name, WORKLOAD)!.token).toBe('reborn');
    expect(seen).toHaveLength(3);
    expect(seen[1]).toBeUndefined();
  });

  it('reports a missing Secret, then sees it created (watch from no resourceVersion)', async () => {
    const s = spec();
    const m = start();
    m.ensure(s, WORKLOAD);
    const err = await waitForSource(m, s.name, 'ERROR');
    expect(err.message).toContain(`Secret riptides-system/${s.kubernetes.secretRef.name} not found`);
    await waitFor('the watch', () => env.kube.watchCount === 1);
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { token: 'late' });
    await waitForSource(m, s.name, 'AVAILABLE');
  });

  it('names the missing key and the keys there are', async () => {
    const s = spec('token');
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { apikey: 'x', other: 'y' });
    const m = start();
    m.ensure(s, WORKLOAD);
    const err = await waitForSource(m, s.name, 'ERROR');
    expect(err.message).toBe(
      `Secret riptides-system/${s.kubernetes.secretRef.name} has no key "token" (Kubernetes API ${env.kube.url}; ` +
        'its keys: apikey, other); fix secretRef.key or add the key',
    );
  });

  it('reads only keys the Secret has, whatever they are named', async () => {
    // A key named like a property every object has is missing like any other, never Object's function.
    for (const key of ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__']) {
      const s = spec(key);
      env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { token: 'x' });
      const r = await fetchOnce(s, WORKLOAD, env.managerOptions());
      expect(r.state, key).toBe('ERROR');
      expect(r.message).toBe(
        `Secret riptides-system/${s.kubernetes.secretRef.name} has no key "${key}" (Kubernetes API ${env.kube.url}; ` +
          'its keys: token); fix secretRef.key or add the key',
      );
    }
    // And a Secret that has such a key serves it.
    const s = spec('constructor');
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, {
      constructor: 'sk-ctor',
      other: 'y',
    });
    const m = start();
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    expect(m.get(s.name, WORKLOAD)!.token).toBe('sk-ctor');
  });

  it('reports 403 with the API server’s message, and 401 for rejected kubeconfig credentials', async () => {
    const s = spec('token', 'kube-system');
    const m = start();
    m.ensure(s, WORKLOAD);
    const err = await waitForSource(m, s.name, 'ERROR');
    expect(err.message).toContain(
      'HTTP 403 Forbidden (secrets is forbidden: User "system:serviceaccount:riptides-system:reconciler" cannot list resource "secrets" in API group "" in the namespace "kube-system"); grant get, list and watch',
    );
    const badConfig = join(env.dir, 'bad-kubeconfig');
    writeFileSync(badConfig, kubeconfig(env.kube.url, env.ca, 'stolen-token'));
    const r = await fetchOnce(
      spec(),
      WORKLOAD,
      env.managerOptions({ kubernetes: { kubeconfigPath: badConfig } }),
    );
    expect(r.state).toBe('ERROR');
    expect(r.message).toContain('HTTP 401 Unauthorized; the kubeconfig credentials were rejected');
  });

  it('shares one watch per Secret across workloads', async () => {
    const s = spec();
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { token: 'shared' });
    const m = start();
    for (const w of ['a/one', 'b/two', 'c/three']) m.ensure(s, w);
    await waitForSource(m, s.name, 'AVAILABLE');
    await waitFor('the watch', () => env.kube.watchCount === 1);
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { token: 'shared-2' });
    await waitFor('all three updated', () =>
      ['a/one', 'b/two', 'c/three'].every((w) => m.get(s.name, w)?.token === 'shared-2'),
    );
    expect(env.kube.watchCount).toBe(1);
    expect(env.kube.count('list')).toBe(1);
  });

  it('re-reads and watches again when the watch dies mid-way, missing no edit', async () => {
    const s = spec();
    const name = s.kubernetes.secretRef.name;
    env.kube.putSecret('riptides-system', name, { token: 'before' });
    const m = start();
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    await waitFor('the watch', () => env.kube.watchCount === 1);
    env.kube.dropConnections();
    env.kube.putSecret('riptides-system', name, { token: 'during-outage' });
    await waitFor('the edit', () => m.get(s.name, WORKLOAD)?.token === 'during-outage');
    await waitFor('a new watch', () => env.kube.watchCount === 1);
    env.kube.putSecret('riptides-system', name, { token: 'after' });
    await waitFor('the next edit', () => m.get(s.name, WORKLOAD)?.token === 'after');
  });

  it('keeps serving the token while the API server is down, reports it, and recovers', async () => {
    const s = spec();
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { token: 'steady' });
    const m = start();
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    await waitFor('the watch', () => env.kube.watchCount === 1);
    await env.kube.down();
    const err = await waitForSource(m, s.name, 'ERROR');
    expect(err.message).toContain('connection refused');
    expect(m.get(s.name, WORKLOAD)?.token).toBe('steady');
    expect(bindingStatus(m, s.name, WORKLOAD)?.state).toBe('OK');
    await env.kube.up();
    await waitForSource(m, s.name, 'AVAILABLE');
  });

  it('times out on a hanging API server', async () => {
    env.kube.mode = 'hang';
    const r = await fetchOnce(spec(), WORKLOAD, env.managerOptions());
    expect(r.state).toBe('ERROR');
    expect(r.message).toContain('no answer within 1500 ms');
  });

  it('refuses a Secret whose data is not base64, on read and through the watch, as the API server would', async () => {
    const s = spec();
    const name = s.kubernetes.secretRef.name;
    // Node's lenient decoder would turn this into bytes and serve them as a token.
    env.kube.serveCorruptSecret('riptides-system', name, { token: 'placeholder token: not base64!' });
    const once = await fetchOnce(s, WORKLOAD, env.managerOptions());
    expect(once.state).toBe('ERROR');
    expect(once.message).toContain(
      `Secret riptides-system/${name} (Kubernetes API ${env.kube.url}): data.token is not valid base64 (illegal base64 data at input byte 11)`,
    );
    expect(once.message).not.toContain('placeholder');

    env.kube.putSecret('riptides-system', name, { token: 'good-token' });
    const m = start();
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    await waitFor('the watch', () => env.kube.watchCount === 1);
    // Unpadded base64 is refused too (Go's StdEncoding requires padding).
    env.kube.serveCorruptSecret('riptides-system', name, { token: 'YQ' });
    await waitForSource(m, s.name, 'ERROR');
    expect(bindingStatus(m, s.name, WORKLOAD)?.message).toContain(
      'data.token is not valid base64 (illegal base64 data at input byte 0)',
    );
    // The last good value is kept: the API server would never have replaced it with this one.
    expect(m.get(s.name, WORKLOAD)?.token).toBe('good-token');
  });

  it('fetchOnce reads once and opens no watch', async () => {
    const s = spec();
    env.kube.putSecret('riptides-system', s.kubernetes.secretRef.name, { token: 'checked' });
    const r = await fetchOnce(s, WORKLOAD, env.managerOptions());
    expect(r).toMatchObject({ state: 'AVAILABLE', source: s.name, workload: WORKLOAD });
    expect(r.fingerprint).toMatch(/^hmac-sha256:[0-9a-f]{16}$/);
    expect(r.expiresAt).toBeUndefined();
    expect(env.kube.count('watch')).toBe(0);
  });
});
