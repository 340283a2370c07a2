import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { closest, didYouMean, Suggestions } from '../../reconciler/policy/suggest.ts';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `spiffe://example.com/apps/team-${i}/api`);

describe('"did you mean" over large name sets (indexed once, bounded per query)', () => {
  const known = new Suggestions(ids(10_000));

  it('finds a typo at the end, at the start, and in the middle of a long ID', () => {
    expect(known.closest('spiffe://example.com/apps/team-4711/apl')).toBe(
      'spiffe://example.com/apps/team-4711/api',
    );
    expect(known.closest('spife://example.com/apps/team-4711/api')).toBe(
      'spiffe://example.com/apps/team-4711/api',
    );
    expect(known.closest('spiffe://example.com/apps/taem-4711/api')).toBe(
      'spiffe://example.com/apps/team-4711/api',
    );
  });

  it('matches case-insensitively first, and suggests nothing when nothing is close', () => {
    expect(known.closest('SPIFFE://EXAMPLE.COM/APPS/TEAM-9/API')).toBe(
      'spiffe://example.com/apps/team-9/api',
    );
    expect(known.closest('spiffe://other.org/payments')).toBeUndefined();
    expect(known.didYouMean('spiffe://example.com/apps/team-12/apj')).toBe(
      'did you mean "spiffe://example.com/apps/team-12/api"?',
    );
  });

  it('on sets small enough to scan, gives exactly the answer of a full scan', () => {
    const name = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '-'), minLength: 1, maxLength: 9 });
    fc.assert(
      fc.property(fc.array(name, { maxLength: 40 }), name, (names, input) => {
        expect(new Suggestions(names).closest(input)).toBe(closest(input, names));
      }),
      { numRuns: 500 },
    );
  });

  it('keeps the field-name hints people see', () => {
    expect(didYouMean('conection', ['connection', 'scope', 'selectors'])).toBe('did you mean "connection"?');
    expect(didYouMean('xyz', ['connection'])).toBeUndefined();
  });
});
