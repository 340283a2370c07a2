import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { checkEndpoint } from '../../credentials/http.ts';
import { fetchOnce } from '../../credentials/manager.ts';
import type { ProviderConfig } from '../../credentials/providers.ts';
import { CredentialError } from '../../credentials/types.ts';
import { openAuthority } from '../../identity/authority.ts';
import { namespaceOf } from '../../policy/resource-set.ts';
import { didYouMean } from '../../policy/suggest.ts';
import {
  type Command,
  type CommandIO,
  EXIT_FINDINGS,
  EXIT_OK,
  EXIT_USAGE,
  oneOf,
  parseFlags,
  requireFlag,
  subcommand,
  UsageError,
} from '../command.ts';
import { toProviderSpec } from '../credential-spec.ts';
import { openPolicyDir, POLICY_DIR_FLAGS } from '../policy-input.ts';

const help = `Usage: riptides-cli credentials check --repo DIR [--path SUBDIR] --source NAME [--workload WORKLOAD_ID]
                                    --ca-dir DIR [--kubeconfig FILE | --secrets-dir DIR] [--sts-endpoint URL]
                                    [--format text|json]

Fetches a CredentialSource's credential once, exactly as the reconciler would (the same provider code; JWTs
minted for the workload by the CA in --ca-dir), prints its STATE, expiry and fingerprint, and never its value.
A Vault lease obtained by the check is revoked afterwards. Use it to debug a source before you push.

Flags:
  --repo DIR, --path SUBDIR   the policy repository holding the CredentialSource (--trust-domain,
                              --max-file-size and --allow-plaintext-secrets as for validate; without
                              --trust-domain or riptides.config.yaml, the trust domain of the CA in --ca-dir)
  --source NAME               the CredentialSource's metadata.name
  --namespace NS              its namespace (default riptides-system)
  --workload WORKLOAD_ID      the workload to fetch for (default: the first binding of the source)
  --ca-dir DIR                the trust domain's CA directory (riptides-cli ca init)
  --kubeconfig FILE           Kubernetes access for kubernetes sources; without it, as kubectl: the files in
                              KUBECONFIG (merged), then ~/.kube/config, then the in-cluster service account
  --secrets-dir DIR           resolve kubernetes sources from Secret manifests in DIR instead
  --sts-endpoint URL          the STS endpoint (default: https://sts.amazonaws.com); plain http only for a
                              loopback address (a local emulator), with a warning
  --vault-ca FILE, --sts-ca FILE   CA bundles for self-hosted or test endpoints
  --timeout SECONDS           per network call (default 10)
  --format FORMAT             text (default) or json: {"source","workload","state","message","fingerprint","expiresAt"}

Exit status: 0 AVAILABLE, 1 not available (the reason is printed), 2 could not run.
`;

