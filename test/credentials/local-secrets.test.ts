import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CredentialManager, fetchOnce } from '../../reconciler/credentials/manager.ts';
import type { KubernetesSourceSpec } from '../../reconciler/credentials/types.ts';
import { type CredEnv, seedSources, startCredEnv, WORKLOAD } from '../support/cred-env.ts';
import { waitFor, waitForSource } from '../support/cred-wait.ts';

let env: CredEnv;
let dir: string;
let manager: CredentialManager | undefined;

beforeAll(async () => {
  env = await startCredEnv();
});
afterAll(async () => {
  await env.close();
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'riptides-secrets-'));
});
afterEach(async () => {
  await manager?.close();
  manager = undefined;
  rmSync(dir, { recursive: true, force: true });
});

const secretYaml = (name: string, token: string, extra = '') =>
  `apiVersion: v1\nkind: Secret\nmetadata:\n  name: ${name}\n  namespace: riptides-system\ntype: Opaque\nstringData:\n  token: "${token}"\n${extra}`;

function start(): CredentialManager {
  manager = new CredentialManager(env.managerOptions({ secretsDir: dir }));
  return manager;
}

describe('local secrets provider', () => {
  it('resolves secretRef from manifests (data base64 and stringData) in the secrets dir', async () => {
    writeFileSync(
      join(dir, 'anthropic.yaml'),
      `---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: anthropic-api-key\ndata:\n  token: ${Buffer.from('sk-ant-from-data\n').toString('base64')}\n`,
    );
    const m = start();
    const s = seedSources(env).kubernetes;
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    // No namespace in the manifest: it lands in the default namespace, riptides-system.
    expect(m.get(s.name, WORKLOAD)!.token).toBe('sk-ant-from-data');
  });

  it('refuses a token with a line break inside, which would split the header it is injected into', async () => {
    // A trailing newline is trimmed (kubectl create secret --from-file leaves one); one inside is not.
    const token = 'sk-first-line\r\nX-Injected: yes';
    writeFileSync(
      join(dir, 'split.yaml'),
      `apiVersion: v1\nkind: Secret\nmetadata:\n  name: anthropic-api-key\ndata:\n  token: ${Buffer.from(token).toString('base64')}\n`,
    );
    const r = await fetchOnce(seedSources(env).kubernetes, WORKLOAD, env.managerOptions({ secretsDir: dir }));
    expect(r.state).toBe('ERROR');
    expect(r.message).toMatch(
      /^the token from .+ holds a character that is not visible ASCII \(a line break, NUL, space or non-ASCII\), which could split the HTTP header/,
    );
    expect(r.message).not.toContain('sk-first-line');
    expect(r.message).not.toContain('X-Injected');
    // The running manager says the same and serves nothing.
    const m = start();
    const spec = seedSources(env).kubernetes;
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'ERROR');
    expect(m.get(spec.name, WORKLOAD)).toBeUndefined();
    expect(JSON.stringify(m.status())).not.toContain('X-Injected');
  });

  it('refuses a data value that is not base64, naming file and key, instead of decoding it leniently', async () => {
    writeFileSync(
      join(dir, 'bad.yaml'),
      'apiVersion: v1\nkind: Secret\nmetadata:\n  name: anthropic-api-key\ndata:\n  token: "placeholder token: not base64!"\n',
    );
    const r = await fetchOnce(seedSources(env).kubernetes, WORKLOAD, env.managerOptions({ secretsDir: dir }));
    expect(r.state).toBe('ERROR');
    expect(r.message).toBe(
      `Secret riptides-system/anthropic-api-key (secrets dir ${dir}, bad.yaml): data.token is not valid base64 (illegal base64 data at input byte 11), and the Kubernetes API server refuses such a Secret; base64-encode the value, or put it under stringData`,
    );
  });

  it('delivers an edit of the file, and withdraws the credential when the file is deleted', async () => {
    const file = join(dir, 'key.yaml');
    writeFileSync(file, secretYaml('api-key', 'first'));
    const m = start();
    const s: KubernetesSourceSpec = {
      name: 'local',
      kubernetes: { secretRef: { name: 'api-key', key: 'token' }, type: 'BearerToken' },
    };
    m.ensure(s, WORKLOAD);
    await waitForSource(m, s.name, 'AVAILABLE');
    writeFileSync(file, secretYaml('api-key', 'second'));
    await waitFor('the edit', () => m.get(s.name, WORKLOAD)?.token === 'second');
    expect(m.get(s.name, WORKLOAD)!.version).toBe(2);
    unlinkSync(file);
    const err = await waitForSource(m, s.name, 'ERROR');
    expect(err.message).toBe(
      `Secret riptides-system/api-key not found (secrets dir ${dir}); create it with a "token" key or fix secretRef.name`,
    );
    expect(m.get(s.name, WORKLOAD)).toBeUndefined();
  });

  it('gives the same messages as the kubernetes provider for a missing Secret and a missing key', async () => {
    writeFileSync(
      join(dir, 'k.yaml'),
      secretYaml('has-other-key', 'x', '  apikey: y\n').replace('token:', 'other:'),
    );
    env.kube.putSecret('riptides-system', 'has-other-key', { other: 'x', apikey: 'y' });
    const specs: KubernetesSourceSpec[] = [
      { name: 'missing', kubernetes: { secretRef: { name: 'nowhere', key: 'token' }, type: 'BearerToken' } },
      {
        name: 'nokey',
        kubernetes: { secretRef: { name: 'has-other-key', key: 'token' }, type: 'BearerToken' },
      },
    ];
    for (const s of specs) {
      const local = await fetchOnce(s, WORKLOAD, env.managerOptions({ secretsDir: dir }));
      const kube = await fetchOnce(s, WORKLOAD, env.managerOptions());
      expect(local.state).toBe('ERROR');
      expect(local.message!.replace(`secrets dir ${dir}`, 'WHERE')).toBe(
        kube.message!.replace(`Kubernetes API ${env.kube.url}`, 'WHERE'),
      );
    }
  });

  it('names a broken file by line and column without quoting it', async () => {
    writeFileSync(
      join(dir, 'broken.yaml'),
      'apiVersion: v1\nkind: Secret\nstringData:\n  token: "sk-secret-in-broken-file\n  - [\n',
    );
    const r = await fetchOnce(seedSources(env).kubernetes, WORKLOAD, env.managerOptions({ secretsDir: dir }));
    expect(r.state).toBe('ERROR');
    expect(r.message).toMatch(/these files could not be read: broken\.yaml:\d+:\d+: YAML [A-Z_]+/);
    expect(r.message).not.toContain('sk-secret-in-broken-file');
  });

  it('keeps a key named __proto__ as a key like any other, in data and in stringData', async () => {
    const file = join(dir, 'proto.yaml');
    const write = (value: string) =>
      writeFileSync(
        file,
        `apiVersion: v1\nkind: Secret\nmetadata:\n  name: odd\ndata:\n  __proto__: ${Buffer.from(`${value}-data`).toString('base64')}\n---\n` +
          `apiVersion: v1\nkind: Secret\nmetadata:\n  name: odd-string\nstringData:\n  __proto__: ${value}-string\n`,
      );
    write('first');
    const ref = (name: string, key: string): KubernetesSourceSpec => ({
      name: `${name}-${key}`,
      kubernetes: { secretRef: { name, key }, type: 'BearerToken' },
    });
    const m = start();
    for (const name of ['odd', 'odd-string']) m.ensure(ref(name, '__proto__'), WORKLOAD);
    await waitForSource(m, 'odd-__proto__', 'AVAILABLE');
    await waitForSource(m, 'odd-string-__proto__', 'AVAILABLE');
    expect(m.get('odd-__proto__', WORKLOAD)!.token).toBe('first-data');
    expect(m.get('odd-string-__proto__', WORKLOAD)!.token).toBe('first-string');
    // An edit of its value is a new version, delivered like any other.
    write('second');
    await waitFor('the edit', () => m.get('odd-__proto__', WORKLOAD)?.token === 'second-data');
    await waitFor('the edit', () => m.get('odd-string-__proto__', WORKLOAD)?.token === 'second-string');
    // And a key the Secret lacks is named with the keys it has.
    const r = await fetchOnce(ref('odd', 'token'), WORKLOAD, env.managerOptions({ secretsDir: dir }));
    expect(r.message).toBe(
      `Secret riptides-system/odd has no key "token" (secrets dir ${dir}; its keys: __proto__); fix secretRef.key or add the key`,
    );
  });

  it('refuses a Secret defined twice', async () => {
    writeFileSync(join(dir, 'a.yaml'), secretYaml('twice', 'one'));
    writeFileSync(join(dir, 'b.yml'), secretYaml('twice', 'two'));
    const s: KubernetesSourceSpec = {
      name: 't',
      kubernetes: { secretRef: { name: 'twice', key: 'token' }, type: 'BearerToken' },
    };
    const r = await fetchOnce(s, WORKLOAD, env.managerOptions({ secretsDir: dir }));
    expect(r.message).toBe(
      `Secret riptides-system/twice is defined in a.yaml and b.yml (secrets dir ${dir}); keep one`,
    );
  });
});
