/**
 * The applied revision is made durable at once, the status every few seconds: a reconciler killed in between
 * reads back a status that still shows the revision before. Restarted, it serves the applied revision again and
 * its status says so (the resources as that revision made them, the source's applied revision, an event), not
 * only after the next commit. The kill is made exact here by putting back the status files written before it.
 */
import { appendFileSync, cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Reconciler } from '../../reconciler/loop/reconciler.ts';
import { createLogger } from '../../reconciler/telemetry/logger.ts';
import { quickstartRemote } from '../support/quickstart-remote.ts';
import { scratch } from '../support/scratch.ts';

describe('a restart after an apply whose status was never written', () => {
  const tmp = scratch('restore-status');
  let reconciler: Reconciler | undefined;
  afterAll(async () => {
    await reconciler?.stop(1000);
    tmp.cleanup();
  });

  const policy = join(tmp.dir, 'policy');
  const stateDir = join(tmp.dir, 'state');
  const storeDir = join(stateDir, 'store');
  const start = () =>
    Reconciler.start({
      repo: policy,
      stateDir,
      agents: { host: '127.0.0.1', port: 0 },
      api: null,
      pollIntervalMs: 0,
      watch: false,
      credentials: null,
      logger: createLogger({ level: 'silent' }),
    });
  const statusFiles = () => readdirSync(storeDir).filter((f) => f.startsWith('status'));
  const tagsOf = (r: Reconciler) =>
    (
      r.status().resources.find((x) => x.kind === 'Service' && x.name === 'quickstart-echo') as {
        tags: string[];
      }
    ).tags;

  it('shows the revision it serves again, with its resources', async () => {
    cpSync(join(import.meta.dirname, '..', '..', 'policies', 'quickstart'), policy, { recursive: true });
    reconciler = await start();
    await reconciler.idle();
    const first = reconciler.applied()!.revision;
    expect(tagsOf(reconciler)).toEqual(['echo']);
    await reconciler.stop(1000);
    // The status as written after the first revision.
    const before = new Map(statusFiles().map((f) => [f, readFileSync(join(storeDir, f))]));

    const services = join(policy, '10-services.yaml');
    writeFileSync(
      services,
      readFileSync(services, 'utf8').replace('        - echo\n', '        - echo-v2\n'),
    );
    reconciler = await start();
    await reconciler.idle();
    const second = reconciler.applied()!.revision;
    expect(second).not.toBe(first);
    expect(tagsOf(reconciler)).toEqual(['echo-v2']);
    await reconciler.stop(1000);

    // Killed after the apply, before the status write: the status files are those of the first revision.
    for (const f of statusFiles()) rmSync(join(storeDir, f));
    for (const [f, bytes] of before) writeFileSync(join(storeDir, f), bytes);
    reconciler = await start();
    const status = reconciler.status();
    expect(status.source).toMatchObject({ lastAppliedRevision: second });
    expect(tagsOf(reconciler)).toEqual(['echo-v2']);
    const service = status.resources.find((x) => x.kind === 'Service' && x.name === 'quickstart-echo')!;
    expect(service.observedRevision).toBe(second);
    expect(status.events['Source/policy']?.some((e) => e.reason === 'Applied' && e.revision === second)).toBe(
      true,
    );
  }, 60_000);

  it('keeps the diagnostics of a refused commit across a restart that cannot fetch', async () => {
    await reconciler?.stop(1000);
    reconciler = undefined;
    const dir = join(tmp.dir, 'refused');
    const { server, clone, follow } = await quickstartRemote(dir);
    const remote = () => follow({ git: { timeoutMs: 2_000 }, credentials: null });
    try {
      reconciler = await remote();
      await reconciler.idle();
      appendFileSync(
        join(clone.dir, 'policy', '30-workload-identities.yaml'),
        '---\napiVersion: core.riptides.io/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: broken\n  namespace: riptides-system\nspec:\n  workloadID: quickstart/app/broken\n  scope:\n    daemonGroup:\n      id: riptides/daemongroup/local/quickstart\n  selectors:\n    - process:nmae: typo\n',
      );
      await clone.commit('a typo');
      await clone.push();
      reconciler.trigger('api');
      await reconciler.idle();
      const refused = reconciler.status().source!.diagnostics;
      expect(refused.length).toBeGreaterThan(0);
      await reconciler.stop(1000);

      // The git server stops answering: the restart serves the last good revision and cannot fetch.
      server.setMode('hang');
      reconciler = await remote();
      expect(reconciler.status().source!.diagnostics).toEqual(refused);
      await reconciler.idle();
      expect(reconciler.status().source!.diagnostics).toEqual(refused);
    } finally {
      await reconciler?.stop(1000);
      reconciler = undefined;
      await server.close();
    }
  }, 60_000);
});
