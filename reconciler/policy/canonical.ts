/** Canonical JSON (sorted keys, no whitespace) and the content hashes derived from it. */
import { createHash } from 'node:crypto';

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const key of Object.keys(obj).sort()) {
    if (obj[key] === undefined) continue;
    parts.push(`${JSON.stringify(key)}:${canonicalJson(obj[key])}`);
  }
  return `{${parts.join(',')}}`;
}

/** A stable content hash: the first 16 hex digits (64 bits) of the SHA-256 of the canonical JSON. */
export function contentHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex').slice(0, 16);
}

/**
 * The hash of a value whose producer fixes every key order (compile output, where user maps are normalised to
 * sorted keys first): plain JSON is already canonical there, and skipping the re-sort halves compile time.
 */
export function orderedHash(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 16);
}

/** Adds `hash`, computed over everything else in an object whose key order its producer fixes. */
export function withHash<T extends object>(value: T): T & { hash: string } {
  return { ...value, hash: orderedHash(value) };
}
