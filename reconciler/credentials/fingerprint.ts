import { createHash } from 'node:crypto';

/**
 * What stands in for a secret value wherever a person or a machine could read it (diffs, status, reports):
 * the first 8 hex digits of its SHA-256. Short enough to compare at a glance, too short to help guess it.
 */
export function fingerprint(data: string): string {
  return createHash('sha256').update(data).digest('hex').slice(0, 8);
}
