/** Secret `data` decoded as the Kubernetes API server decodes it (Go's base64.StdEncoding), offsets included. */
import { describe, expect, it } from 'vitest';
import { decodeSecretData } from '../../reconciler/encoding/base64.ts';

const ok = (s: string) => {
  const r = decodeSecretData(s);
  if (!r.ok) throw new Error(`refused ${JSON.stringify(s)}: ${r.message}`);
  return r.bytes.toString('utf8');
};
const offset = (s: string) => {
  const r = decodeSecretData(s);
  return r.ok ? `decoded ${JSON.stringify(r.bytes.toString('latin1'))}` : r.offset;
};

describe('decodeSecretData', () => {
  it('decodes standard, padded base64, ignoring CR and LF as Go does', () => {
    expect(ok('c2VjcmV0')).toBe('secret');
    expect(ok('YQ==')).toBe('a');
    expect(ok('YWI=')).toBe('ab');
    expect(ok('')).toBe('');
    expect(ok('c2Vj\r\ncmV0\n')).toBe('secret');
    expect(ok('YQ=\n=')).toBe('a');
    expect(ok('c2stbGl2ZS0xMjM0NQ==')).toBe('sk-live-12345');
  });

  it('refuses what the API server refuses, at the byte Go names', () => {
    // The input: the space after "placeholder".
    expect(offset('placeholder token: not base64!')).toBe(11);
    expect(decodeSecretData('placeholder token: not base64!')).toMatchObject({
      ok: false,
      message: 'illegal base64 data at input byte 11',
    });
    expect(offset('YQ')).toBe(0); // padding is required
    expect(offset('YWI')).toBe(0);
    expect(offset('YQ=')).toBe(3); // half the padding
    expect(offset('YQ==YQ==')).toBe(4); // data after the padding
    expect(offset('c2Vj cmV0')).toBe(4);
    expect(offset('c2-_')).toBe(2); // the URL-safe alphabet is another encoding
    expect(offset('=YQ=')).toBe(0);
    expect(offset('Y===')).toBe(1);
    expect(offset('c2VjcmV0\t')).toBe(8);
    expect(offset('c2Vjé')).toBe(4);
  });

  it('never decodes what Node would decode leniently', () => {
    for (const s of ['placeholder token: not base64!', 'YQ', 'c2-_', 'c2Vj cmV0']) {
      expect(Buffer.from(s, 'base64').length, s).toBeGreaterThan(0);
      expect(decodeSecretData(s).ok, s).toBe(false);
    }
  });

  it('round-trips every length of random bytes', () => {
    for (let n = 0; n < 64; n++) {
      const bytes = Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff));
      const r = decodeSecretData(bytes.toString('base64'));
      expect(r.ok && Buffer.compare(r.bytes, bytes), `length ${n}`).toBe(0);
    }
  });
});
