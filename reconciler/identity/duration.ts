/** Durations as operators write them on the command line: `90`, `45s`, `5m`, `1h`, `1h30m`, `7d`. */
const UNIT_SECONDS: Record<string, number> = { d: 86_400, h: 3_600, m: 60, s: 1 };
const DURATION_RE = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;

/** Whole seconds, or null when `text` is not a positive duration. */
export function parseDurationSeconds(text: string): number | null {
  if (/^\d+$/.test(text)) return Number(text) > 0 ? Number(text) : null;
  const match = text.match(DURATION_RE);
  if (!match || text === '') return null;
  const units = ['d', 'h', 'm', 's'];
  const total = units.reduce((sum, unit, i) => sum + Number(match[i + 1] ?? 0) * UNIT_SECONDS[unit]!, 0);
  return total > 0 ? total : null;
}
