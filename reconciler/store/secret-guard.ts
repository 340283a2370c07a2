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

/**
 * Throws SecretInStoreError naming the path of the first field whose name says it holds a secret. The path is
 * built only for that field: the guard visits every field of the status document on each write.
 */
export function assertNoSecretFields(value: unknown, path = 'record'): void {
  const trail: Array<string | number> = [];
  const visit = (v: unknown, depth: number): void => {
    if (depth > 32 || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        trail.push(i);
        visit(v[i], depth + 1);
        trail.pop();
      }
      return;
    }
    const record = v as Record<string, unknown>;
    for (const k in record) {
      if (!Object.hasOwn(record, k)) continue;
      const field = record[k];
      trail.push(k);
      if (field !== undefined && field !== null && field !== '' && SECRET_FIELDS.has(normalise(k)))
        throw new SecretInStoreError(
          `${path}${trail.map((t) => (typeof t === 'number' ? `[${t}]` : `.${t}`)).join('')} looks like a credential value; the state store keeps metadata only (fingerprint, expiry, lease id)`,
        );
      if (!(k === 'labels' && record.kind === 'Service' && isLabelMap(field))) visit(field, depth + 1);
      trail.pop();
    }
  };
  visit(value, 0);
}

/**
 * A key of JSON.stringify's output whose name, without `-`/`_` and case-folded, is a SECRET_FIELDS entry, with a
 * value other than null or "". On that output a key is always `"name":` after `{` or `,`, and a `"` inside a
 * string value is always escaped, so a value cannot imitate a key. Unicode case folding (`u`) also takes the
 * letters that toLowerCase maps to ASCII (the Kelvin sign to `k`). It differs from assertNoSecretFields only
 * where JSON writes no value: a NaN, a function or a String object under a secret name is refused there and
 * written here as null, nothing, or "".
 */
const SECRET_KEY = new RegExp(
  `[{,]"(?:${[...SECRET_FIELDS].map((f) => `[-_]*${[...f].join('[-_]*')}[-_]*`).join('|')})":(?!null[,}\\]]|""[,}\\]])`,
  'iu',
);

/**
 * `value` as JSON text, refused as assertNoSecretFields refuses it (naming the field) when a field's name says it
 * holds a secret. The check is a scan of the text JSON.stringify's fast path made: a replacer function (the
 * check riding on the serialisation) made V8 take its slow path, which allocated ~8 bytes of garbage for every
 * byte of a 14 MB status document.
 */
export function stringifyWithoutSecrets(value: unknown, path = 'record'): string {
  const text = JSON.stringify(value);
  const hit = text === undefined ? null : SECRET_KEY.exec(text);
  if (hit) {
    assertNoSecretFields(value, path);
    throw new SecretInStoreError(
      `${path} holds a field ${hit[0].slice(1, hit[0].indexOf(':'))} that looks like a credential value; the state store keeps metadata only`,
    );
  }
  return text;
}

/**
 * The labels of a Service's status (`kind: Service`, `labels`: string keys to string values, from the policy in
 * git), the one schema path the guard does not read as field names: its keys are the policy author's words, and
 * a label `token: none` names no credential (refusing it stopped every status write while the label was there).
 */
function isLabelMap(v: unknown): boolean {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  for (const x of Object.values(v)) if (typeof x !== 'string') return false;
  return true;
}

/** Lower-cased, without `-` and `_`; allocates only for names that need it. */
function normalise(k: string): string {
  return /[A-Z_-]/.test(k) ? k.toLowerCase().replace(/[-_]/g, '') : k;
}
