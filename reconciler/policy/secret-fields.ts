/**
 * Secret-bearing fields, by schema path, and the masked copy of a resource that anything shown to a person
 * (plan diffs and bodies, and later drift and status reports) is computed from. Masking comes before diffing,
 * so no shape of change (created, deleted, a whole map added or removed, a map turned into a scalar, a key
 * renamed) can carry a value past it.
 *
 * | kind | path | masked as |
 * | --- | --- | --- |
 * | Secret | `data.<key>` | a digest of the decoded bytes (the same as the `stringData` form of the same value) |
 * | Secret | `stringData.<key>` | a digest of the value |
 * | Secret | `data`, `stringData` that are not maps | one digest of the whole |
 * | Secret | SOPS ciphertext (`ENC[…]`) in either | `**SOPS** ` and a digest of the ciphertext |
 * | Secret | `sops` (the envelope) | one line: `**SOPS** envelope` and a digest, as Flux masks it |
 * | any | `metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]` | a digest: it is a copy of the object, values included |
 * | CredentialSource | every value under `spec.<azure, oauth2, oci, rfc7523, rfc8693>` | a digest each: those providers' fields are not known (parsed as opaque maps), and any may be a client secret or a private key |
 */
import { decodeSecretData } from '../encoding/base64.ts';
import { canonicalJson } from './canonical.ts';
import { OPAQUE_SOURCE_TYPES } from './kinds/credential-source.ts';
import { isSopsEncrypted } from './kinds/secret.ts';

/** The annotation `kubectl apply` writes: the whole object as JSON, Secret values included. */
export const LAST_APPLIED_ANNOTATION = 'kubectl.kubernetes.io/last-applied-configuration';

/** What stands in for a secret value: `shown` is all that may be printed. */
export class Masked {
  constructor(readonly shown: string) {}
  toJSON(): string {
    return this.shown;
  }
}

/** Digests a secret value for display (plan uses credentials/fingerprint.ts `committedDigest`). */
export type Digest = (value: string | Uint8Array) => string;

function maskValue(value: unknown, digest: Digest, encoding: 'base64' | 'text'): Masked {
  if (isSopsEncrypted(value)) return new Masked(`**SOPS** ${digest(value as string)}`);
  if (typeof value !== 'string') return new Masked(digest(canonicalJson(value)));
  if (encoding === 'base64') {
    const decoded = decodeSecretData(value);
    if (decoded.ok) return new Masked(digest(decoded.bytes));
  }
  return new Masked(digest(value));
}

function maskMap(value: unknown, digest: Digest, encoding: 'base64' | 'text'): unknown {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    return maskValue(value, digest, encoding);
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, maskValue(v, digest, encoding)]),
  );
}

/** `value` with its structure kept and every scalar in it masked: the paths of a change show, no value does. */
function maskLeaves(value: unknown, digest: Digest): unknown {
  if (value === null || value === undefined) return value;
  if (Array.isArray(value)) return value.map((v) => maskLeaves(v, digest));
  if (typeof value === 'object')
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, maskLeaves(v, digest)]),
    );
  return maskValue(value, digest, 'text');
}

/**
 * A copy of `value` (a resource of `kind`) with every secret-bearing field replaced by a Masked. Returns
 * `value` itself when nothing in it is secret-bearing, so masking costs nothing for most resources.
 */
export function maskSecretFields(kind: string, value: unknown, digest: Digest): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const obj = value as Record<string, unknown>;
  const metadata = obj.metadata as Record<string, unknown> | undefined;
  const annotations = metadata?.annotations as Record<string, unknown> | undefined;
  const lastApplied =
    annotations && typeof annotations === 'object' && Object.hasOwn(annotations, LAST_APPLIED_ANNOTATION);
  const spec = obj.spec as Record<string, unknown> | undefined;
  const opaque =
    kind === 'CredentialSource' && spec && typeof spec === 'object'
      ? OPAQUE_SOURCE_TYPES.filter((t) => Object.hasOwn(spec, t))
      : [];
  if (kind !== 'Secret' && !lastApplied && opaque.length === 0) return value;
  const out: Record<string, unknown> = { ...obj };
  if (lastApplied) {
    out.metadata = {
      ...metadata,
      annotations: {
        ...annotations,
        [LAST_APPLIED_ANNOTATION]: maskValue(annotations![LAST_APPLIED_ANNOTATION], digest, 'text'),
      },
    };
  }
  if (opaque.length)
    out.spec = { ...spec, ...Object.fromEntries(opaque.map((t) => [t, maskLeaves(spec![t], digest)])) };
  if (kind === 'Secret') {
    if ('data' in obj) out.data = maskMap(obj.data, digest, 'base64');
    if ('stringData' in obj) out.stringData = maskMap(obj.stringData, digest, 'text');
    if ('sops' in obj) out.sops = new Masked(`**SOPS** envelope ${digest(canonicalJson(obj.sops))}`);
  }
  return out;
}

/** `value` with every Masked replaced by what it shows: plain JSON, safe to print. */
export function shownValue(value: unknown): unknown {
  if (value instanceof Masked) return value.shown;
  if (Array.isArray(value)) return value.map(shownValue);
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shownValue(v)]));
  return value;
}

/** Whether `value` holds a Masked anywhere. */
export function holdsMasked(value: unknown): boolean {
  if (value instanceof Masked) return true;
  if (Array.isArray(value)) return value.some(holdsMasked);
  if (value && typeof value === 'object') return Object.values(value).some(holdsMasked);
  return false;
}
