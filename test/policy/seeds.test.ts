/** Every seed scenario in policies/ parses, validates clean, and means what its seed describes. */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CompiledIdentity, NodeProgram } from '../../reconciler/policy/compile.ts';
import { readRepoConfig } from '../../reconciler/policy/config.ts';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { repoRoot } from '../support/shared.ts';

async function renderScenario(path: string) {
  const tree = loadPolicyDir({ repo: repoRoot, path });
  const { config } = readRepoConfig(tree.config!.path, tree.config!.text);
  const result = renderPolicy(tree.files, { trustDomain: config.trustDomain! }, tree.diagnostics);
  return { ...result, trustDomain: config.trustDomain! };
}

function identity(programs: NodeProgram[] | null, spiffeId: string): CompiledIdentity {
  const found = programs?.flatMap((p) => p.identities).find((i) => i.spiffeId === spiffeId);
  if (!found) throw new Error(`no identity ${spiffeId}`);
  return found;
}

describe.each([
  'policies',
  'policies/support-assistant',
  'policies/bearer-tokens',
  'policies/mtls',
  'policies/secretless-aws',
  'policies/quickstart',
])('%s', (path) => {
  it('validates with no diagnostics and compiles', async () => {
    const result = await renderScenario(path);
    expect(result.diagnostics).toEqual([]);
    expect(result.programs?.length).toBeGreaterThan(0);
  });
});

describe('what the seeds describe', () => {
  it('support assistant (000): PERMISSIVE+intercept app, MUTUAL Postgres, Vault and Kubernetes credentials, sysfs', async () => {
    const { programs, resources } = await renderScenario('policies/support-assistant');
    const app = identity(programs, 'spiffe://example.com/support-assistant/app/assistant-api');
    expect(app.tls).toEqual({ mode: 'PERMISSIVE', intercept: true });
    expect(app.selectors).toContainEqual(expect.objectContaining({ 'process:cmdline': ['next-server (v'] }));
    const byDest = Object.fromEntries(app.credentials.map((c) => [c.injection?.destinations[0]?.address, c]));
    expect(byDest['api.openai.com']).toMatchObject({
      source: { type: 'vault', supported: true },
      sysfs: expect.any(Object),
    });
    expect(byDest['api.anthropic.com']).toMatchObject({ source: { type: 'kubernetes' }, sysfs: null });
    expect(identity(programs, 'spiffe://example.com/support-assistant/app/postgres').tls.mode).toBe('MUTUAL');
    const vault = resources.sources.find((s) => s.value.spec.vault)!.value.spec.vault!;
    expect(vault).toMatchObject({
      jwtAuthMethodPath: 'jwt_production',
      path: 'openai/creds/riptides-role',
      role: 'openai-apikeys',
      type: { token: { source: 'api_key' } },
    });
  });

  it('bearer tokens (001): a Kubernetes Secret source injected toward its external Service', async () => {
    const { programs, resources } = await renderScenario('policies/bearer-tokens');
    const source = resources.sources.find((s) => s.value.spec.kubernetes)!.value.spec.kubernetes!;
    expect(source.type).toBe('BearerToken');
    const app = identity(programs, 'spiffe://example.com/my-namespace/app/my-workload');
    expect(app.tls.intercept).toBe(true);
    const destinations = app.credentials.flatMap((c) => c.injection?.destinations ?? []);
    expect(destinations.map((d) => `${d.address}:${d.port}`)).toContain('api.example.com:443');
    expect(destinations.every((d) => d.external)).toBe(true);
  });

  it('mTLS (002): backend MUTUAL admits only the frontend; the frontend pins the backend per egress rule', async () => {
    const { programs } = await renderScenario('policies/mtls');
    const backend = identity(programs, 'spiffe://example.com/myapp/app/backend-api');
    expect(backend.tls.mode).toBe('MUTUAL');
    expect(backend.allowedSpiffeIds.inbound).toEqual(['spiffe://example.com/myapp/app/frontend']);
    const frontend = identity(programs, 'spiffe://example.com/myapp/app/frontend');
    expect(frontend.tls.mode).toBe('PERMISSIVE');
    const toBackend = frontend.egress.find((r) =>
      r.destinations.some((d) => d.address === 'backend-api.myapp.svc.cluster.local'),
    )!;
    expect(toBackend).toMatchObject({
      tls: { mode: 'MUTUAL' },
      allowedSpiffeIds: ['spiffe://example.com/myapp/app/backend-api'],
    });
    expect(toBackend.destinations[0]!.port).toBe(3000);
  });

  it('secretless AWS (004): older form — agent scope, process name list, WorkloadCredential via credentialName', async () => {
    const { programs } = await renderScenario('policies/secretless-aws');
    expect(programs![0]!.scope.kind).toBe('agent');
    const app = identity(programs, 'spiffe://example.com/streamlit');
    expect(app.selectors).toEqual([{ 'process:name': ['streamlit'] }]);
    expect(app.credentials).toHaveLength(1);
    expect(app.credentials[0]).toMatchObject({
      via: 'WorkloadCredential',
      source: { type: 'aws' },
      injection: {
        destinations: [
          { address: 'bedrock-agent-runtime.eu-central-1.amazonaws.com', port: 443, external: true },
        ],
      },
    });
    expect(app.egress[0]!.tls.intercept).toBe(true);
  });

  it('quickstart: everything on one machine', async () => {
    const { programs } = await renderScenario('policies/quickstart');
    const addresses = programs!.flatMap((p) =>
      p.identities.flatMap((i) => [
        ...i.egress.flatMap((e) => e.destinations),
        ...i.credentials.flatMap((c) => c.injection?.destinations ?? []),
      ]),
    );
    expect(addresses.length).toBeGreaterThan(0);
    expect(addresses.every((d) => d.address === '127.0.0.1')).toBe(true);
  });
});

it('means the same alone as in the whole tree: every folder compiles to the identities and peers it has there', async () => {
  const whole = await renderScenario('policies');
  const byId = new Map(whole.programs!.flatMap((p) => p.identities.map((i) => [i.spiffeId, i] as const)));
  for (const folder of ['support-assistant', 'bearer-tokens', 'mtls', 'secretless-aws', 'quickstart']) {
    const alone = await renderScenario(`policies/${folder}`);
    for (const i of alone.programs!.flatMap((p) => p.identities)) {
      const there = byId.get(i.spiffeId);
      expect(there, `${folder}: ${i.spiffeId} in the whole tree`).toBeDefined();
      expect(there!.allowedSpiffeIds, `${folder}: ${i.spiffeId}`).toEqual(i.allowedSpiffeIds);
      // Every peer an allow list names is an identity of the tree: nothing points into another trust domain.
      for (const peer of [...i.allowedSpiffeIds.inbound, ...i.allowedSpiffeIds.outbound])
        expect(byId.has(peer), `${folder}: ${i.spiffeId} allows ${peer}`).toBe(true);
    }
  }
});

it('reads the trust domain from the configuration at the policy path root only', async () => {
  const tree = loadPolicyDir({ repo: join(repoRoot, 'policies') });
  expect(tree.config?.path).toBe('riptides.config.yaml');
  expect(tree.files.map((f) => f.path).some((p) => p.endsWith('riptides.config.yaml'))).toBe(false);
});
