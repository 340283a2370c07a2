/**
 * The credential providers' flags, shared by `credentials check` and the long-running `reconciler`, and their
 * translation into the credential manager's options: Kubernetes access found as kubectl finds it, the STS
 * endpoint held to https (plain http only for a loopback emulator, with a warning), CA bundles read once.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { checkEndpoint } from '../credentials/http.ts';
import type { CredentialManagerOptions } from '../credentials/manager.ts';
import type { ProviderConfig } from '../credentials/providers.ts';
import { CredentialError } from '../credentials/types.ts';
import { type CommandIO, UsageError } from './command.ts';
import { timeoutFlag } from './identity-flags.ts';

export const CREDENTIAL_PROVIDER_FLAGS = {
  kubeconfig: { type: 'string' },
  'secrets-dir': { type: 'string' },
  'sts-endpoint': { type: 'string' },
  'vault-ca': { type: 'string' },
  'sts-ca': { type: 'string' },
  timeout: { type: 'string' },
} as const;

export const CREDENTIAL_PROVIDER_HELP = `  --kubeconfig FILE           Kubernetes access for kubernetes sources; without it, as kubectl: the files in
                              KUBECONFIG (merged), then ~/.kube/config, then the in-cluster service account
  --secrets-dir DIR           resolve kubernetes sources from Secret manifests in DIR instead
  --sts-endpoint URL          the STS endpoint (default: https://sts.amazonaws.com); plain http only for a
                              loopback address (a local emulator), with a warning
  --vault-ca FILE, --sts-ca FILE   CA bundles for self-hosted or test endpoints
  --timeout DURATION          bounds each Vault and STS exchange as a whole (default 10s; seconds or a
                              duration such as 30s, 1m; at most 1h)`;

export interface CredentialProviderFlags {
  kubeconfig?: string | undefined;
  'secrets-dir'?: string | undefined;
  'sts-endpoint'?: string | undefined;
  'vault-ca'?: string | undefined;
  'sts-ca'?: string | undefined;
  timeout?: string | undefined;
}

/** What the provider flags decide: every credential manager option but the minter and the trust domain. */
export type CredentialProviderOptions = Omit<CredentialManagerOptions, 'minter' | 'trustDomain'>;

/**
 * Checks the provider flags and reads what they name, before anything is fetched: a flag that cannot work is a
 * UsageError (exit 2). `warn` receives what is accepted but worth saying (plain http to a loopback STS).
 */
export function credentialProviderOptions(
  values: CredentialProviderFlags,
  io: CommandIO,
  warn: (message: string) => void,
): CredentialProviderOptions {
  if (values.kubeconfig && values['secrets-dir'])
    throw new UsageError('pass --kubeconfig or --secrets-dir, not both');
  const timeout = timeoutFlag(values.timeout, 'timeout', 10);
  if (values['sts-endpoint']) {
    try {
      const { warning } = checkEndpoint(values['sts-endpoint'], '--sts-endpoint');
      if (warning) warn(warning);
    } catch (err) {
      if (err instanceof CredentialError) throw new UsageError(err.message);
      throw err;
    }
  }
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
    timeoutMs: timeout * 1000,
    ...(values['secrets-dir'] ? { secretsDir: resolve(io.cwd, values['secrets-dir']) } : {}),
    kubernetes: values['secrets-dir'] ? {} : kubernetesAccess(values.kubeconfig, io),
    ...(vaultCa ? { vault: { ca: vaultCa } } : {}),
    sts: {
      ...(values['sts-endpoint'] ? { endpoint: values['sts-endpoint'] } : {}),
      ...(stsCa ? { ca: stsCa } : {}),
    },
  };
}

/**
 * Kubernetes access as kubectl finds it: --kubeconfig (which must exist: a typo is a usage error, exit 2),
 * else every file KUBECONFIG lists (merged, missing ones skipped, as kubectl does), else ~/.kube/config,
 * else the in-cluster service account when running in a pod. None of these: no access (a kubernetes source
 * then says how to give it).
 */
function kubernetesAccess(
  flag: string | undefined,
  io: CommandIO,
): NonNullable<ProviderConfig['kubernetes']> {
  const isFile = (p: string) => {
    try {
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (flag !== undefined) {
    const path = resolve(io.cwd, flag);
    if (!isFile(path)) throw new UsageError(`--kubeconfig ${path}: no such file`);
    return { kubeconfigPaths: [path] };
  }
  const listed = (io.env.KUBECONFIG ?? '')
    .split(delimiter)
    .filter(Boolean)
    .map((p) => resolve(io.cwd, p));
  if (listed.length) {
    const present = listed.filter(isFile);
    if (!present.length) throw new UsageError(`KUBECONFIG names no file that exists (${listed.join(', ')})`);
    return { kubeconfigPaths: present };
  }
  const home = join(io.env.HOME || homedir(), '.kube', 'config');
  if (isFile(home)) return { kubeconfigPaths: [home] };
  if (io.env.KUBERNETES_SERVICE_HOST && existsSync('/var/run/secrets/kubernetes.io/serviceaccount/token'))
    return { inCluster: true };
  return {};
}
