import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readPolicyFile } from '../../reconciler/policy/resources.ts';
import { ParseCache, ValidatedRevisions } from '../../reconciler/revision/parse-cache.ts';
import { tempDir } from '../support/scratch.ts';

const enc = (s: string) => new TextEncoder().encode(s);
const BUILD = 'test-build';
const service = (name: string) =>
  `apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  labels:\n    app: ${name}\n`;

describe('parse cache on disk', () => {
  it('keeps clean files between runs, appends new ones to a delta, then compacts', async () => {
    const dir = tempDir('parse-cache');
    const first = ParseCache.open(dir, 'v', BUILD);
    const map = first.asMap();
    for (let i = 0; i < 100; i++)
      map.set(`oid-${i}`, readPolicyFile({ path: `f${i}.yaml`, bytes: enc(service(`s${i}`)) }));
    await first.save();
    expect(readdirSync(dir)).toEqual(['parse-cache-v.json']);

    const second = ParseCache.open(dir, 'v', BUILD);
    const again = second.asMap();
    expect(again.get('oid-7')?.resources[0]?.located.key).toBe('Service/riptides-system/s7');
    again.set('oid-new', readPolicyFile({ path: 'new.yaml', bytes: enc(service('fresh')) }));
    await second.save();
    expect(readdirSync(dir).sort()).toEqual(['parse-cache-v.delta.json', 'parse-cache-v.json']);
    expect(ParseCache.open(dir, 'v', BUILD).asMap().get('oid-new')?.path).toBe('new.yaml');
    // A run that parsed nothing new writes nothing.
    const before = readFileSync(join(dir, 'parse-cache-v.json'), 'utf8');
    await ParseCache.open(dir, 'v', BUILD).save();
    expect(readFileSync(join(dir, 'parse-cache-v.json'), 'utf8')).toBe(before);
  });

  it('never stores file text, files with diagnostics, or Secrets', async () => {
    const dir = tempDir('parse-cache');
    const cache = ParseCache.open(dir, 'v', BUILD);
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
    await cache.save();
    const written = readdirSync(dir)
      .map((f) => readFileSync(join(dir, f), 'utf8'))
      .join('\n');
    expect(written).not.toContain('CACHE-SECRET-VALUE');
    expect(written).not.toContain('Nope');
    const stored = JSON.parse(written) as { entries: Record<string, { text: unknown }> };
    expect(Object.keys(stored.entries)).toEqual(['good']);
    expect(stored.entries.good!.text).toBeNull();
  });

  it('reads back nothing that another build wrote: parsed files and validation records', async () => {
    const dir = tempDir('parse-cache');
    const cache = ParseCache.open(dir, 'v', 'build-a');
    const map = cache.asMap();
    // 100 entries go to the main file, one more to the delta: both files must follow the build.
    for (let i = 0; i < 100; i++)
      map.set(`oid-${i}`, readPolicyFile({ path: `f${i}.yaml`, bytes: enc(service(`s${i}`)) }));
    await cache.save();
    const more = ParseCache.open(dir, 'v', 'build-a');
    more.asMap().set('oid-late', readPolicyFile({ path: 'late.yaml', bytes: enc(service('late')) }));
    await more.save();
    const records = ValidatedRevisions.open(dir, 'build-a');
    records.add('revision-key');
    await records.save();

    const same = ParseCache.open(dir, 'v', 'build-a').asMap();
    expect(same.get('oid-3')?.path).toBe('f3.yaml');
    expect(same.get('oid-late')?.path).toBe('late.yaml');
    expect(ValidatedRevisions.open(dir, 'build-a').has('revision-key')).toBe(true);

    const other = ParseCache.open(dir, 'v', 'build-b').asMap();
    expect(other.get('oid-3')).toBeUndefined();
    expect(other.get('oid-late')).toBeUndefined();
    expect(ValidatedRevisions.open(dir, 'build-b').has('revision-key')).toBe(false);
  });
});
