import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { type CredentialChange, CredentialStore } from '../../kernel-module/control/credential-store.ts';
import { fakeClock } from '../support/identity-helpers.ts';

const TOKEN = 'ghp_live_token_value_0123456789';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const SESSION = 'FwoGZXIvYXdzEJr_session_token_value';

describe('in-memory credential store', () => {
  it('loads, serves and unloads by credential hash; a rotation is seen by the next lookup', () => {
    const store = new CredentialStore();
    store.load(
      'c0ffee00c0ffee00',
      { kind: 'bearer', token: TOKEN },
      { binding: 'CredentialBinding/ns/gh', fingerprint: 'hmac-sha256:1111', version: 1 },
    );
    expect(store.get('c0ffee00c0ffee00')?.token).toBe(TOKEN);
    store.load(
      'c0ffee00c0ffee00',
      { kind: 'bearer', token: 'ghp_rotated' },
      { binding: 'CredentialBinding/ns/gh', fingerprint: 'hmac-sha256:2222', version: 2 },
    );
    expect(store.get('c0ffee00c0ffee00')?.token).toBe('ghp_rotated');
    expect(store.unload('c0ffee00c0ffee00')).toBe(true);
    expect(store.lookup('c0ffee00c0ffee00')).toEqual({ state: 'absent' });
  });

  it('never shows a value through JSON, inspect, spreads, string conversion or change events', () => {
    const store = new CredentialStore();
    const events: CredentialChange[] = [];
    store.on('change', (c) => events.push(c));
    const bearer = store.load(
      'aaaaaaaaaaaaaaaa',
      { kind: 'bearer', token: TOKEN },
      { binding: 'CredentialBinding/ns/gh', fingerprint: 'fp1', version: 1 },
    );
    const aws = store.load(
      'bbbbbbbbbbbbbbbb',
      {
        kind: 'aws',
        accessKeyId: 'ASIAEXAMPLE',
        secretAccessKey: SECRET,
        sessionToken: SESSION,
        expiresAt: new Date(Date.now() + 3600_000),
      },
      { binding: 'CredentialBinding/ns/bedrock', fingerprint: 'fp2', version: 3 },
    );
    store.unload('aaaaaaaaaaaaaaaa');
    const shown = [
      JSON.stringify(bearer),
      JSON.stringify(aws),
      JSON.stringify({ ...bearer, ...aws }),
      inspect(bearer, { showHidden: true, depth: 5 }),
      inspect(aws, { showHidden: true, depth: 5 }),
      `${bearer} ${aws}`,
      JSON.stringify(events),
      inspect(events, { depth: 5 }),
      JSON.stringify(store.list()),
      inspect(store, { showHidden: true, depth: 5 }),
    ].join('\n');
    for (const value of [TOKEN, SECRET, SESSION]) expect(shown).not.toContain(value);
    // Metadata is what they show.
    expect(JSON.parse(JSON.stringify(aws))).toMatchObject({
      hash: 'bbbbbbbbbbbbbbbb',
      kind: 'aws',
      binding: 'CredentialBinding/ns/bedrock',
      fingerprint: 'fp2',
      version: 3,
    });
    expect(events.map((e) => e.type)).toEqual(['load', 'load', 'unload']);
    // The value is still there for the data plane.
    expect(aws.aws.secretAccessKey).toBe(SECRET);
  });

  it('answers expired for AWS keys past their expiry, so the data plane can say why it has none', () => {
    const clock = fakeClock('2030-01-01T00:00:00Z');
    const store = new CredentialStore({ now: clock.now });
    store.load(
      'bbbbbbbbbbbbbbbb',
      {
        kind: 'aws',
        accessKeyId: 'ASIA',
        secretAccessKey: SECRET,
        sessionToken: SESSION,
        expiresAt: new Date('2030-01-01T01:00:00Z'),
      },
      { binding: 'CredentialBinding/ns/bedrock', fingerprint: 'fp', version: 1 },
    );
    expect(store.lookup('bbbbbbbbbbbbbbbb').state).toBe('loaded');
    clock.set('2030-01-01T01:00:00Z');
    expect(store.lookup('bbbbbbbbbbbbbbbb')).toMatchObject({
      state: 'expired',
      info: { expiresAt: '2030-01-01T01:00:00.000Z' },
    });
    expect(store.get('bbbbbbbbbbbbbbbb')).toBeUndefined();
  });

  it('refuses a value that would split the header it is injected into, and a wrong-kind read', () => {
    const store = new CredentialStore();
    expect(() =>
      store.load(
        'a',
        { kind: 'bearer', token: 'x\r\nX-Evil: 1' },
        { binding: 'b', fingerprint: 'f', version: 1 },
      ),
    ).toThrow(/line break/);
    // Characters that a latin1 head turns into CR LF (U+010D U+010A), a space, a tab: none is loaded.
    for (const token of ['x\u010d\u010aX-Evil: 1', 'two words', 'tab\there', 'caf\u00e9'])
      expect(() =>
        store.load('a', { kind: 'bearer', token }, { binding: 'b', fingerprint: 'f', version: 1 }),
      ).toThrow(/not visible ASCII/);
    const other = new CredentialStore();
    other.load(
      'a',
      { kind: 'bearer', token: 'sk-ant-api03_AZaz09-._~+/=' },
      { binding: 'b', fingerprint: 'f', version: 1 },
    );
    expect(other.lookup('a')).toMatchObject({ state: 'loaded' });
    expect(() =>
      store.load('a', { kind: 'bearer', token: '' }, { binding: 'b', fingerprint: 'f', version: 1 }),
    ).toThrow(/non-empty/);
    expect(store.size).toBe(0);
    const c = store.load('a', { kind: 'bearer', token: 't' }, { binding: 'b', fingerprint: 'f', version: 1 });
    expect(() => c.aws).toThrow(/is bearer, not aws/);
  });
});
