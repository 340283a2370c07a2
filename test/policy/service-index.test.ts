/**
 * The Service index followed across revisions answers as a fresh index of the same Services does, also past
 * the point where churning label values make it start over.
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
});
