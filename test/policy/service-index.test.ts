/**
 * The Service index followed across revisions answers as a fresh index of the same Services does (through
 * churning label values, random edits, and more changes than it checks), and keeps a selection as the same
 * array while no Service it matches came or went.
 */
import { describe, expect, it } from 'vitest';
import type { Service } from '../../reconciler/policy/kinds/index.ts';
import type { Located } from '../../reconciler/policy/resources.ts';
import { ServiceIndex } from '../../reconciler/policy/service-index.ts';

const service = (name: string, labels: Record<string, string>): Located<Service> => ({
  key: `Service/default/${name}`,
  file: `${name}.yaml`,
  doc: 0,
  value: {
    apiVersion: 'core.riptides.io/v1alpha1',
    kind: 'Service',
    metadata: { name },
    spec: { addresses: [{ address: `${name}.example.com` }], labels },
  } as Service,
});

describe('ServiceIndex.update', () => {
  it('selects as a fresh index through 3,000 revisions whose label values churn', () => {
    const stable = service('stable', { app: 'web', tier: 'front' });
    const byApp = { app: 'web' };
    const byTier = { tier: 'front' };
    const kept = new ServiceIndex([stable]);
    for (let round = 1; round <= 3000; round++) {
      // One Service whose build label changes every revision; every tenth revision it also joins tier front.
      const churn = service('churn', {
        app: 'web',
        build: `b${round}`,
        ...(round % 10 === 0 ? { tier: 'front' } : {}),
      });
      const services = [stable, churn];
      kept.update(services);
      const fresh = new ServiceIndex(services);
      for (const sel of [byApp, byTier]) expect(kept.select(sel)).toEqual(fresh.select(sel));
      expect(kept.selectAny([byTier, byApp])).toEqual(fresh.selectAny([byTier, byApp]));
      const build = { build: `b${round}` };
      expect(kept.select(build)).toEqual(fresh.select(build));
    }
  });

  it('selects as a fresh index through random edits, additions and removals', () => {
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const labelsOf = () => ({
      app: `a${random(4)}`,
      tier: random(3) === 0 ? 'front' : 'back',
      ...(random(2) ? { zone: `z${random(2)}` } : {}),
    });
    const selectors: Record<string, string>[] = [
      { app: 'a1' },
      { tier: 'back' },
      { app: 'a2', tier: 'front' },
      { zone: 'z1', tier: 'back' },
      { app: 'a9' },
    ];
    const lists = [selectors.slice(0, 2), selectors.slice(2)];
    let services = Array.from({ length: 20 }, (_, i) => service(`s${i}`, labelsOf()));
    const kept = new ServiceIndex(services);
    let next = 20;
    for (let round = 0; round < 600; round++) {
      // Mostly one edit per revision; now and then a burst of more changes than the index checks one by one.
      const edits = round % 50 === 49 ? 80 : 1 + random(2);
      for (let e = 0; e < edits; e++) {
        const what = random(3);
        const i = random(services.length);
        if (what === 0)
          services = services.map((s, k) => (k === i ? service(s.value.metadata.name, labelsOf()) : s));
        else if (what === 1 && services.length > 5) services = services.filter((_, k) => k !== i);
        else services = [...services.slice(0, i), service(`s${next++}`, labelsOf()), ...services.slice(i)];
      }
      kept.update(services);
      const fresh = new ServiceIndex(services);
      for (const sel of selectors) expect(kept.select(sel)).toEqual(fresh.select(sel));
      for (const list of lists) expect(kept.selectAny(list)).toEqual(fresh.selectAny(list));
    }
  });

  it('keeps a selection as the same array while only Services it does not match come and go', () => {
    // Every Service carries tier: backend, as in most repositories; only the app label tells them apart.
    const services = Array.from({ length: 50 }, (_, i) =>
      service(`s${i}`, { app: `a${i}`, tier: 'backend' }),
    );
    const index = new ServiceIndex(services);
    const selector = { app: 'a7', tier: 'backend' };
    const first = index.select(selector);
    expect(first.map((s) => s.value.metadata.name)).toEqual(['s7']);
    // s3 is edited (a new object with the same labels) and s60 is added: neither is app a7.
    const edited = services.map((s, i) =>
      i === 3 ? service('s3', { app: 'a3', tier: 'backend', v: '2' }) : s,
    );
    index.update([...edited, service('s60', { app: 'a60', tier: 'backend' })]);
    expect(index.select(selector)).toBe(first);
    // s7 itself is edited: selected again.
    index.update(edited.map((s, i) => (i === 7 ? service('s7', { app: 'a7', tier: 'backend', v: '2' }) : s)));
    const again = index.select(selector);
    expect(again).not.toBe(first);
    expect(again.map((s) => s.value.spec.labels.v)).toEqual(['2']);
  });

  it('selects again a selector not asked since before the changes it remembers', () => {
    const services = Array.from({ length: 5 }, (_, i) => service(`s${i}`, { app: `a${i}` }));
    const index = new ServiceIndex(services);
    const selector = { app: 'a1' };
    expect(index.select(selector)).toHaveLength(1);
    // s1 leaves; then many revisions change only other Services, long past what the index remembers.
    let list = services.filter((_, i) => i !== 1);
    index.update(list);
    for (let round = 0; round < 40; round++) {
      list = list.map((s, i) => (i === 0 ? service('s0', { app: 'a0', round: String(round) }) : s));
      index.update(list);
    }
    expect(index.select(selector)).toEqual([]);
  });
});
