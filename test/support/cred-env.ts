/**
 * A complete credentials environment on loopback for tests and the benchmark: a CA + JWT issuer (the real
 * identity authority) with its discovery document served over HTTPS, and the Vault, STS and Kubernetes API
 * test servers configured to trust it. Everything is TLS with a throwaway CA.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { CredentialManagerOptions } from '../../reconciler/credentials/manager.ts';
import type {
  AwsSourceSpec,
  KubernetesSourceSpec,
  VaultSourceSpec,
} from '../../reconciler/credentials/types.ts';
import { type Authority, initAuthority } from '../../reconciler/identity/authority.ts';
import { createOidcDiscoveryHandler } from '../../reconciler/identity/oidc-discovery.ts';
import { KubernetesTestServer } from '../servers/kubernetes.ts';
import { OidcIssuerServer } from '../servers/oidc-issuer.ts';
import { StsTestServer } from '../servers/sts.ts';
import {
  type VaultJwtRole,
  type VaultPolicyRule,
  type VaultSecretEngine,
  VaultTestServer,
} from '../servers/vault.ts';
import { testTls } from './test-tls.ts';

export const TRUST_DOMAIN = 'example.org';
export const WORKLOAD = 'support-assistant/app/assistant-api';
export const SPIFFE_ID = `spiffe://${TRUST_DOMAIN}/${WORKLOAD}`;
export const KUBE_TOKEN = 'reconciler-sa-token';
export const ROLE_ARN = 'arn:aws:iam::123456789012:role/bedrock-pra-user-role-wif';
export const OPEN_ROLE_ARN = 'arn:aws:iam::123456789012:role/any-workload';

export interface CredEnv {
  authority: Authority;
  issuer: OidcIssuerServer;
  vault: VaultTestServer;
  sts: StsTestServer;
  kube: KubernetesTestServer;
  /** Mutable: tests add engines and roles before they ensure a source. */
  vaultSecrets: Record<string, VaultSecretEngine>;
  vaultRoles: Record<string, VaultJwtRole>;
  kubeconfigPath: string;
  dir: string;
  ca: string;
  managerOptions(extra?: Partial<CredentialManagerOptions>): CredentialManagerOptions;
  close(): Promise<void>;
}

export function dynamicKey(prefix = 'sk-'): () => Record<string, string> {
  return () => ({ api_key: `${prefix}${randomBytes(16).toString('hex')}`, org: 'acme' });
}

export async function startCredEnv(): Promise<CredEnv> {
  const dir = mkdtempSync(join(tmpdir(), 'riptides-cred-'));
  const ca = testTls().ca;
  const issuer = await new OidcIssuerServer().start();
  const authority = await initAuthority({
    trustDomain: TRUST_DOMAIN,
    dir: join(dir, 'ca'),
    issuer: issuer.issuer,
  });
  issuer.handler = createOidcDiscoveryHandler(authority.jwt);

  // The policy the README documents for the role: read the secret, revoke its leases (renewing them and
  // revoking the token itself come with Vault's default policy).
  const vaultPolicies: Record<string, VaultPolicyRule[]> = {
    'riptides-credentials': [
      { path: '*', capabilities: ['read'] },
      { path: 'sys/leases/revoke', capabilities: ['update'] },
    ],
    'read-only': [{ path: '*', capabilities: ['read'] }],
  };
  const policies = ['riptides-credentials'];
  const vaultRoles: Record<string, VaultJwtRole> = {
    'openai-apikeys': {
      boundAudiences: ['example-audience'],
      boundSubject: SPIFFE_ID,
      tokenTtl: 3600,
      tokenPolicies: policies,
    },
    'any-workload': { boundAudiences: ['example-audience'], tokenTtl: 3600, tokenPolicies: policies },
  };
  const vaultSecrets: Record<string, VaultSecretEngine> = {
    'openai/creds/riptides-role': {
      leaseDuration: 3600,
      maxTtl: 7200,
      renewable: true,
      generate: dynamicKey(),
    },
  };
  const vault = await new VaultTestServer({
    jwtMounts: {
      jwt: { oidcDiscoveryUrl: issuer.issuer, oidcDiscoveryCa: ca, roles: vaultRoles },
      jwt_production: { oidcDiscoveryUrl: issuer.issuer, oidcDiscoveryCa: ca, roles: vaultRoles },
    },
    secrets: vaultSecrets,
    policies: vaultPolicies,
  }).start();
  const sts = await new StsTestServer({
    providers: [{ issuer: issuer.issuer, ca, clientIds: ['sts.amazonaws.com'] }],
    roles: { [ROLE_ARN]: { sub: SPIFFE_ID, maxSessionDuration: 43200 }, [OPEN_ROLE_ARN]: {} },
  }).start();
  const kube = await new KubernetesTestServer({
    [KUBE_TOKEN]: {
      name: 'system:serviceaccount:riptides-system:reconciler',
      namespaces: ['riptides-system', 'apps'],
    },
    'other-token': { name: 'system:serviceaccount:default:nobody', namespaces: [] },
  }).start();
  const kubeconfigPath = join(dir, 'kubeconfig');
  writeFileSync(kubeconfigPath, kubeconfig(kube.url, ca, KUBE_TOKEN));

  return {
    authority,
    issuer,
    vault,
    sts,
    kube,
    vaultSecrets,
    vaultRoles,
    kubeconfigPath,
    dir,
    ca,
    managerOptions: (extra = {}) => ({
      minter: authority.jwt,
      trustDomain: TRUST_DOMAIN,
      kubernetes: { kubeconfigPath },
      vault: { ca },
      sts: { endpoint: `${sts.url}/`, ca },
      timeoutMs: 1500,
      backoff: { initialMs: 100, maxMs: 1000 },
      ...extra,
    }),
    async close() {
      await Promise.all([issuer.close(), vault.close(), sts.close(), kube.close()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function kubeconfig(server: string, ca: string, token: string): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      { name: 'test', cluster: { server, 'certificate-authority-data': Buffer.from(ca).toString('base64') } },
    ],
    users: [{ name: 'reconciler', user: { token } }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'reconciler' } }],
    'current-context': 'test',
  });
}

/** The seeds' sources (000 and 004), pointed at the test servers. */
export function seedSources(env: CredEnv): {
  vault: VaultSourceSpec;
  kubernetes: KubernetesSourceSpec;
  aws: AwsSourceSpec;
} {
  return {
    vault: {
      name: 'vault-openai-apikeys',
      vault: {
        address: env.vault.url,
        audience: ['example-audience'],
        jwtAuthMethodPath: 'jwt_production',
        path: 'openai/creds/riptides-role',
        role: 'openai-apikeys',
        type: { token: { source: 'api_key' } },
      },
    },
    kubernetes: {
      name: 'anthropic-bearer',
      kubernetes: { secretRef: { name: 'anthropic-api-key', key: 'token' }, type: 'BearerToken' },
    },
    aws: { name: 'aws-cred-1', aws: { roleArn: ROLE_ARN, audience: [], lifetime: '900s' } },
  };
}
