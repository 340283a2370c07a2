/**
 * Provider-facing credential source specs (plain objects the policy layer produces from validated YAML),
 * the credential a binding holds, and the status the manager reports. Credential values are kept out of
 * every serialised or printed form by construction (see makeCredential).
 */
import { inspect } from 'node:util';
import { headerSafe } from '../../kernel-module/header-value.ts';
import { type FingerprintKey, keyedFingerprint } from './fingerprint.ts';

export interface KubernetesSourceSpec {
  name: string;
  kubernetes: { secretRef: { name: string; key: string }; type: 'BearerToken'; namespace?: string };
}

export interface VaultSourceSpec {
  name: string;
  vault: {
    address: string;
    audience: string[];
    /** Mount path of the JWT auth method; default 'jwt'. */
    jwtAuthMethodPath?: string;
    path: string;
    role: string;
    type: { token: { source: string } };
  };
}

export interface AwsSourceSpec {
  name: string;
  aws: {
    roleArn: string;
    /** Default ['sts.amazonaws.com']. */
    audience?: string[];
    /** Requested credential lifetime, e.g. '3600s' (STS DurationSeconds; its default when absent). */
    lifetime?: string;
    idTokenClaims?: Record<string, unknown>;
    /** Lifetime of the ID token presented to STS; default '300s'. */
    idTokenLifetime?: string;
  };
}

/** Provider blocks the CredentialSource kind names that this product does not implement yet. */
export const UNSUPPORTED_PROVIDERS = ['gcp', 'azure', 'oauth2', 'oci', 'rfc7523', 'rfc8693'] as const;
export type UnsupportedProvider = (typeof UNSUPPORTED_PROVIDERS)[number];
export type UnsupportedSourceSpec = { name: string } & { [P in UnsupportedProvider]?: unknown };

export type CredentialSourceSpec =
  | KubernetesSourceSpec
  | VaultSourceSpec
  | AwsSourceSpec
  | UnsupportedSourceSpec;

export interface AwsKeys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
}

/** The secret material itself. Lives in memory only. */
export type CredentialValue = { kind: 'bearer'; token: string } | { kind: 'aws'; aws: AwsKeys };

export interface Credential {
  readonly kind: 'bearer' | 'aws';
  /** 1 for the first value a binding obtained, +1 for every different value after it. */
  readonly version: number;
  /**
   * `hmac-sha256:<16 hex>` of the value(s) under the fingerprint key (fingerprint.ts): what status, logs and
   * agents show instead of the value, and what tells one version from the next.
   */
  readonly fingerprint: string;
  readonly obtainedAt: Date;
  readonly expiresAt?: Date;
  /** Set when kind is 'bearer'. Not enumerable: JSON.stringify, inspect and spreads leave it out. */
  readonly token?: string;
  /** Set when kind is 'aws'. Not enumerable, as token. */
  readonly aws?: AwsKeys;
}

/** The keyed fingerprint of a credential value (for AWS keys, of the three parts together). */
export function fingerprintOf(key: FingerprintKey, value: CredentialValue): string {
  return keyedFingerprint(
    key,
    value.kind === 'bearer'
      ? value.token
      : `${value.aws.accessKeyId}\n${value.aws.secretAccessKey}\n${value.aws.sessionToken}`,
  );
}

/**
 * Builds a Credential whose value fields cannot leak through serialisation: they are non-enumerable, and
 * toJSON / util.inspect print the metadata only.
 */
export function makeCredential(
  value: CredentialValue,
  meta: { version: number; obtainedAt: Date; expiresAt?: Date; fingerprint: string },
): Credential {
  const visible = {
    kind: value.kind,
    version: meta.version,
    fingerprint: meta.fingerprint,
    obtainedAt: meta.obtainedAt,
    ...(meta.expiresAt ? { expiresAt: meta.expiresAt } : {}),
  };
  const cred = { ...visible };
  Object.defineProperty(cred, value.kind === 'bearer' ? 'token' : 'aws', {
    value: value.kind === 'bearer' ? value.token : Object.freeze({ ...value.aws }),
    enumerable: false,
  });
  Object.defineProperty(cred, 'toJSON', { value: () => visible, enumerable: false });
  Object.defineProperty(cred, inspect.custom, {
    value: () => `Credential ${JSON.stringify(visible)}`,
    enumerable: false,
  });
  return Object.freeze(cred) as Credential;
}