export const command: Command = {
  name: 'credentials',
  summary: 'check a CredentialSource: fetch once, print state, expiry and fingerprint',
  help,
  async run(argv: string[], io: CommandIO) {
    const [, rest] = subcommand(argv, ['check'] as const);
    const { values } = parseFlags(rest, {
      ...POLICY_DIR_FLAGS,
      source: { type: 'string' },
      namespace: { type: 'string' },
      workload: { type: 'string' },
      'ca-dir': { type: 'string' },
      kubeconfig: { type: 'string' },
      'secrets-dir': { type: 'string' },
      'sts-endpoint': { type: 'string' },
      'vault-ca': { type: 'string' },
      'sts-ca': { type: 'string' },
      timeout: { type: 'string' },
      format: { type: 'string' },
    });
    const sourceName = requireFlag(values.source, 'source');
    const caDir = resolve(io.cwd, requireFlag(values['ca-dir'], 'ca-dir'));
    const format = oneOf(values.format, ['text', 'json'] as const, 'format', 'text');
    if (values.kubeconfig && values['secrets-dir'])
      throw new UsageError('pass --kubeconfig or --secrets-dir, not both');
    const timeout = values.timeout === undefined ? 10 : Number(values.timeout);
    if (!(timeout > 0)) throw new UsageError('--timeout must be a number of seconds greater than 0');
    const namespace = values.namespace ?? 'riptides-system';
    const kubernetes = values['secrets-dir'] ? {} : kubernetesAccess(values.kubeconfig, io);
    if (values['sts-endpoint']) {
      try {
        const { warning } = checkEndpoint(values['sts-endpoint'], '--sts-endpoint');
        if (warning) io.stderr(`riptides-cli credentials: warning: ${warning}\n`);
      } catch (err) {
        if (err instanceof CredentialError) throw new UsageError(err.message);
        throw err;
      }
    }
    let authority: Awaited<ReturnType<typeof openAuthority>>;
    try {
      authority = await openAuthority(caDir);
    } catch (err) {
      io.stderr(`riptides-cli credentials: cannot open the CA in ${caDir}: ${(err as Error).message}\n`);
      return EXIT_USAGE;
    }

    const opened = await openPolicyDir(
      { ...values, repo: values.repo ? resolve(io.cwd, values.repo) : undefined },
      io,
      // The CA knows its trust domain: a repository without riptides.config.yaml is checked in it.
      authority.trustDomain,
    );
    if (!opened) return EXIT_USAGE;
    const { result, trustDomain } = opened;
    const source = result.resources.sources.find(
      (s) => s.value.metadata.name === sourceName && namespaceOf(s) === namespace,
    );
    if (!source) {
      const names = result.resources.sources.map((s) => s.value.metadata.name);
      io.stderr(
        `riptides-cli credentials: no valid CredentialSource "${sourceName}" in namespace ${namespace}${names.length ? `; ${didYouMean(sourceName, names) ?? `known: ${names.join(', ')}`}` : ''}\n`,
      );
      return EXIT_USAGE;
    }
    let workload = values.workload;
    if (!workload) {
      const bound = [...result.resources.bindings, ...result.resources.workloadCredentials].find(
        (b) => b.value.spec.credentialSource === sourceName && namespaceOf(b) === namespace,
      );
      if (!bound) {
        io.stderr(`riptides-cli credentials: no binding uses "${sourceName}"; pass --workload WORKLOAD_ID\n`);
        return EXIT_USAGE;
      }
      workload = bound.value.spec.workloadID;
    }
    if (authority.trustDomain !== trustDomain) {
      io.stderr(
        `riptides-cli credentials: the CA in ${caDir} is for trust domain ${authority.trustDomain}, the policy for ${trustDomain}\n`,
      );
      return EXIT_USAGE;
    }
    const readCa = (flag: 'vault-ca' | 'sts-ca') =>
      values[flag] ? readFileSync(resolve(io.cwd, values[flag]!)) : undefined;
    const vaultCa = readCa('vault-ca');
    const stsCa = readCa('sts-ca');
    const checked = await fetchOnce(toProviderSpec(source.value), workload, {
      minter: authority.jwt,
      trustDomain,
      timeoutMs: timeout * 1000,
      ...(values['secrets-dir'] ? { secretsDir: resolve(io.cwd, values['secrets-dir']) } : {}),
      kubernetes,
      ...(vaultCa ? { vault: { ca: vaultCa } } : {}),
      sts: {
        ...(values['sts-endpoint'] ? { endpoint: values['sts-endpoint'] } : {}),
        ...(stsCa ? { ca: stsCa } : {}),
      },
    });
    if (format === 'json') {
      io.stdout(
        `${JSON.stringify({ source: checked.source, workload: checked.workload, state: checked.state, message: checked.message ?? null, fingerprint: checked.fingerprint ?? null, expiresAt: checked.expiresAt ?? null })}\n`,
      );
    } else if (checked.state === 'AVAILABLE') {
      io.stdout(
        `CredentialSource ${checked.source} for ${checked.workload}: AVAILABLE, fingerprint ${checked.fingerprint}, ${checked.expiresAt ? `expires ${checked.expiresAt}` : 'no expiry'}\n`,
      );
    } else {
      io.stdout(
        `CredentialSource ${checked.source} for ${checked.workload}: ${checked.state}: ${checked.message ?? 'no reason given'}\n`,
      );
    }
    return checked.state === 'AVAILABLE' ? EXIT_OK : EXIT_FINDINGS;
  },
};

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
