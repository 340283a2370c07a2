/** The one loopback rule (kernel-module/loopback.ts): where plain HTTP is allowed, and what the data plane treats as itself. */
import { describe, expect, it } from 'vitest';
import { isLoopbackHost } from '../../kernel-module/loopback.ts';

describe('isLoopbackHost', () => {
  it('is true for localhost, 127.0.0.0/8 literals and ::1, bracketed (as URL.hostname gives it) or not', () => {
    for (const h of ['localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]'])
      expect(isLoopbackHost(h), h).toBe(true);
  });

  it('is false for names that only look like loopback, other addresses and the unspecified address', () => {
    for (const h of [
      '127.0.0.1.nip.io',
      '127.example.com',
      'localhost.example.com',
      '0.0.0.0',
      '::',
      '[::]',
      '10.0.0.1',
      '::ffff:127.0.0.1',
      '',
    ])
      expect(isLoopbackHost(h), h).toBe(false);
  });
});
