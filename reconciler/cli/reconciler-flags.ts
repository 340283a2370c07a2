/**
 * The flags of the long-running reconciler, shared by `reconciler` and `up` (which runs the same runtime with
 * a local agent): flags → ReconcilerOptions, every flag checked before anything is started or written.
 */

import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { isLoopbackHost } from '../../kernel-module/loopback.ts';
import { DURATION_FORMS, parseDuration } from '../common/duration.ts';
import { apiPlainHttpRefusal } from '../http/server.ts';
import type { ReconcilerOptions } from '../loop/reconciler.ts';
import { credentialsFromEnv } from '../source/index.ts';
import { defaultStateDir } from '../store/state-dir.ts';
import { LOG_LEVELS, type LogLevel } from '../telemetry/logger.ts';
import { type CommandIO, oneOf, UsageError } from './command.ts';
import {
  CREDENTIAL_PROVIDER_FLAGS,
  CREDENTIAL_PROVIDER_HELP,
  credentialProviderOptions,
} from './credential-flags.ts';
import { DRIFT_FLAGS, DRIFT_HELP, driftSettingsFromFlags } from './drift-flags.ts';
import { durationFlag } from './identity-flags.ts';
import { POLICY_DIR_FLAGS, parseByteSize } from './policy-input.ts';
import { parseHostPort } from './state-dir.ts';

export const RECONCILER_FLAGS = {
  ...POLICY_DIR_FLAGS,
  ...CREDENTIAL_PROVIDER_FLAGS,
  ...DRIFT_FLAGS,
  branch: { type: 'string' },
  'state-dir': { type: 'string' },
  'agent-svid-ttl': { type: 'string' },
  'join-rate': { type: 'string' },
  'api-listen': { type: 'string' },
  'api-cert-file': { type: 'string' },
  'api-key-file': { type: 'string' },
  'webhook-secret-file': { type: 'string' },
  'poll-interval': { type: 'string' },
  'oidc-issuer': { type: 'string' },
  'apply-timeout': { type: 'string' },
  'git-ca-file': { type: 'string' },
  'git-timeout': { type: 'string' },
  'max-repo-size': { type: 'string' },
  'log-level': { type: 'string' },
} as const;

export const RECONCILER_HELP = `  --repo DIR|URL              the policy repository: an http(s) git URL, a local git repository (the commits
                              of its tracked branch), or a plain directory of policy files
  --path SUBDIR               the policy path inside it (default: the root)
  --branch BRANCH             the tracked branch (default: the checked-out one, else the default branch)
  --trust-domain TD           the trust domain (default: riptides.config.yaml); --max-file-size and
                              --allow-plaintext-secrets as for validate
  --state-dir DIR             store, CA, join tokens, API credentials, a remote's clone (default:
                              $RIPTIDES_STATE_DIR, else $XDG_STATE_HOME/riptides, else ~/.local/state/riptides)
  --agent-svid-ttl DURATION   lifetime of agent SVIDs (default 1h; agents renew at half of it)
  --join-rate N[/BURST]       join attempts admitted per source address: N a second, bursts of BURST (default
                              1/10, SPIRE's node attestation limit; raise it for many nodes behind one NAT)
  --api-listen HOST:PORT      the API for ctl, /metrics, /healthz, /readyz, webhooks and OIDC discovery
                              (default 127.0.0.1:0, written to STATE_DIR/api/endpoint.json; "off": none);
                              plain HTTP only on loopback, else give --api-cert-file and --api-key-file
  --webhook-secret-file FILE  enables push webhooks at /hooks/github|gitlab|gitea|generic with this shared
                              secret (at least 16 bytes; e.g. \`openssl rand -hex 32 > FILE\`)
  --poll-interval DURATION    poll the repository every DURATION plus up to 10% jitter (default 60s; "off")
  --oidc-issuer URL           the OIDC issuer of JWT-SVIDs (https; set when the CA is created, checked after);
                              its discovery document and JWKS are served under its path on the API
  --apply-timeout DURATION    longest wait for agents' ACKs after a push (default 10s)
  --git-ca-file FILE          CA bundle of a self-hosted HTTPS git server
  --git-timeout DURATION      longest network wait of a fetch (default 30s)
  --max-repo-size SIZE        refuse a remote repository larger than SIZE (default 512MiB)
  --log-level LEVEL           ${LOG_LEVELS.filter((l) => l !== 'silent').join(', ')} (default info)
${CREDENTIAL_PROVIDER_HELP}

${DRIFT_HELP}

Git credentials for an https repository come from the environment, as for plan: RIPTIDES_GIT_TOKEN, or
RIPTIDES_GIT_USERNAME and RIPTIDES_GIT_PASSWORD, or RIPTIDES_GIT_CREDENTIALS_FILE.`;

export type ReconcilerFlagValues = {
  [K in keyof typeof RECONCILER_FLAGS]?: (typeof RECONCILER_FLAGS)[K]['type'] extends 'boolean'
    ? boolean | undefined
    : string | undefined;
};

/** `off` or a duration in the one grammar → ms (`off` → 0). */
function durationOrOff(value: string | undefined, flag: string, fallbackMs: number): number {
  if (value === undefined) return fallbackMs;
  if (value === 'off') return 0;
  const seconds = parseDuration(value);
  if (seconds === null || seconds === 0)
    throw new UsageError(`--${flag} must be ${DURATION_FORMS} (more than zero), or "off" (got "${value}")`);
  return seconds * 1000;
}

