/**
 * The store keeps metadata about credentials (lease ids, expiry, fingerprints), never a credential value. The
 * records' types already leave values out; this guard makes a mistake loud instead of durable: a record with a
 * field named like a credential value is refused before anything is written.
 */

/** Field names that hold secret material in the shapes this product handles (lower-cased, `_`/`-` removed). */
const SECRET_FIELDS = new Set([
  'token',
  'accesstoken',
  'clienttoken',
  'refreshtoken',
  'idtoken',
  'sessiontoken',
  'secretaccesskey',
  'secret',
  'clientsecret',
  'password',
  'privatekey',
  'apikey',
  'authorization',
  'stringdata',
]);

export class SecretInStoreError extends Error {}

/** Throws SecretInStoreError naming the path of the first field whose name says it holds a secret. */
export function assertNoSecretFields(value: unknown, path = 'record', depth = 0): void {
  if (depth > 32 || value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) assertNoSecretFields(v, `${path}[${i}]`, depth + 1);
    return;
  }
  for (const [k, v] of Object.entries(value)) {
    if (SECRET_FIELDS.has(k.toLowerCase().replace(/[-_]/g, '')) && v !== undefined && v !== null && v !== '')
      throw new SecretInStoreError(
        `${path}.${k} looks like a credential value; the state store keeps metadata only (fingerprint, expiry, lease id)`,
      );
    assertNoSecretFields(v, `${path}.${k}`, depth + 1);
  }
}
