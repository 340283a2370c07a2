/**
 * The one duration grammar, for every duration the product reads: command-line flags (`--ttl`, `--ca-ttl`),
 * lifetimes in policy (`spec.aws.lifetime`, `idTokenLifetime`, `svid.x509.ttl`) and the credential TTLs the
 * providers compute from them.
 *
 * A duration is one or more whole numbers, each followed by a unit, largest unit first, each unit at most
 * once: `d` (86,400 s), `h`, `m`, `s`. So `3600s` (the form the resources' API documents, `^\d+s$`, still
 * valid), `15m`, `1h30m`, `7d`. Go's time.ParseDuration reads the same strings the same way (days aside),
 * which is what the Kubernetes-style resources and SPIRE's configuration use. Bare numbers, fractions and
 * sub-second units are refused: a duration without a unit is ambiguous, and nothing here is finer than a second.
 */

/** For JSON Schema and zod: the grammar as a regular expression (ECMA-262). */
export const DURATION_PATTERN = '^(?=\\d)(?:(\\d+)d)?(?:(\\d+)h)?(?:(\\d+)m)?(?:(\\d+)s)?$';

/** What error messages say is accepted. */
export const DURATION_FORMS =
  'a duration: whole numbers with units d, h, m, s, largest first, e.g. "3600s", "15m", "1h30m" or "7d"';

const DURATION_RE = new RegExp(DURATION_PATTERN);
const UNIT_SECONDS = [86_400, 3_600, 60, 1];

/** Whole seconds (0 for "0s"), or null when `text` is not in the grammar or does not fit a safe integer. */
export function parseDuration(text: string): number | null {
  const match = DURATION_RE.exec(text);
  if (!match) return null;
  let total = 0;
  for (let i = 0; i < 4; i++) total += Number(match[i + 1] ?? 0) * UNIT_SECONDS[i]!;
  return Number.isSafeInteger(total) ? total : null;
}

/** `seconds` written back in the grammar, largest units first: 90000 → "1d1h". */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return '0s';
  let rest = Math.floor(seconds);
  let out = '';
  for (const [i, unit] of ['d', 'h', 'm', 's'].entries()) {
    const n = Math.floor(rest / UNIT_SECONDS[i]!);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * UNIT_SECONDS[i]!;
  }
  return out;
}