function readFlagFile(io: CommandIO, path: string, flag: string): Buffer {
  try {
    return readFileSync(resolve(io.cwd, path));
  } catch (err) {
    throw new UsageError(`cannot read --${flag} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

export interface ParsedReconcilerFlags {
  options: Omit<ReconcilerOptions, 'agents' | 'logger' | 'metrics'> & {
    agents: { agentSvidTtlSeconds: number; joinsPerSecond?: number; joinBurst?: number };
  };
  logLevel: LogLevel;
  /** Things worth saying once the logger exists (accepted, but risky). */
  warnings: string[];
}

/**
 * The runtime's options from the flags (every file named read now, every value checked): a UsageError for
 * anything that cannot work. `listen` (where agents connect) is the caller's.
 */
export function reconcilerOptionsFromFlags(
  values: ReconcilerFlagValues,
  io: CommandIO,
): ParsedReconcilerFlags {
  if (!values.repo) throw new UsageError('missing required flag --repo');
  const warnings: string[] = [];
  const remote = /^[a-z][a-z0-9+.-]*:\/\//i.test(values.repo);
  const repo = remote ? values.repo : resolve(io.cwd, values.repo);
  const credentials = credentialProviderOptions(values, io, (w) => warnings.push(w));
  const logLevel = oneOf(values['log-level'], LOG_LEVELS, 'log-level', 'info');
  const maxFileBytes = parseByteSize(values['max-file-size'], 'max-file-size');
  const maxRepoBytes = parseByteSize(values['max-repo-size'], 'max-repo-size');
  const gitTimeoutMs = durationOrOff(values['git-timeout'], 'git-timeout', 0);

  let api: ReconcilerOptions['api'];
  if (values['api-listen'] === 'off') api = null;
  else {
    const at = parseHostPort(values['api-listen'] ?? '127.0.0.1:0');
    if (!at) throw new UsageError(`--api-listen must be HOST:PORT or "off" (got "${values['api-listen']}")`);
    const certFile = values['api-cert-file'];
    const keyFile = values['api-key-file'];
    if ((certFile === undefined) !== (keyFile === undefined))
      throw new UsageError('--api-cert-file and --api-key-file go together: pass both or neither');
    // Checked here too, so a refused flag leaves the state directory untouched (no CA made for nothing).
    if (!certFile && !isLoopbackHost(at.host)) throw new UsageError(apiPlainHttpRefusal(at.host));
    api = {
      ...at,
      ...(certFile && keyFile
        ? {
            tls: {
              cert: readFlagFile(io, certFile, 'api-cert-file'),
              key: readFlagFile(io, keyFile, 'api-key-file'),
              caFile: resolve(io.cwd, certFile),
            },
          }
        : {}),
    };
  }

  let webhookSecret: Buffer | undefined;
  const secretFile = values['webhook-secret-file'];
  if (secretFile) {
    // A trailing newline (echo, openssl rand -hex > FILE) is not part of the secret.
    webhookSecret = Buffer.from(
      readFlagFile(io, secretFile, 'webhook-secret-file').toString('utf8').trimEnd(),
    );
    if (webhookSecret.length < 16)
      throw new UsageError(
        `--webhook-secret-file ${secretFile} holds ${webhookSecret.length} byte(s); a webhook secret needs at least 16 (generate one with \`openssl rand -hex 32\`)`,
      );
    if (statSync(resolve(io.cwd, secretFile)).mode & 0o077)
      warnings.push(`--webhook-secret-file ${secretFile} may be read by other users: chmod 600 it`);
  }

  const auth = remote ? credentialsFromEnv(repo, io.env) : undefined;
  return {
    logLevel,
    warnings,
    options: {
      repo,
      ...(values.path ? { path: values.path } : {}),
      ...(values.branch ? { branch: values.branch } : {}),
      stateDir: resolve(io.cwd, values['state-dir'] ?? defaultStateDir(io.env)),
      ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
      ...(values['allow-plaintext-secrets'] ? { allowPlaintextSecrets: true } : {}),
      ...(maxFileBytes ? { maxFileBytes } : {}),
      git: {
        ...(auth ? { auth } : {}),
        ...(values['git-ca-file'] ? { caFile: resolve(io.cwd, values['git-ca-file']) } : {}),
        ...(gitTimeoutMs ? { timeoutMs: gitTimeoutMs } : {}),
        ...(maxRepoBytes ? { maxRepoBytes } : {}),
      },
      agents: {
        agentSvidTtlSeconds: durationFlag(values['agent-svid-ttl'], 'agent-svid-ttl', 3600),
        ...joinRate(values['join-rate']),
      },
      api,
      ...(webhookSecret ? { webhookSecret } : {}),
      pollIntervalMs: durationOrOff(values['poll-interval'], 'poll-interval', 60_000),
      ...(values['oidc-issuer'] ? { oidcIssuer: values['oidc-issuer'] } : {}),
      applyTimeoutMs: durationOrOff(values['apply-timeout'], 'apply-timeout', 10_000) || 10_000,
      credentials,
      drift: driftSettingsFromFlags(values, io),
      env: io.env,
    },
  };
}

/** `--join-rate N[/BURST]`: positive whole numbers, BURST ≥ 1 (default 10). */
function joinRate(value: string | undefined): { joinsPerSecond?: number; joinBurst?: number } {
  if (value === undefined) return {};
  const m = /^([1-9]\d{0,5})(?:\/([1-9]\d{0,5}))?$/.exec(value);
  if (!m)
    throw new UsageError(
      `--join-rate must be N or N/BURST, whole numbers from 1 (got "${value}"), e.g. 5/200`,
    );
  return { joinsPerSecond: Number(m[1]), joinBurst: Number(m[2] ?? 10) };
}
