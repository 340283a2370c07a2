/**
 * `npm run bench -- credentials`: 1,000 (source, workload) bindings over the three providers against the
 * loopback test servers (TLS, real JWT verification against our OIDC discovery + JWKS):
 *   334 Vault bindings (one source, 334 workloads: login + read each), 333 STS bindings (one source, 333
 *   workloads), 333 Kubernetes bindings (33 Secrets, ~10 workloads each: one watch per Secret).
 * Prints: time until all AVAILABLE; steady-state refresh load per server, measured over a window with short
 * TTLs and projected to production TTLs; memory.
 *
 * Projection: Vault renews at a fixed fraction of the lease (2/3, 0–10% earlier), so the per-binding renew
 * interval measured as a fraction of the short lease carries over to a 1 h lease unchanged. STS's rule is
 * not proportional (20% of the lifetime clamped to 1–5 min), so its production interval is computed from the
 * same refreshPoint() the provider uses; the short-TTL window checks that the provider follows it. Kubernetes
 * * costs nothing per edit-free minute but the watch resync (LIST + new watch every watchTimeoutSeconds per
 * Secret), measured with a 5 s timeout and scaled to the 300 s default.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { refreshPoint } from '../reconciler/credentials/aws.ts';
import { CredentialManager } from '../reconciler/credentials/manager.ts';
import { OPEN_ROLE_ARN, startCredEnv } from '../test/support/cred-env.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const VAULT_N = 334;
const STS_N = 333;
const SECRETS = 33;
const KUBE_N = 333;
const WINDOW_MS = 20_000;
const SHORT_LEASE_SEC = 6;
const SHORT_STS_SEC = 8;
const SHORT_WATCH_SEC = 5;
const PROD_LEASE_SEC = 3600;
const PROD_STS_SEC = 3600;
const PROD_WATCH_SEC = 300;

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

async function until(what: string, cond: () => boolean, timeoutMs = 120_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function run(phase: 'startup' | 'steady'): Promise<void> {
  const env = await startCredEnv();
  const short = phase === 'steady';
  env.vaultSecrets['bench/creds'] = {
    leaseDuration: short ? SHORT_LEASE_SEC : PROD_LEASE_SEC,
    maxTtl: 86_400,
    renewable: true,
    generate: () => ({ api_key: `k-${Math.random().toString(36).slice(2)}` }),
  };
  env.sts.expirationOverrideSec = short ? SHORT_STS_SEC : undefined;
  for (let i = 0; i < SECRETS; i++)
    env.kube.putSecret('riptides-system', `bench-${i}`, { token: `t-${i}-x` });

  const m = new CredentialManager(
    env.managerOptions({
      timeoutMs: 10_000,
      backoff: { initialMs: 200, maxMs: 5000 },
      kubernetes: {
        kubeconfigPath: env.kubeconfigPath,
        watchTimeoutSeconds: short ? SHORT_WATCH_SEC : PROD_WATCH_SEC,
      },
    }),
  );
  const vaultSource = {
    name: 'bench-vault',
    vault: {
      address: env.vault.url,
      audience: ['example-audience'],
      path: 'bench/creds',
      role: 'any-workload',
      type: { token: { source: 'api_key' } },
    },
  };
  const stsSource = { name: 'bench-aws', aws: { roleArn: OPEN_ROLE_ARN, lifetime: '3600s' } };
  const t0 = performance.now();
  for (let i = 0; i < VAULT_N; i++) m.ensure(vaultSource, `team-${i}/svc`);
  for (let i = 0; i < STS_N; i++) m.ensure(stsSource, `team-${i}/svc`);
  for (let i = 0; i < KUBE_N; i++)
    m.ensure(
      {
        name: `bench-k8s-${i % SECRETS}`,
        kubernetes: { secretRef: { name: `bench-${i % SECRETS}`, key: 'token' }, type: 'BearerToken' },
      },
      `team-${i}/svc`,
    );
  const total = VAULT_N + STS_N + KUBE_N;
  await until('all AVAILABLE', () => m.status().bindings.filter((b) => b.state === 'OK').length === total);
  const elapsed = performance.now() - t0;
  const failed = m.status().sources.filter((s) => s.state !== 'AVAILABLE');
  if (failed.length) throw new Error(`bench: sources not AVAILABLE: ${JSON.stringify(failed)}`);

  if (phase === 'startup') {
    gc();
    const mem = process.memoryUsage();
    console.log(
      `bindings: ${total} (vault ${VAULT_N}, aws ${STS_N}, kubernetes ${KUBE_N} over ${SECRETS} Secrets)`,
    );
    console.log(`time until all AVAILABLE: ${(elapsed / 1000).toFixed(2)} s`);
    console.log(
      `requests to reach it: vault ${env.vault.total} (login ${env.vault.count('login')}, read ${env.vault.count('read')}), ` +
        `sts ${env.sts.total}, kubernetes ${env.kube.total} (list ${env.kube.count('list')}, watch ${env.kube.count('watch')}), ` +
        `JWKS fetches ${env.issuer.total}`,
    );
    // The test servers share this heap; what closing the manager frees is the manager's own share.
    await m.close();
    gc();
    const own = mem.heapUsed - process.memoryUsage().heapUsed;
    console.log(
      `memory: RSS ${mb(mem.rss)} (whole process, test servers included); heap held by the manager for ` +
        `${total} bindings ${mb(own)} (${(own / total / 1024).toFixed(1)} KB per binding)`,
    );
  } else {
    // Let the first refresh cycle start, then count over the window.
    await new Promise((r) => setTimeout(r, 2000));
    env.vault.resetCounters();
    env.sts.resetCounters();
    env.kube.resetCounters();
    await new Promise((r) => setTimeout(r, WINDOW_MS));
    const perMin = (n: number) => (n * 60_000) / WINDOW_MS;
    const vaultRenews = env.vault.count('renew');
    const stsCalls = env.sts.count('assume');
    const kubeCalls = env.kube.total;
    const notOk = m.status().bindings.filter((b) => b.state !== 'OK').length;
    // Per-binding interval between refreshes, as a fraction of the lifetime it refreshes.
    const vaultFraction = ((WINDOW_MS / 1000) * (VAULT_N / vaultRenews)) / SHORT_LEASE_SEC;
    const stsInterval = (WINDOW_MS / 1000) * (STS_N / stsCalls);
    let prodStsInterval = 0;
    for (let i = 0; i < 1000; i++)
      prodStsInterval += refreshPoint(0, PROD_STS_SEC * 1000, Math.random) / 1000 / 1000;
    const shortStsInterval = (() => {
      let s = 0;
      for (let i = 0; i < 1000; i++) s += refreshPoint(0, SHORT_STS_SEC * 1000, Math.random) / 1000 / 1000;
      return s;
    })();
    console.log(
      `steady state, measured over ${WINDOW_MS / 1000} s with short TTLs (Vault lease ${SHORT_LEASE_SEC} s, ` +
        `STS credentials ${SHORT_STS_SEC} s, watch timeout ${SHORT_WATCH_SEC} s); bindings not OK during the window: ${notOk}`,
    );
    console.log(
      `  vault: ${perMin(env.vault.total).toFixed(0)} req/min (renew ${perMin(vaultRenews).toFixed(0)}/min, ` +
        `login ${perMin(env.vault.count('login')).toFixed(0)}/min); one renewal per binding every ` +
        `${vaultFraction.toFixed(2)} × lease → at a ${PROD_LEASE_SEC} s lease: ` +
        `${((VAULT_N / (vaultFraction * PROD_LEASE_SEC)) * 60).toFixed(1)} req/min`,
    );
    console.log(
      `  sts: ${perMin(stsCalls).toFixed(0)} req/min; one call per binding every ${stsInterval.toFixed(2)} s ` +
        `(rule: ${shortStsInterval.toFixed(2)} s at ${SHORT_STS_SEC} s) → at ${PROD_STS_SEC} s credentials ` +
        `(refresh every ${prodStsInterval.toFixed(0)} s by the rule): ${((STS_N / prodStsInterval) * 60).toFixed(1)} req/min`,
    );
    console.log(
      `  kubernetes: ${perMin(kubeCalls).toFixed(0)} req/min (list ${perMin(env.kube.count('list')).toFixed(0)}, watch ` +
        `${perMin(env.kube.count('watch')).toFixed(0)}) for ${SECRETS} Secrets → at a ${PROD_WATCH_SEC} s watch timeout: ` +
        `${((perMin(kubeCalls) * SHORT_WATCH_SEC) / PROD_WATCH_SEC).toFixed(1)} req/min; edits cost one watch event each`,
    );
  }
  await m.close();
  await env.close();
}

await run('startup');
await run('steady');
