import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Labels } from '../../agent/attest/labels.ts';
import {
  type IdentitySelectors,
  matches,
  matchIdentity,
  resolveMatches,
  SelectorIndex,
} from '../../agent/attest/match.ts';
import { identityForConnection } from '../../kernel-module/control/abi.ts';

const nginx: Labels = {
  'process:name': ['nginx'],
  'process:cmdline': ['nginx: master process /usr/sbin/nginx -g daemon off;'],
  'process:binary:path': ['/usr/sbin/nginx'],
  'process:uid': ['101'],
  'process:gid': ['101'],
  'k8s:pod:namespace': ['prod'],
  'k8s:label:app': ['web'],
};

describe('selector semantics', () => {
  it('AND inside a map, OR across the list, any-of inside a value list', () => {
    expect(matches(nginx, [{ 'process:name': ['nginx'], 'k8s:pod:namespace': ['prod'] }])).toBe(true);
    expect(matches(nginx, [{ 'process:name': ['nginx'], 'k8s:pod:namespace': ['dev'] }])).toBe(false);
    expect(matches(nginx, [{ 'process:name': ['redis'] }, { 'k8s:label:app': ['web'] }])).toBe(true);
    expect(matches(nginx, [{ 'process:name': ['curl', 'nginx', 'redis'] }])).toBe(true);
    expect(matches(nginx, [{ 'process:name': ['curl', 'redis'] }])).toBe(false);
    expect(matches(nginx, [])).toBe(false);
  });

  it('process:cmdline is a prefix of the space-joined argv; other keys are exact', () => {
    expect(matches(nginx, [{ 'process:cmdline': ['nginx: master'] }])).toBe(true);
    expect(matches(nginx, [{ 'process:cmdline': ['master'] }])).toBe(false);
    expect(matches(nginx, [{ 'process:name': ['ngin'] }])).toBe(false);
    expect(matches(nginx, [{ 'process:binary:path': ['/usr/sbin/nginx'] }])).toBe(true);
    expect(matches(nginx, [{ 'process:binary:path': ['/usr/sbin/nginx2'] }])).toBe(false);
  });

  it('compares uid and gid as integers', () => {
    expect(matches(nginx, [{ 'process:uid': ['0101'] }])).toBe(true);
    expect(matches(nginx, [{ 'process:uid': ['101'], 'process:gid': ['00101'] }])).toBe(true);
    expect(matches(nginx, [{ 'process:uid': ['1010'] }])).toBe(false);
    expect(matches(nginx, [{ 'process:uid': ['1e2'] }])).toBe(false);
  });

  it('a missing label fails its key; a map naming no process key matches nothing', () => {
    expect(matches(nginx, [{ 'systemd:unit': ['nginx.service'] }])).toBe(false);
    expect(matches(nginx, [{ 'destination:port': ['443'] }])).toBe(false);
    expect(matches(nginx, [{}])).toBe(false);
  });

  it('a selector value with U+FFFD (what invalid bytes decode to) never matches', () => {
    const odd: Labels = { 'process:name': ['a\uFFFD'], 'process:cmdline': ['python3 app.py \uFFFD'] };
    expect(matches(odd, [{ 'process:name': ['a\uFFFD'] }])).toBe(false);
    // The valid prefix before the invalid bytes still matches.
    expect(matches(odd, [{ 'process:cmdline': ['python3 app.py'] }])).toBe(true);
  });

  it('destination:port limits an identity to ports; the union over its matching maps', () => {
    const id: IdentitySelectors = {
      spiffeId: 'spiffe://td/a',
      selectors: [
        { 'process:name': ['nginx'], 'destination:port': ['8080'] },
        { 'k8s:label:app': ['web'], 'destination:port': ['443', '8443'] },
        { 'process:name': ['redis'] },
      ],
    };
    expect(matchIdentity(nginx, id)).toEqual({
      spiffeId: 'spiffe://td/a',
      destinationPorts: [443, 8080, 8443],
    });
    expect(matchIdentity(nginx, { ...id, selectors: [...id.selectors, { 'process:uid': ['101'] }] })).toEqual(
      {
        spiffeId: 'spiffe://td/a',
        destinationPorts: null,
      },
    );
    expect(
      matchIdentity(nginx, {
        spiffeId: 'x',
        selectors: [{ 'process:name': ['nginx'], 'destination:port': ['0'] }],
      }),
    ).toBeNull();
  });
});

