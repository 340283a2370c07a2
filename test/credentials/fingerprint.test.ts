/** The one fingerprint family: keyed for live values, a digest for committed ones, and where the key comes from. */
import { createHash, createHmac } from 'node:crypto';
import { chmodSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  committedDigest,
  ephemeralFingerprintKey,
  keyedFingerprint,
  resolveFingerprintKey,
} from '../../reconciler/credentials/fingerprint.ts';
import { tempDir } from '../support/scratch.ts';

const KEY = 'a1'.repeat(32);

describe('fingerprints', () => {
  it('keys live values with HMAC-SHA256, so the same value under another key tells nothing', () => {
    const key = resolveFingerprintKey({ env: { RIPTIDES_FINGERPRINT_KEY: KEY } });
    expect(keyedFingerprint(key, 'hunter2')).toBe(
      `hmac-sha256:${createHmac('sha256', Buffer.from(KEY, 'hex')).update('hunter2').digest('hex').slice(0, 16)}`,
    );
    expect(keyedFingerprint(ephemeralFingerprintKey(), 'hunter2')).not.toBe(keyedFingerprint(key, 'hunter2'));
    expect(keyedFingerprint(key, 'hunter2')).not.toContain(
      createHash('sha256').update('hunter2').digest('hex').slice(0, 8),
    );
  });

  it('digests committed values without a key, the same on every machine', () => {
    expect(committedDigest('hunter2')).toBe(
      `sha256:${createHash('sha256').update('hunter2').digest('hex').slice(0, 8)}`,
    );
  });

  it('never prints the key itself', () => {
    const key = resolveFingerprintKey({ env: { RIPTIDES_FINGERPRINT_KEY: KEY } });
    expect(JSON.stringify(key)).toBe('{"origin":"env"}');
    expect(inspect(key)).not.toContain('a1a1');
  });

  it('takes the key from the environment as hex or base64, and refuses a short one', () => {
    const b64 = Buffer.from(KEY, 'hex').toString('base64');
    const a = resolveFingerprintKey({ env: { RIPTIDES_FINGERPRINT_KEY: KEY } });
    const b = resolveFingerprintKey({ env: { RIPTIDES_FINGERPRINT_KEY: b64 } });
    expect(keyedFingerprint(a, 'x')).toBe(keyedFingerprint(b, 'x'));
    expect(() => resolveFingerprintKey({ env: { RIPTIDES_FINGERPRINT_KEY: 'abcd' } })).toThrow(
      'RIPTIDES_FINGERPRINT_KEY holds 2 byte(s) of key; at least 32 are needed',
    );
  });

  it('prefers the environment over the state directory, which it then leaves alone', () => {
    const dir = tempDir('fp');
    expect(resolveFingerprintKey({ env: { RIPTIDES_FINGERPRINT_KEY: KEY }, stateDir: dir }).origin).toBe(
      'env',
    );
    expect(readdirSync(dir)).toEqual([]);
  });

  it('creates the state directory key once, 0600, with nothing left behind, and refuses it when others may read it', () => {
    const dir = join(tempDir('fp'), 'state');
    const first = resolveFingerprintKey({ stateDir: dir });
    const file = join(dir, 'fingerprint.key');
    expect(first.origin).toBe('state-dir');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['fingerprint.key']);
    expect(readFileSync(file, 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    expect(keyedFingerprint(resolveFingerprintKey({ stateDir: dir }), 'v')).toBe(
      keyedFingerprint(first, 'v'),
    );
    chmodSync(file, 0o640);
    expect(() => resolveFingerprintKey({ stateDir: dir })).toThrow(
      `${file} may be read by others (mode 640)`,
    );
  });
});
