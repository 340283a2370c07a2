import { describe, expect, it } from 'vitest';
import {
  checkSelectorValue,
  isAtLeastAsBroad,
  isKnownSelectorKey,
  labelsMatch,
  normalizeSelector,
} from '../../reconciler/policy/selectors.ts';

describe('process selectors', () => {
  it('knows the key families the agent attests', () => {
    for (const key of [
      'process:name',
      'process:cmdline',
      'process:binary:path',
      'process:uid',
      'destination:port',
      'k8s:label:app',
      'k8s:pod:namespace',
      'k8s:container:name',
      'docker:label:tier',
      'systemd:unit',
    ]) {
      expect(isKnownSelectorKey(key), key).toBe(true);
    }
    for (const key of ['process:nmae', 'k8s:label:', 'k8s:pod', 'cmdline', 'docker:'])
      expect(isKnownSelectorKey(key), key).toBe(false);
  });

  it('normalises string, integer and list values to sorted string lists', () => {
    expect(
      normalizeSelector({
        'process:name': ['nginx', 'curl', 'nginx'],
        'destination:port': 8080,
        'k8s:label:app': 'web',
      }),
    ).toEqual({
      'destination:port': ['8080'],
      'k8s:label:app': ['web'],
      'process:name': ['curl', 'nginx'],
    });
  });

  it('checks numeric keys', () => {
    expect(checkSelectorValue('destination:port', 8080)).toBeNull();
    expect(checkSelectorValue('destination:port', 70000)).toMatch(/1\.\.65535/);
    expect(checkSelectorValue('process:uid', 'root')).toMatch(/integer/);
    expect(checkSelectorValue('process:name', 'x')).toBeNull();
  });

  it('decides "at least as broad" with list semantics and cmdline prefixes', () => {
    const n = normalizeSelector;
    expect(
      isAtLeastAsBroad(
        n({ 'process:name': 'nginx' }),
        n({ 'process:name': 'nginx', 'k8s:pod:namespace': 'web' }),
      ),
    ).toBe(true);
    expect(isAtLeastAsBroad(n({ 'process:name': ['nginx', 'curl'] }), n({ 'process:name': 'curl' }))).toBe(
      true,
    );
    expect(isAtLeastAsBroad(n({ 'process:name': 'curl' }), n({ 'process:name': ['nginx', 'curl'] }))).toBe(
      false,
    );
    expect(
      isAtLeastAsBroad(
        n({ 'process:cmdline': 'next-server' }),
        n({ 'process:cmdline': 'next-server (v15)' }),
      ),
    ).toBe(true);
    expect(
      isAtLeastAsBroad(
        n({ 'process:cmdline': 'next-server (v15)' }),
        n({ 'process:cmdline': 'next-server' }),
      ),
    ).toBe(false);
    expect(isAtLeastAsBroad(n({ 'k8s:label:app': 'a' }), n({ 'process:name': 'nginx' }))).toBe(false);
  });

  it('matches service labels with AND semantics', () => {
    expect(
      labelsMatch(
        { app: 'myapp', service: 'backend-api' },
        { app: 'myapp', service: 'backend-api', tier: 'x' },
      ),
    ).toBe(true);
    expect(labelsMatch({ app: 'myapp', service: 'backend-api' }, { app: 'myapp' })).toBe(false);
  });
});
