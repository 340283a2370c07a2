import { resolve } from 'node:path';
import { toProviderSpec } from '../../credentials/credential-spec.ts';
import {
  FINGERPRINT_KEY_ENV,
  type FingerprintKey,
  FingerprintKeyError,
  resolveFingerprintKey,
} from '../../credentials/fingerprint.ts';
import { fetchOnce } from '../../credentials/manager.ts';
import { escapeText } from '../../encoding/escape.ts';
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
} from '../command.ts';
import {
  CREDENTIAL_PROVIDER_FLAGS,
  CREDENTIAL_PROVIDER_HELP,
  credentialProviderOptions,
} from '../credential-flags.ts';
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
${CREDENTIAL_PROVIDER_HELP}
  --state-dir DIR             the reconciler's state directory: fingerprints are made with its key
                              (DIR/fingerprint.key), so they compare with the reconciler's status
  --format FORMAT             text (default) or json: {"source","workload","state","message","fingerprint",
                              "fingerprintKey","expiresAt"}

Fingerprints are HMAC-SHA256 under a key (hmac-sha256:<16 hex>), so a printed one cannot be used to test
guesses of the value. The key: $${FINGERPRINT_KEY_ENV} (hex or base64, 32 bytes or more) when set, else
--state-dir's, else one made for this run alone (its fingerprints compare with nothing else).

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
      ...CREDENTIAL_PROVIDER_FLAGS,
      'state-dir': { type: 'string' },
      format: { type: 'string' },
    });
    const sourceName = requireFlag(values.source, 'source');
    const caDir = resolve(io.cwd, requireFlag(values['ca-dir'], 'ca-dir'));
    const format = oneOf(values.format, ['text', 'json'] as const, 'format', 'text');
    const namespace = values.namespace ?? 'riptides-system';
    // Every provider flag is checked before anything is opened or fetched.
    const providers = credentialProviderOptions(values, io, (warning) =>
      io.stderr(`riptides-cli credentials: warning: ${escapeText(warning)}\n`),
    );
    let authority: Awaited<ReturnType<typeof openAuthority>>;
    try {
      authority = await openAuthority(caDir);
    } catch (err) {
      io.stderr(
        `riptides-cli credentials: cannot open the CA in ${escapeText(caDir)}: ${escapeText((err as Error).message)}\n`,
      );
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
        `riptides-cli credentials: ${escapeText(`no valid CredentialSource "${sourceName}" in namespace ${namespace}${names.length ? `; ${didYouMean(sourceName, names) ?? `known: ${names.join(', ')}`}` : ''}`)}\n`,
      );
      return EXIT_USAGE;
    }
    let workload = values.workload;
    if (!workload) {
      const bound = [...result.resources.bindings, ...result.resources.workloadCredentials].find(
        (b) => b.value.spec.credentialSource === sourceName && namespaceOf(b) === namespace,
      );
      if (!bound) {
        io.stderr(
          `riptides-cli credentials: no binding uses "${escapeText(sourceName)}"; pass --workload WORKLOAD_ID\n`,
        );
        return EXIT_USAGE;
      }
      workload = bound.value.spec.workloadID;
    }
    if (authority.trustDomain !== trustDomain) {
      io.stderr(
        `riptides-cli credentials: ${escapeText(`the CA in ${caDir} is for trust domain ${authority.trustDomain}, the policy for ${trustDomain}`)}\n`,
      );
      return EXIT_USAGE;
    }
    // Nothing to check with is a check that could not run (exit 2), not a credential found unavailable (1).
    const k8s = providers.kubernetes;
    if (
      source.value.spec.kubernetes &&
      !providers.secretsDir &&
      !k8s?.kubeconfigPaths?.length &&
      !k8s?.inCluster
    ) {
      io.stderr(
        `riptides-cli credentials: CredentialSource ${escapeText(sourceName)} reads a Kubernetes Secret, and there is no Kubernetes access to read it with\n  hint: pass --kubeconfig FILE, set KUBECONFIG, create ~/.kube/config, run in the cluster, or pass --secrets-dir DIR\n`,
      );
      return EXIT_USAGE;
    }
    let fingerprintKey: FingerprintKey;
    try {
      fingerprintKey = resolveFingerprintKey({
        env: io.env,
        ...(values['state-dir'] ? { stateDir: resolve(io.cwd, values['state-dir']) } : {}),
      });
    } catch (err) {
      if (!(err instanceof FingerprintKeyError)) throw err;
      io.stderr(`riptides-cli credentials: ${escapeText(err.message)}\n  hint: ${escapeText(err.hint)}\n`);
      return EXIT_USAGE;
    }
    const checked = await fetchOnce(toProviderSpec(source.value), workload, {
      ...providers,
      minter: authority.jwt,
      trustDomain,
      fingerprintKey,
    });
    if (format === 'json') {
      io.stdout(
        `${JSON.stringify({ source: checked.source, workload: checked.workload, state: checked.state, message: checked.message ?? null, fingerprint: checked.fingerprint ?? null, fingerprintKey: checked.fingerprintKey ?? null, expiresAt: checked.expiresAt ?? null })}\n`,
      );
    } else {
      const what = `CredentialSource ${escapeText(checked.source)} for ${escapeText(checked.workload)}`;
      const keyNote =
        checked.fingerprintKey === 'ephemeral'
          ? ` (key of this run only; set ${FINGERPRINT_KEY_ENV} or pass --state-dir to compare with the reconciler's)`
          : '';
      io.stdout(
        checked.state === 'AVAILABLE'
          ? `${what}: AVAILABLE, fingerprint ${checked.fingerprint}${keyNote}, ${checked.expiresAt ? `expires ${checked.expiresAt}` : 'no expiry'}\n`
          : `${what}: ${checked.state}: ${escapeText(checked.message ?? 'no reason given')}\n`,
      );
    }
    return checked.state === 'AVAILABLE' ? EXIT_OK : EXIT_FINDINGS;
  },
};
