/** Small helpers the providers and the manager share: durations, deadlines, error wording. */
import { DURATION_FORMS, parseDuration } from '../common/duration.ts';
import {
  type AwsSourceSpec,
  CredentialError,
  type CredentialSourceSpec,
  type KubernetesSourceSpec,
  UNSUPPORTED_PROVIDERS,
  type VaultSourceSpec,
} from './types.ts';

export type ClassifiedSource =
  | { provider: 'kubernetes'; spec: KubernetesSourceSpec }
  | { provider: 'vault'; spec: VaultSourceSpec }
  | { provider: 'aws'; spec: AwsSourceSpec }
  | { provider: 'unsupported'; block: string };

/** Which provider block a source has; exactly one is expected (the policy layer validates that). */
export function classifySource(spec: CredentialSourceSpec): ClassifiedSource {
  const s = spec as Record<string, unknown>;
  if (s.kubernetes) return { provider: 'kubernetes', spec: spec as KubernetesSourceSpec };
  if (s.vault) return { provider: 'vault', spec: spec as VaultSourceSpec };
  if (s.aws) return { provider: 'aws', spec: spec as AwsSourceSpec };
  const block =
    UNSUPPORTED_PROVIDERS.find((p) => s[p] !== undefined) ?? Object.keys(s).find((k) => k !== 'name');
  return { provider: 'unsupported', block: block ?? '(none)' };
}

/** Seconds of a duration in the one grammar (common/duration.ts), or a CredentialError naming the field. */
export function durationSeconds(text: string, field: string): number {
  const seconds = parseDuration(text);
  if (seconds === null)
    throw new CredentialError(`${field} "${text}" is not ${DURATION_FORMS}`, { code: 'misconfigured' });
  return seconds;
}

/**
 * Bounds a promise by `ms`. The underlying operation is also told to stop (`onTimeout`) where the library
 * allows it; the caller gets a CredentialError saying what timed out either way.
 */
export function withDeadline<T>(
  work: Promise<T>,
  ms: number,
  what: string,
  onTimeout?: () => void,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(
        new CredentialError(`${what}: no answer within ${ms} ms; check that the server is up and reachable`),
      );
    }, ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/**
 * A transport failure in words an operator can act on, built from the error's code and message only: never
 * from request configs or bodies, which hold tokens.
 */
export function describeTransportError(err: unknown): string {
  if (err instanceof CredentialError) return err.message;
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e.code ?? e.cause?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused (is the server running?)';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'connection reset by the server';
    case 'ETIMEDOUT':
    case 'ECONNABORTED':
      return 'timed out';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name does not resolve';
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'CERT_HAS_EXPIRED':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `TLS verification failed (${code}); configure the CA that signed the server certificate`;
    default:
      break;
  }
  const msg = e.message ?? String(err);
  if (/socket hang up/i.test(msg)) return 'connection closed by the server before it answered';
  // Library messages (axios, node-fetch) name the URL and the OS reason; keep the first line, bounded.
  return msg.split('\n')[0]!.slice(0, 200);
}
