/**
 * The credential providers' flags, shared by `credentials check` and the long-running `reconciler`, and their
 * translation into the credential manager's options.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { CredentialManagerOptions } from '../credentials/manager.ts';
import type { JwtMinter } from '../identity/jwt-svid.ts';
import { type CommandIO, UsageError } from './command.ts';

export const CREDENTIAL_PROVIDER_FLAGS = {
  kubeconfig: { type: 'string' },
  'secrets-dir': { type: 'string' },
  'sts-endpoint': { type: 'string' },
  'vault-ca': { type: 'string' },
  'sts-ca': { type: 'string' },
  timeout: { type: 'string' },
} as const;

export const CREDENTIAL_PROVIDER_HELP = `  --kubeconfig FILE           Kubernetes access for kubernetes sources (default: in-cluster)
  --secrets-dir DIR           resolve kubernetes sources from Secret manifests in DIR instead
  --sts-endpoint URL          the STS endpoint (default: https://sts.amazonaws.com)
  --vault-ca FILE, --sts-ca FILE   CA bundles for self-hosted or test endpoints
  --timeout SECONDS           per network call (default 10)`;

export interface CredentialProviderFlags {
  kubeconfig?: string | undefined;
  'secrets-dir'?: string | undefined;
  'sts-endpoint'?: string | undefined;
  'vault-ca'?: string | undefined;
  'sts-ca'?: string | undefined;
  timeout?: string | undefined;
}

export function credentialManagerOptions(
  values: CredentialProviderFlags,
  io: CommandIO,
  minter: JwtMinter,
  trustDomain: string,
): CredentialManagerOptions {
  if (values.kubeconfig && values['secrets-dir'])
    throw new UsageError('pass --kubeconfig or --secrets-dir, not both');
  const timeout = values.timeout === undefined ? 10 : Number(values.timeout);
  if (!(timeout > 0)) throw new UsageError('--timeout must be a number of seconds greater than 0');
  const readCa = (flag: 'vault-ca' | 'sts-ca') => {
    const path = values[flag];
    if (!path) return undefined;
    try {
      return readFileSync(resolve(io.cwd, path));
    } catch (err) {
      throw new UsageError(
        `cannot read --${flag} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
  };
  const vaultCa = readCa('vault-ca');
  const stsCa = readCa('sts-ca');
  return {
    minter,
    trustDomain,
    timeoutMs: timeout * 1000,
    ...(values['secrets-dir'] ? { secretsDir: resolve(io.cwd, values['secrets-dir']) } : {}),
    kubernetes: values.kubeconfig
      ? { kubeconfigPath: resolve(io.cwd, values.kubeconfig) }
      : { inCluster: true },
    ...(vaultCa ? { vault: { ca: vaultCa } } : {}),
    sts: {
      ...(values['sts-endpoint'] ? { endpoint: values['sts-endpoint'] } : {}),
      ...(stsCa ? { ca: stsCa } : {}),
    },
  };
}