describe('resolution of several matches', () => {
  it('two identities on overlapping ports: a conflict and no identity', () => {
    const r = resolveMatches([
      { spiffeId: 'spiffe://td/b', destinationPorts: null },
      { spiffeId: 'spiffe://td/a', destinationPorts: [443] },
    ]);
    expect(r).toEqual({
      spiffeId: null,
      destinationPorts: null,
      conflict: ['spiffe://td/a', 'spiffe://td/b'],
    });
    expect(identityForConnection({ pid: 1, startTime: 1, ...r }, 443)).toEqual({
      conflict: ['spiffe://td/a', 'spiffe://td/b'],
    });
  });

  it('identities on disjoint ports: per-port routes the data plane resolves per connection', () => {
    const r = resolveMatches([
      { spiffeId: 'spiffe://td/db', destinationPorts: [5432] },
      { spiffeId: 'spiffe://td/api', destinationPorts: [443, 8443] },
    ]);
    expect(r.conflict).toBeNull();
    expect(r.spiffeId).toBeNull();
    const record = { pid: 1, startTime: 1, ...r };
    expect(identityForConnection(record, 5432)).toEqual({ spiffeId: 'spiffe://td/db' });
    expect(identityForConnection(record, 8443)).toEqual({ spiffeId: 'spiffe://td/api' });
    expect(identityForConnection(record, 80)).toBeNull();
  });

  it('one identity limited to a port gives no identity to other ports', () => {
    const r = resolveMatches([{ spiffeId: 'spiffe://td/a', destinationPorts: [8080] }]);
    expect(identityForConnection({ pid: 1, startTime: 1, ...r }, 8080)).toEqual({
      spiffeId: 'spiffe://td/a',
    });
    expect(identityForConnection({ pid: 1, startTime: 1, ...r }, 9090)).toBeNull();
  });
});

describe('SelectorIndex', () => {
  const small = fc.constantFrom('a', 'b', 'c', '0', '00', '1', '01');
  const selector = fc
    .record(
      {
        'process:name': fc.array(small, { minLength: 1, maxLength: 2 }),
        'process:uid': fc.array(small, { minLength: 1, maxLength: 2 }),
        'k8s:label:app': fc.array(small, { minLength: 1, maxLength: 2 }),
        'process:cmdline': fc.array(fc.constantFrom('', 'a', 'ab', 'abc', 'b'), {
          minLength: 1,
          maxLength: 2,
        }),
        'destination:port': fc.array(fc.constantFrom('80', '443', '0'), { minLength: 1, maxLength: 2 }),
      },
      { requiredKeys: [] },
    )
    .map((s) => s as Record<string, string[]>);
  // Maps with only a command-line prefix (and maybe ports) are filed apart: make them common.
  const cmdlineOnly = fc
    .record(
      {
        'process:cmdline': fc.array(fc.constantFrom('', 'a', 'ab', 'abc', 'b'), {
          minLength: 1,
          maxLength: 2,
        }),
        'destination:port': fc.array(fc.constantFrom('80', '443'), { minLength: 1, maxLength: 2 }),
      },
      { requiredKeys: ['process:cmdline'] },
    )
    .map((s) => s as Record<string, string[]>);
  const anySelector = fc.oneof(selector, cmdlineOnly);
  const labels = fc
    .record(
      {
        'process:name': small,
        'process:uid': small,
        'k8s:label:app': small,
        'process:cmdline': fc.constantFrom('', 'a', 'ab', 'abc', 'abcd', 'b', 'ba'),
        'systemd:unit': small,
      },
      { requiredKeys: [] },
    )
    .map((l) => Object.fromEntries(Object.entries(l).map(([k, v]) => [k, [v as string]])) as Labels);

  it('finds exactly what matching every identity one by one finds', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(anySelector, { maxLength: 3 }), { maxLength: 8 }),
        fc.array(labels, { minLength: 1, maxLength: 10 }),
        (identitySelectors, processes) => {
          const identities = identitySelectors.map((selectors, i) => ({
            spiffeId: `spiffe://td/w${i}`,
            selectors,
          }));
          const index = new SelectorIndex(identities);
          for (const l of processes) {
            const naive = identities.map((id) => matchIdentity(l, id)).filter((m) => m !== null);
            naive.sort((a, b) => (a!.spiffeId < b!.spiffeId ? -1 : 1));
            expect(index.match(l)).toEqual(naive);
          }
        },
      ),
      { numRuns: 400 },
    );
  });
});