export function credentialValueOf(c: Credential): CredentialValue {
  return c.kind === 'bearer' ? { kind: 'bearer', token: c.token! } : { kind: 'aws', aws: c.aws! };
}

/** Why a credential could not be obtained. Messages never carry a credential value. */
/**
 * Why a credential could not be obtained, as a stable code (errors/classify.ts maps it to the reconciler's
 * error catalogue): `unavailable` (the backend failed or refused: retried with backoff), `withdrawn` (the
 * backend says the value is gone: a Secret or key deleted), `misconfigured` (the source or the reconciler's
 * flags cannot work as given: an unsupported provider, a malformed duration or endpoint, no Kubernetes access;
 * retrying the same input cannot help).
 */
export type CredentialErrorCode = 'unavailable' | 'withdrawn' | 'misconfigured';

export class CredentialError extends Error {
  readonly code: CredentialErrorCode;

  constructor(
    message: string,
    readonly opts: {
      /** The source answered authoritatively that the value is gone (Secret or key deleted): stop serving it. */
      withdraw?: boolean;
      /** Default: `withdrawn` with `withdraw`, else `unavailable`. */
      code?: CredentialErrorCode;
    } = {},
  ) {
    super(message);
    this.name = 'CredentialError';
    this.code = opts.code ?? (opts.withdraw ? 'withdrawn' : 'unavailable');
  }
}

/**
 * A value with CR, LF or NUL in it, as an error naming the part and the source (never the value), else null.
 * The data plane injects values into HTTP headers and its credential store refuses these: the source says why
 * here rather than serve a value no agent can load. A provider that gives something back for each new value
 * (Vault: the previous lease) checks before it does, so that the value still served keeps what it holds.
 */
export function headerUnsafe(value: CredentialValue, source: string): CredentialError | null {
  const unsafe = (s: string) => !headerSafe(s);
  const part =
    value.kind === 'bearer'
      ? unsafe(value.token) && 'token'
      : (unsafe(value.aws.accessKeyId) && 'access key id') ||
        (unsafe(value.aws.secretAccessKey) && 'secret access key') ||
        (unsafe(value.aws.sessionToken) && 'session token');
  return part
    ? new CredentialError(
        `the ${part} from ${source} holds a character that is not visible ASCII (a line break, NUL, space or non-ASCII), which could split the HTTP header it is injected into; fix the value at the source`,
      )
    : null;
}

/** Where a (source, workload) pair is in its life. */
export type BindingPhase = 'pending' | 'available' | 'expiring' | 'expired' | 'error';

export interface SourceStatus {
  name: string;
  /** PENDING until the first attempt of any of its bindings has finished. */
  state: 'AVAILABLE' | 'ERROR' | 'PENDING';
  message?: string;
}

export interface BindingStatus {
  source: string;
  workloadID: string;
  /** OK while a valid credential is held (even if the latest refresh failed: see message). */
  state: 'OK' | 'FAILED' | 'PENDING';
  phase: BindingPhase;
  message?: string;
  fingerprint?: string;
  version?: number;
  /** ISO 8601. */
  expiresAt?: string;
}

export interface CredentialStatus {
  sources: SourceStatus[];
  bindings: BindingStatus[];
}

/** Log sink; fields are plain metadata (names, fingerprints, times), never values. */
export interface CredentialLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  /** Repeats of what was already said at warn (a retry failing for the same reason). */
  debug?(message: string, fields?: Record<string, unknown>): void;
}
