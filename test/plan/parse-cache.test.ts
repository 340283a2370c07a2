import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ParseCache } from '../../reconciler/plan/parse-cache.ts';
import { readPolicyFile } from '../../reconciler/policy/resources.ts';
import { tempDir } from '../support/scratch.ts';

const enc = (s: string) => new TextEncoder().encode(s);
const service = (name: string) =>
  `apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  labels:\n    app: ${name}\n`;

describe('parse cache on disk', () => {
  it('keeps clean files between runs, appends new ones to a delta, then compacts', () => {
    const dir = tempDir('parse-cache');
    const first = ParseCache.open(dir, 'v');
    const map = first.asMap();
    for (let i = 0; i < 100; i++)
      map.set(`oid-${i}`, readPolicyFile({ path: `f${i}.yaml`, bytes: enc(service(`s${i}`)) }));
    first.save();
    expect(readdirSync(dir)).toEqual(['parse-cache-v.json']);

    const second = ParseCache.open(dir, 'v');
    const again = second.asMap();
    expect(again.get('oid-7')?.resources[0]?.located.key).toBe('Service/riptides-system/s7');
    again.set('oid-new', readPolicyFile({ path: 'new.yaml', bytes: enc(service('fresh')) }));
    second.save();
    expect(readdirSync(dir).sort()).toEqual(['parse-cache-v.delta.json', 'parse-cache-v.json']);
    expect(ParseCache.open(dir, 'v').asMap().get('oid-new')?.path).toBe('new.yaml');
    // A run that parsed nothing new writes nothing.
    const before = readFileSync(join(dir, 'parse-cache-v.json'), 'utf8');
    ParseCache.open(dir, 'v').save();
    expect(readFileSync(join(dir, 'parse-cache-v.json'), 'utf8')).toBe(before);
  });

  it('never stores file text, files with diagnostics, or Secrets', () => {
    const dir = tempDir('parse-cache');
    const cache = ParseCache.open(dir, 'v');
    const map = cache.asMap();
    map.set('bad', readPolicyFile({ path: 'bad.yaml', bytes: enc('kind: Nope\n') }));
    map.set(
      'secret',
      readPolicyFile({
        path: 's.yaml',
        bytes: enc(
          'apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  token: CACHE-SECRET-VALUE\n',
        ),
      }),
    );
    map.set('good', readPolicyFile({ path: 'g.yaml', bytes: enc(service('g')) }));
    cache.save();
    const written = readdirSync(dir)
      .map((f) => readFileSync(join(dir, f), 'utf8'))
      .join('\n');
    expect(written).not.toContain('CACHE-SECRET-VALUE');
    expect(written).not.toContain('Nope');
    const stored = JSON.parse(written) as { entries: Record<string, { text: unknown }> };
    expect(Object.keys(stored.entries)).toEqual(['good']);
    expect(stored.entries.good!.text).toBeNull();
  });

  it('ignores a cache written in another format', () => {
    const dir = tempDir('parse-cache');
    writeFileSync(
      join(dir, 'parse-cache-v.json'),
      JSON.stringify({ format: 'something-else', entries: { x: { path: 'x' } } }),
    );
    expect(ParseCache.open(dir, 'v').asMap().get('x')).toBeUndefined();
  });
});
