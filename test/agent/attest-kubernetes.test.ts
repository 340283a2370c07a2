import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { Attestor } from '../../agent/attest/attestor.ts';
import { augmentLines } from '../../agent/attest/collect.ts';
import { KubernetesPodSource, kubeConfigFrom } from '../../agent/attest/kubernetes.ts';
import { KubernetesTestServer } from '../servers/kubernetes.ts';
import { kubeconfig } from '../support/cred-env.ts';
import { waitFor } from '../support/cred-wait.ts';
import { copyBinary, moveToCgroup, start, uniqueName } from '../support/processes.ts';
import { scratch } from '../support/scratch.ts';
import { testTls } from '../support/test-tls.ts';

const TD = 'spiffe://example.org';
const NODE = 'node-a';
let kube: KubernetesTestServer;
let agentConfig: string;
let deniedConfig: string;
let cleanupDir: () => void;
let scratchDir: string;

beforeAll(async () => {
  kube = await new KubernetesTestServer({
    'agent-token': { name: 'system:serviceaccount:riptides-system:agent', namespaces: [], clusterPods: true },
    'secrets-only': {
      name: 'system:serviceaccount:riptides-system:reconciler',
      namespaces: ['riptides-system'],
    },
  }).start();
  const { dir, cleanup } = scratch('kube');
  cleanupDir = cleanup;
  scratchDir = dir;
  agentConfig = join(dir, 'agent.kubeconfig');
  deniedConfig = join(dir, 'denied.kubeconfig');
  writeFileSync(agentConfig, kubeconfig(kube.url, testTls().ca, 'agent-token'));
  writeFileSync(deniedConfig, kubeconfig(kube.url, testTls().ca, 'secrets-only'));
});
afterAll(async () => {
  await kube.close();
  cleanupDir();
});

/** A process in a pod's container cgroup (systemd driver layout), as the kubelet and containerd make it. */
function processInPod() {
  const uid = randomUUID();
  const containerId = randomBytes(32).toString('hex');
  const name = uniqueName();
  const p = start(copyBinary(name));
  const slice = `kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice`;
  moveToCgroup(
    p.pid,
    `${uniqueName('rt-test-')}/kubepods.slice/kubepods-besteffort.slice/${slice}/cri-containerd-${containerId}.scope`,
  );
  return { p, uid, containerId, name };
}

function source(config = agentConfig) {
  const pods = KubernetesPodSource.fromEnvironment({ kubeconfigPath: config, nodeName: NODE, env: {} });
  if (!pods) throw new Error('no Kubernetes source');
  return pods;
}

async function attestor(pods: KubernetesPodSource, identities: Parameters<Attestor['setIdentities']>[0]) {
  const a = new Attestor({ pods });
  const warnings: string[] = [];
  a.on('warning', (w) => warnings.push(w));
  a.setIdentities(identities);
  await a.start();
  onTestFinished(() => a.stop());
  return { a, warnings };
}

