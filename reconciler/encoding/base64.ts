/**
 * The base64 of Kubernetes Secret `data`, decoded exactly as the API server decodes it: `[]byte` fields go
 * through Go's encoding/json, which uses `base64.StdEncoding` (standard alphabet, `=` padding required, CR and
 * LF ignored, anything else refused). Node's `Buffer.from(s, 'base64')` instead skips what it does not know and
 * accepts the URL-safe alphabet and missing padding, so `"placeholder token: not base64!"` would decode to
 * bytes the API server never serves. Ported from Go's src/encoding/base64/base64.go (`decodeQuantum`), with
 * the same error offsets: the API server answers `illegal base64 data at input byte N`.
 */

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const DECODE = new Int16Array(256).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;
const PAD = 0x3d; // '='
const CR = 0x0d;
const LF = 0x0a;

/**
 * The strings decodeSecretData accepts, as an ECMA-262 pattern (for JSON Schema, where editors check it): whole
 * quanta of the standard alphabet, an optional padded last quantum, CR and LF anywhere before the end of the
 * padding and after it.
 */
export const SECRET_DATA_PATTERN =
  '^[\\r\\n]*(?:(?:[A-Za-z0-9+/][\\r\\n]*){4})*(?:(?:[A-Za-z0-9+/][\\r\\n]*){2}=[\\r\\n]*=|(?:[A-Za-z0-9+/][\\r\\n]*){3}=)?[\\r\\n]*$';

export type Base64Decoded = { ok: true; bytes: Buffer } | { ok: false; offset: number; message: string };

/**
 * Decodes `value` (its UTF-8 bytes, as the API server sees the JSON string) as Go's `base64.StdEncoding`.
 * On failure, `offset` is the byte Go reports and `message` is Go's own wording.
 */
export function decodeSecretData(value: string): Base64Decoded {
  const src = Buffer.from(value, 'utf8');
  const out = Buffer.alloc(Math.floor(src.length / 4) * 3);
  let n = 0;
  let si = 0;
  const fail = (offset: number): Base64Decoded => ({
    ok: false,
    offset,
    message: `illegal base64 data at input byte ${offset}`,
  });
  while (si < src.length) {
    const dbuf = [0, 0, 0, 0];
    let dlen = 4;
    let trailing = -1;
    for (let j = 0; j < 4; j++) {
      if (si === src.length) {
        if (j === 0) return { ok: true, bytes: out.subarray(0, n) };
        // Padding is required: a short last quantum is corrupt where it started.
        return fail(si - j);
      }
      const c = src[si]!;
      si++;
      const d = DECODE[c]!;
      if (d >= 0) {
        dbuf[j] = d;
        continue;
      }
      if (c === LF || c === CR) {
        j--;
        continue;
      }
      if (c !== PAD) return fail(si - 1);
      // Padding: the end of the data.
      if (j === 0 || j === 1) return fail(si - 1);
      if (j === 2) {
        // "==" expected; the first "=" is consumed.
        while (si < src.length && (src[si] === LF || src[si] === CR)) si++;
        if (si === src.length) return fail(src.length);
        if (src[si] !== PAD) return fail(si - 1);
        si++;
      }
      while (si < src.length && (src[si] === LF || src[si] === CR)) si++;
      if (si < src.length) trailing = si;
      dlen = j;
      break;
    }
    const val = (dbuf[0]! << 18) | (dbuf[1]! << 12) | (dbuf[2]! << 6) | dbuf[3]!;
    const bytes = [(val >> 16) & 0xff, (val >> 8) & 0xff, val & 0xff];
    for (let k = 0; k < dlen - 1; k++) out[n++] = bytes[k]!;
    if (trailing >= 0) return fail(trailing);
  }
  return { ok: true, bytes: out.subarray(0, n) };
}
