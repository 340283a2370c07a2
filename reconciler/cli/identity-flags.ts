/**
 * Flags the commands share, checked up front: durations (`--ttl`, `--ca-ttl`, `--agent-svid-ttl`), network
 * timeouts (`--timeout` of plan, credentials, reconciler, ctl) and SPIFFE IDs (`svid mint`, `jwt mint`).
 */
import { DURATION_FORMS, formatDuration, parseDuration } from '../common/duration.ts';
import { parseSpiffeId } from '../identity/spiffe-id.ts';
import { UsageError } from './command.ts';

/** Seconds of `--<flag>` in the one duration grammar; `fallback` when absent. A zero or malformed value is a UsageError. */
export function durationFlag(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const seconds = parseDuration(value);
  if (seconds === null || seconds === 0)
    throw new UsageError(`--${flag} must be ${DURATION_FORMS}, and more than zero (got "${value}")`);
  return seconds;
}

/** The longest `--timeout` accepted: past it, a wait is no longer a bound anyone meant. */
export const MAX_TIMEOUT_SECONDS = 3600;

/**
 * Seconds of `--<flag>` for a network timeout: the one duration grammar (`30s`, `2m`), or a whole number of
 * seconds as these flags have always taken (`--timeout 30`), from 1 s to 1 h; `fallback` when absent.
 * Fractions, exponents, hex and `Infinity` are refused with a UsageError that says what is accepted.
 */
export function timeoutFlag(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const seconds = /^\d+$/.test(value) ? Number(value) : parseDuration(value);
  if (seconds === null || seconds < 1 || seconds > MAX_TIMEOUT_SECONDS)
    throw new UsageError(
      `--${flag} must be whole seconds ("30") or a duration with units h, m, s ("45s", "2m", "1m30s"), from 1s to 1h (got "${value}")`,
    );
  return seconds;
}

/**
 * `--spiffe-id` for an SVID of the CA's trust domain: a well-formed SPIFFE ID (the SPIFFE ID standard, with
 * go-spiffe's wording for what is wrong), in `trustDomain`, naming a workload. Said in terms of the flag,
 * before any key or request is made.
 */
export function spiffeIdFlag(value: string, trustDomain: string): string {
  const example = `spiffe://${trustDomain}/<workload path>, e.g. spiffe://${trustDomain}/app/api`;
  const parsed = parseSpiffeId(value);
  if (!parsed.ok)
    throw new UsageError(`--spiffe-id "${value}" is not a SPIFFE ID: ${parsed.message}; write ${example}`);
  if (parsed.id.trustDomain !== trustDomain)
    throw new UsageError(
      `--spiffe-id "${value}" is in trust domain ${parsed.id.trustDomain}, but this CA issues for ${trustDomain}; write ${example}`,
    );
  if (parsed.id.path === '')
    throw new UsageError(
      `--spiffe-id "${value}" names the trust domain itself, not a workload; write ${example}`,
    );
  return value;
}

/**
 * A line saying that a credential lives less than asked, or null when it got what was asked (to the second).
 * `what` names the credential, `limit` what capped it.
 */
export function cappedNote(
  what: string,
  flagValue: string | undefined,
  requestedSeconds: number,
  issuedAtMs: number,
  notAfter: Date,
  limit: string,
): string | null {
  const granted = Math.floor((notAfter.getTime() - issuedAtMs) / 1000);
  if (granted >= requestedSeconds - 1) return null;
  const asked = flagValue ?? `${formatDuration(requestedSeconds)} (the default)`;
  return `${what}: --ttl ${asked} was capped to ${formatDuration(granted)} (until ${notAfter.toISOString()}): ${limit}`;
}
