/**
 * The status follows the credentials after the pass that applied them: a binding whose Secret appears later
 * turns OK in the status without another commit, and FAILED again when the Secret goes. The status refresh
 * skips the credentials while the manager answers with the same status; this is what it must not skip.
 */
import { appendFileSync, cpSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Reconciler } from '../../reconciler/loop/reconciler.ts';
import type { ResourceStatus } from '../../reconciler/status/model.ts';
import { createLogger } from '../../reconciler/telemetry/logger.ts';
import { waitFor } from '../support/cred-wait.ts';
import { quickstartRemote } from '../support/quickstart-remote.ts';
import { scratch } from '../support/scratch.ts';
import { SimAgent } from '../support/sim-agent.ts';

/** The quickstart's echo binding as the status shows it. */
const echoBinding = (r: Reconciler) =>
  r
    .status()
    .resources.find(
      (x: ResourceStatus) => x.kind === 'CredentialBinding' && x.name === 'quickstart-orders-client-echo',
    ) as (ResourceStatus & { state: string }) | undefined;

const SECRET =
  'apiVersion: v1\nkind: Secret\nmetadata:\n  name: quickstart-echo-token\n  namespace: riptides-system\ntype: Opaque\nstringData:\n  token: "qs-echo-token-value"\n';

describe('credential states after the pass', () => {
  const tmp = scratch('cred-status');
  let reconciler: Reconciler | undefined;
  afterAll(async () => {
    await reconciler?.stop(1000);
    tmp.cleanup();
  });

  it('shows a binding OK once its Secret appears, and FAILED once it is gone, with no new commit', async () => {
    const policy = join(tmp.dir, 'policy');
    cpSync(join(import.meta.dirname, '..', '..', 'policies', 'quickstart'), policy, { recursive: true });
    const secrets = join(tmp.dir, 'secrets');
    mkdirSync(secrets);
    reconciler = await Reconciler.start({
      repo: policy,
      stateDir: join(tmp.dir, 'state'),
      agents: { host: '127.0.0.1', port: 0 },
      api: null,
      pollIntervalMs: 0,
      watch: false,
      credentials: { secretsDir: secrets, backoff: { initialMs: 50, maxMs: 200 } },
      logger: createLogger({ level: 'silent' }),
    });
    await reconciler.idle();
    const binding = () => echoBinding(reconciler!);
    await waitFor('the binding FAILED (no Secret yet)', () => binding()?.state === 'FAILED', 10_000);

    const secretFile = join(secrets, 'echo-token.yaml');
    writeFileSync(secretFile, SECRET);
    await waitFor('the binding OK', () => binding()?.state === 'OK', 10_000);
    // The status carries the value's fingerprint, never the value.
    expect(binding()).toMatchObject({ fingerprint: expect.stringMatching(/^hmac-sha256:/) });
    expect(JSON.stringify(reconciler.status())).not.toContain('qs-echo-token-value');
    unlinkSync(secretFile);
    await waitFor('the binding FAILED again', () => binding()?.state === 'FAILED', 10_000);
  }, 60_000);

  it('shows a credential change while a pass waits for ACKs, not only once the pass ends', async () => {
    await reconciler?.stop(1000);
    const dir = join(tmp.dir, 'during-collect');
    const policy = join(dir, 'policy');
    cpSync(join(import.meta.dirname, '..', '..', 'policies', 'quickstart'), policy, { recursive: true });
    const secrets = join(dir, 'secrets');
    mkdirSync(secrets);
    reconciler = await Reconciler.start({
      repo: policy,
      stateDir: join(dir, 'state'),
      agents: { host: '127.0.0.1', port: 0 },
      api: null,
      pollIntervalMs: 0,
      watch: false,
      applyTimeoutMs: 30_000,
      credentials: { secretsDir: secrets, backoff: { initialMs: 50, maxMs: 200 } },
      logger: createLogger({ level: 'silent' }),
    });
    await reconciler.idle();
    const token = await reconciler.createJoinToken({ daemonGroup: 'riptides/daemongroup/local/quickstart' });
    const agent = (await SimAgent.join(reconciler.agentAddress, token, join(dir, 'agent'))).start();
    try {
      await agent.until(() => agent.program !== null, 20_000, 'first program');
      const binding = () => echoBinding(reconciler!);
      await waitFor('the binding FAILED (no Secret yet)', () => binding()?.state === 'FAILED', 10_000);

      // A commit for the agent's group, whose ACK the agent holds: the pass waits in collect.
      let answer!: () => void;
      agent.holdAnswers = new Promise((r) => {
        answer = r;
      });
      const passes = reconciler.lastPass()!.id;
      const updates = agent.updates.length;
      appendFileSync(
        join(policy, '30-workload-identities.yaml'),
        '---\napiVersion: core.riptides.io/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: quickstart-extra\n  namespace: riptides-system\nspec:\n  workloadID: quickstart/app/extra\n  scope:\n    daemonGroup:\n      id: riptides/daemongroup/local/quickstart\n  selectors:\n    - process:name: extra\n',
      );
      reconciler.trigger('api');
      await agent.until(() => agent.updates.length > updates, 20_000, 'the update');

      writeFileSync(join(secrets, 'echo-token.yaml'), SECRET);
      await waitFor('the binding OK while the pass waits', () => binding()?.state === 'OK', 10_000);
      expect(reconciler.lastPass()!.id).toBe(passes);
      answer();
      await reconciler.idle();
      expect(reconciler.lastPass()).toMatchObject({ id: passes + 1, result: 'applied' });
    } finally {
      agent.stop();
    }
  }, 90_000);

  it('shows a credential change while a fetch hangs on the git server', async () => {
    await reconciler?.stop(1000);
    const dir = join(tmp.dir, 'during-fetch');
    const { server, follow } = await quickstartRemote(dir);
    const secrets = join(dir, 'secrets');
    mkdirSync(secrets);
    try {
      reconciler = await follow({
        git: { timeoutMs: 8_000 },
        credentials: { secretsDir: secrets, backoff: { initialMs: 50, maxMs: 200 } },
      });
      await reconciler.idle();
      const binding = () => echoBinding(reconciler!);
      await waitFor('the binding FAILED (no Secret yet)', () => binding()?.state === 'FAILED', 10_000);

      // A pass whose fetch the git server never answers.
      server.setMode('hang');
      const passes = reconciler.lastPass()!.id;
      reconciler.trigger('api');
      await new Promise((r) => setTimeout(r, 300));
      writeFileSync(join(secrets, 'echo-token.yaml'), SECRET);
      // Well within the fetch's deadline (8 s), after which the status would move anyway.
      await waitFor('the binding OK while the fetch hangs', () => binding()?.state === 'OK', 4_000);
      expect(reconciler.lastPass()!.id).toBe(passes);
    } finally {
      await reconciler?.stop(1000);
      reconciler = undefined;
      await server.close();
    }
  }, 90_000);
});
