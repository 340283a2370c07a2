import { createHash } from 'node:crypto';

/** What stands in for a secret value anywhere a person or machine could read it: the first 8 hex of a SHA-256. */
export function fingerprint(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value ?? null);
  return `sha256:${createHash('sha256').update(text).digest('hex').slice(0, 8)}`;
}