describe('attestation through the Kubernetes API', () => {
  it('cgroup → container ID → pod: namespace, name, labels and container name; the selector matches', async () => {
    const { p, uid, containerId } = processInPod();
    const ns = `prod-${randomBytes(3).toString('hex')}`;
    kube.putPod({
      namespace: ns,
      name: 'web-7d9f',
      uid,
      nodeName: NODE,
      labels: { app: 'web', tier: 'front' },
      containers: [{ name: 'nginx', id: containerId }],
    });
    // Another node's pod never reaches this agent.
    kube.putPod({
      namespace: ns,
      name: 'elsewhere',
      nodeName: 'node-b',
      labels: { app: 'web' },
      containers: [{ name: 'x', id: randomBytes(32).toString('hex') }],
    });
    // The Attestor makes its own API client from the options.
    const a = new Attestor({ kube: { kubeconfigPath: agentConfig, nodeName: NODE, env: {} } });
    onTestFinished(() => a.stop());
    a.setIdentities([
      {
        spiffeId: `${TD}/web`,
        selectors: [{ 'k8s:label:app': ['web'], 'k8s:pod:namespace': [ns], 'k8s:container:name': ['nginx'] }],
      },
    ]);
    await a.start();
    expect(a.podSource).toBeInstanceOf(KubernetesPodSource);
    await waitFor('pod attested', () => a.snapshot().byIdentity.get(`${TD}/web`)?.includes(p.pid));
    expect(a.labels(p.pid)).toMatchObject({
      'k8s:pod:namespace': [ns],
      'k8s:pod:name': ['web-7d9f'],
      'k8s:container:name': ['nginx'],
      'k8s:label:app': ['web'],
      'k8s:label:tier': ['front'],
      'k8s:pod:uid': [uid],
      'k8s:container:id': [containerId],
    });
    // `agent augment` shows the same, looking the pod up once.
    const lines = await augmentLines(p.pid, {
      kube: { kubeconfigPath: agentConfig, nodeName: NODE, env: {} },
    });
    expect(lines).toContain(`k8s:pod:name=web-7d9f`);
    expect(lines).toContain(`k8s:label:app=web`);
  });

  it('a process whose pod is not known yet has no identity until the watch brings the pod; label edits follow', async () => {
    const { p, uid, containerId } = processInPod();
    const ns = `dev-${randomBytes(3).toString('hex')}`;
    const { a } = await attestor(source(), [
      { spiffeId: `${TD}/api`, selectors: [{ 'k8s:label:app': ['api'], 'k8s:pod:namespace': [ns] }] },
      { spiffeId: `${TD}/api-v2`, selectors: [{ 'k8s:label:app': ['api-v2'], 'k8s:pod:namespace': [ns] }] },
    ]);
    await waitFor('pending', () => a.snapshot().processes.get(p.pid)?.pending);
    expect(a.snapshot().processes.get(p.pid)).toMatchObject({
      spiffeId: null,
      pending: expect.stringMatching(/no pod with UID/),
    });
    kube.putPod({
      namespace: ns,
      name: 'api-0',
      uid,
      nodeName: NODE,
      labels: { app: 'api' },
      containers: [{ name: 'api', id: containerId }],
    });
    await waitFor(
      'identity after the pod appeared',
      () => a.snapshot().processes.get(p.pid)?.spiffeId === `${TD}/api`,
    );
    kube.putPod({
      namespace: ns,
      name: 'api-0',
      uid,
      nodeName: NODE,
      labels: { app: 'api-v2' },
      containers: [{ name: 'api', id: containerId }],
    });
    await waitFor(
      'identity after the label edit',
      () => a.snapshot().processes.get(p.pid)?.spiffeId === `${TD}/api-v2`,
    );
    expect(a.snapshot().byIdentity.get(`${TD}/api`)).toBeUndefined();
  });

  it('relists after 410 Gone (history compacted while the watch was down) and keeps following', async () => {
    const { p, uid, containerId } = processInPod();
    const ns = `gone-${randomBytes(3).toString('hex')}`;
    kube.putPod({
      namespace: ns,
      name: 'w',
      uid,
      nodeName: NODE,
      labels: { app: 'one' },
      containers: [{ name: 'c', id: containerId }],
    });
    const pods = source();
    const { a } = await attestor(pods, [
      { spiffeId: `${TD}/one`, selectors: [{ 'k8s:label:app': ['one'] }] },
      { spiffeId: `${TD}/two`, selectors: [{ 'k8s:label:app': ['two'] }] },
    ]);
    await waitFor('first', () => a.snapshot().processes.get(p.pid)?.spiffeId === `${TD}/one`);
    const listsBefore = kube.count('pods-list');
    // The edit happens while the watch is cut, and the history that held it is compacted: the informer's
    // re-watch from its resourceVersion gets 410 and must relist to learn it.
    await kube.down();
    kube.putPod({
      namespace: ns,
      name: 'w',
      uid,
      nodeName: NODE,
      labels: { app: 'two' },
      containers: [{ name: 'c', id: containerId }],
    });
    kube.putPod({ namespace: ns, name: 'filler', nodeName: NODE, containers: [{ name: 'c' }] });
    kube.compact();
    await kube.up();
    await waitFor('after relist', () => a.snapshot().processes.get(p.pid)?.spiffeId === `${TD}/two`, 20_000);
    expect(kube.count('pods-list')).toBeGreaterThan(listsBefore);
  });

  it('says why when the agent may not list pods (403), and attests nothing from a pod it cannot see', async () => {
    const { p } = processInPod();
    const { a, warnings } = await attestor(source(deniedConfig), [
      { spiffeId: `${TD}/any`, selectors: [{ 'process:uid': ['0'] }] },
    ]);
    await waitFor('warning', () => warnings.find((w) => /403/.test(w)));
    expect(warnings.find((w) => /403/.test(w))).toMatch(/grant list and watch on pods/);
    // The process in a pod waits (fail closed), while a process outside any pod is attested as usual.
    expect(a.snapshot().processes.get(p.pid)).toMatchObject({ spiffeId: null });
    expect(a.snapshot().byIdentity.get(`${TD}/any`)).toContain(process.pid);
  });

  it('augment with an API that refuses or is not there still prints what /proc says, without crashing', async () => {
    const { p, uid } = processInPod();
    const unreachable = join(scratchDir, 'unreachable.kubeconfig');
    writeFileSync(unreachable, kubeconfig('https://127.0.0.1:1', testTls().ca, 'agent-token'));
    for (const config of [deniedConfig, unreachable]) {
      const lines = await augmentLines(p.pid, {
        kube: { kubeconfigPath: config, nodeName: NODE, timeoutMs: 2000, env: {} },
      });
      expect(lines).toContain(`k8s:pod:uid=${uid}`);
      expect(lines.some((l) => l.startsWith('k8s:pod:name='))).toBe(false);
      expect(lines.some((l) => l.startsWith('process:name='))).toBe(true);
    }
  });

  it('is configured by --kubeconfig, then KUBECONFIG, then the in-cluster service account, else not at all', () => {
    expect(kubeConfigFrom({ kubeconfigPath: agentConfig, env: { KUBECONFIG: deniedConfig } })?.source).toBe(
      agentConfig,
    );
    expect(kubeConfigFrom({ env: { KUBECONFIG: deniedConfig } })?.source).toBe(`KUBECONFIG=${deniedConfig}`);
    // In-cluster needs the service account token file, which this host does not have.
    expect(
      kubeConfigFrom({ env: { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' } }),
    ).toBeNull();
    expect(kubeConfigFrom({ env: { HOME: '/root' } })).toBeNull();
  });
});
