/**
 * What the kubernetes provider and the local-secrets provider share: a Secret as seen by a consumer, the
 * store interface both implement, and the one function that turns (Secret, key) into a bearer token or an
 * error, so that both give the same answers in the same words.
 */
import { decodeSecretData } from '../encoding/base64.ts';
import { CredentialError, type CredentialValue } from './types.ts';

export type SecretSnapshot =
  | { found: true; data: Record<string, Buffer>; resourceVersion: string }
  | { found: false; resourceVersion?: string };

export type SecretUpdate = SecretSnapshot | CredentialError;

export interface SecretStore {
  /** Where Secrets come from, for messages: "the Kubernetes API at …" or "secrets dir …". */
  readonly where: string;
  /** One read, no watch (used by `credentials check`, and by the watch loop to resync). */
  read(namespace: string, name: string): Promise<SecretSnapshot>;
  /**
   * The current state now and every later change, until the returned function is called. Errors reaching
   * the store are delivered too; the store keeps retrying on its own.
   */
  subscribe(namespace: string, name: string, onUpdate: (u: SecretUpdate) => void): () => void;
  close(): Promise<void>;
}

/**
 * A Secret's `data` map decoded as the Kubernetes API server decodes it (encoding/base64.ts). A value that is
 * not valid base64 is refused, never decoded leniently: the API server refuses such a Secret whole, so it has
 * no bytes to serve. The message names the key and Go's offset, never the value.
 */
export function decodeSecretDataMap(
  data: Record<string, unknown> | undefined,
  secret: { namespace: string; name: string },
  where: string,
): Record<string, Buffer> {
  // No prototype: a key named `__proto__` is a key like any other, not a new prototype for the map.
  const out: Record<string, Buffer> = Object.create(null);
  for (const [key, value] of Object.entries(data ?? {})) {
    const decoded = decodeSecretData(typeof value === 'string' ? value : String(value));
    if (!decoded.ok)
      throw new CredentialError(
        `Secret ${secret.namespace}/${secret.name} (${where}): data.${key} is not valid base64 ` +
          `(${decoded.message}), and the Kubernetes API server refuses such a Secret; ` +
          'base64-encode the value, or put it under stringData',
      );
    out[key] = decoded.bytes;
  }
  return out;
}

/** The bearer token under `key`, or the error both providers report. */
export function bearerFromSecret(
  snap: SecretSnapshot,
  ref: { namespace: string; name: string; key: string },
  where: string,
): CredentialValue {
  const id = `Secret ${ref.namespace}/${ref.name}`;
  if (!snap.found)
    throw new CredentialError(
      `${id} not found (${where}); create it with a "${ref.key}" key or fix secretRef.name`,
      { withdraw: true },
    );
  // Own keys only: `key: toString` names a key of the Secret, never Object's method.
  const raw = Object.hasOwn(snap.data, ref.key) ? snap.data[ref.key] : undefined;
  if (raw === undefined) {
    const keys = Object.keys(snap.data).sort();
    throw new CredentialError(
      `${id} has no key "${ref.key}" (${where}; its keys: ${keys.length ? keys.join(', ') : 'none'}); ` +
        'fix secretRef.key or add the key',
      { withdraw: true },
    );
  }
  // A header value cannot hold line breaks; files made with `echo` end with one.
  const token = raw.toString('utf8').trim();
  if (!token)
    throw new CredentialError(`${id} key "${ref.key}" is empty (${where}); put the bearer token there`, {
      withdraw: true,
    });
  return { kind: 'bearer', token };
}
