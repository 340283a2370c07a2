import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backoffDelay as agentBackoff, DEFAULT_RECONNECT_BACKOFF } from '../../agent/backoff.ts';
import { editDistance } from '../../reconciler/common/edit-distance.ts';
import { displayUrl, Redactor, stripUrlUserinfo } from '../../reconciler/common/redact.ts';
import { backoffDelay, retry } from '../../reconciler/common/retry.ts';

/** The textbook full-matrix Levenshtein distance, to check the banded one against. */
function reference(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i]![j] = Math.min(
        d[i - 1]![j]! + 1,
        d[i]![j - 1]! + 1,
        d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
  return d[a.length]![b.length]!;
}

describe('editDistance', () => {
  it('gives the Levenshtein distance', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('conection', 'connection')).toBe(1);
  });

  it('matches the full-matrix distance, and with a limit answers min(distance, limit + 1)', () => {
    const word = fc.string({ unit: fc.constantFrom('a', 'b', 'c', 'd'), maxLength: 14 });
    fc.assert(
      fc.property(word, word, fc.integer({ min: 0, max: 6 }), (a, b, limit) => {
        const exact = reference(a, b);
        expect(editDistance(a, b)).toBe(exact);
        expect(editDistance(a, b, limit)).toBe(Math.min(exact, limit + 1));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('Redactor (the one used by the git source and every credential provider)', () => {
  it('removes a secret in plain, URL-encoded, base64 and base64url form', () => {
    const secret = 's3cr/t+value?~~';
    const r = new Redactor().add(secret);
    const forms = [
      secret,
      encodeURIComponent(secret),
      Buffer.from(secret).toString('base64'),
      Buffer.from(secret).toString('base64url'),
    ];
    expect(r.redact(`a ${forms.join(' b ')} c`)).toBe('a *** b *** b *** b *** c');
  });

  it('removes a Vault token quoted in server text', () => {
    const token = 'hvs.CAESIJ1yq2Lq4Vf8mQz0pXwR';
    const r = new Redactor().add(token);
    expect(r.redact(`permission denied: token "${token}" lacks the policy`)).toBe(
      'permission denied: token "***" lacks the policy',
    );
  });

  it('hides both parts of URL userinfo, wherever a URL appears in text', () => {
    const text =
      'fetching https://ghp_TOKEN123:x-oauth-basic@github.com/org/repo.git and http://user@h:8/x then https://ok.example/';
    expect(new Redactor().redact(text)).toBe(
      'fetching https://github.com/org/repo.git and http://h:8/x then https://ok.example/',
    );
    expect(stripUrlUserinfo('https://:pw@host/')).toBe('https://host/');
  });

  it('shows a URL without userinfo, query or fragment', () => {
    expect(displayUrl('https://tok:x@git.example.com/a.git?token=abc#frag')).toBe(
      'https://git.example.com/a.git',
    );
    expect(displayUrl('not a url https://u:p@x/y?q')).toBe('not a url https://x/y');
  });

  it('takes a value that is not well-formed UTF-16 (a lone surrogate a server sent) and still removes it', () => {
    const r = new Redactor();
    const value = 'kv-\ud800-secret-value';
    r.set('value', value).add(`${value}-fixed`);
    expect(r.redact(`echo: ${value}-fixed and ${value}`)).toBe('echo: *** and ***');
  });

  it('removes a token a server echoes with every byte but letters and digits percent-encoded', () => {
    const r = new Redactor().add('hvs.CANARY-token_1');
    expect(r.redact('denied for hvs%2ECANARY%2Dtoken%5F1 and hvs%2eCANARY%2dtoken%5f1')).toBe(
      'denied for *** and ***',
    );
  });

  it("removes a rotating slot's secret from a text that is exactly one of its forms", () => {
    // The forms are derived only for secrets no longer than the text: a text that is nothing but the secret, or
    // nothing but one of its encodings, is the edge of that rule.
    const secret = 'eyJ0.payload-with/slash+plus.sig';
    const r = new Redactor().set('jwt', secret);
    for (const form of [
      secret,
      encodeURIComponent(secret),
      Buffer.from(secret).toString('base64'),
      Buffer.from(secret).toString('base64url'),
    ])
      expect(r.redact(form), form).toBe('***');
    expect(r.redact('short')).toBe('short');
    // Not ASCII: more UTF-8 bytes than UTF-16 code units, and the text is exactly the secret.
    const accented = 'pässwörd-ü-€';
    expect(new Redactor().set('value', accented).redact(accented)).toBe('***');
  });

  it('ignores values too short to be credentials', () => {
    expect(new Redactor().add('ab').add(undefined).redact('ab cd')).toBe('ab cd');
  });

  it('keeps the current and the previous secret of a rotating slot, and every added one', () => {
    const r = new Redactor().add('static-kubeconfig-token');
    const jwts = Array.from({ length: 1000 }, (_, i) => `eyJhbGciOiJFUzI1NiJ9.login-${i}.sig`);
    for (const jwt of jwts) r.set('jwt', jwt);
    r.set('token', 'hvs.first-token').set('token', 'hvs.second-token');
    const text = (s: string) => `denied: ${s}; as base64 ${Buffer.from(s).toString('base64')}`;
    expect(r.redact(text(jwts[999]!))).toBe('denied: ***; as base64 ***');
    expect(r.redact(text(jwts[998]!))).toBe('denied: ***; as base64 ***');
    // Older ones are forgotten: a session that logs in for months holds two, not every one.
    expect(r.redact(text(jwts[0]!))).toBe(text(jwts[0]!));
    expect(r.redact('hvs.first-token hvs.second-token static-kubeconfig-token')).toBe('*** *** ***');
    // Setting the same secret again does not push the previous one out.
    r.set('token', 'hvs.second-token');
    expect(r.redact('hvs.first-token')).toBe('***');
  });
});

describe('the retry policy', () => {
  it('waits a jittered, doubling, capped delay', () => {
    const policy = { initialMs: 1000, maxMs: 8000 };
    expect(backoffDelay(1, policy, () => 0.999)).toBeCloseTo(999, 0);
    expect(backoffDelay(3, policy, () => 0.5)).toBe(2000);
    expect(backoffDelay(10, policy, () => 0.999)).toBeCloseTo(7992, 0);
    // Never less than half the first delay: a retry loop does not spin.
    expect(backoffDelay(4, policy, () => 0)).toBe(500);
  });

  it("is the agent's reconnect policy too: its defaults double from 500 ms to a 30 s ceiling, jittered", () => {
    const draws = [0.999, 0.999, 0.25, 0.999, 0.5, 0.999, 0.999, 0.999];
    const waits = draws.map((r, i) => agentBackoff(i + 1, { ...DEFAULT_RECONNECT_BACKOFF, random: () => r }));
    expect(waits.map(Math.round)).toEqual([500, 999, 500, 3996, 4000, 15984, 29970, 29970]);
    for (const [i, r] of draws.entries())
      expect(agentBackoff(i + 1, { ...DEFAULT_RECONNECT_BACKOFF, random: () => r })).toBe(
        backoffDelay(i + 1, DEFAULT_RECONNECT_BACKOFF, () => r),
      );
  });

  it('retries retryable failures up to the attempt count, with the backoff in between', async () => {
    const waits: number[] = [];
    let calls = 0;
    const err = await retry(
      async () => {
        calls++;
        throw new Error(`fail ${calls}`);
      },
      {
        attempts: 3,
        policy: { initialMs: 100, maxMs: 1000 },
        retryable: () => true,
        random: () => 0.5,
        sleep: async (ms) => {
          waits.push(ms);
        },
      },
    ).catch((e: Error) => e);
    expect((err as Error).message).toBe('fail 3');
    expect(waits).toEqual([50, 100]);
  });

  it('gives up at once on a failure that is not retryable, and returns the first success', async () => {
    let calls = 0;
    const opts = { attempts: 5, policy: { initialMs: 1, maxMs: 1 }, sleep: async () => {} };
    await expect(
      retry(
        async () => {
          calls++;
          throw new Error('no');
        },
        { ...opts, retryable: () => false },
      ),
    ).rejects.toThrow('no');
    expect(calls).toBe(1);
    expect(
      await retry(async (attempt) => (attempt < 2 ? Promise.reject(new Error('x')) : 'ok'), {
        ...opts,
        retryable: () => true,
      }),
    ).toBe('ok');
  });
});
