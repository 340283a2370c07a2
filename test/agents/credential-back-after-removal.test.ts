/**
 * Found by review (with `up`: remove a CredentialBinding in one commit, `git reset --hard` back to the
 * commit before; or rename a binding and rename it back): the node never gets the credential again. The status
 * says the binding is OK, `drift` reports `missing credential ... the reconciler holds version 1; the node holds
 * none`, and it stays so until `drift --heal`.
 *
 * Why it did: the agent session remembered what it sent per reference hash (`credHeld`, session.ts) and never forgot a
 * reference the agent's program dropped (the agent drops the value with it). The reference came back with the
 * same hash and the same value (same fingerprint), so sendCredentials skipped it.
 *
 * The SimAgent keeps every value it was sent; here it drops the values whose reference its program no longer
 * holds, as the real agent does with its credential directories.
 */
import { cpSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Reconciler } from '../../reconciler/loop/reconciler.ts';
import { createLogger } from '../../reconciler/telemetry/logger.ts';
import { scratch } from '../support/scratch.ts';
import { SimAgent } from '../support/sim-agent.ts';

const SECRET =
  'apiVersion: v1\nkind: Secret\nmetadata:\n  name: quickstart-echo-token\n  namespace: riptides-system\ntype: Opaque\nstringData:\n  token: "qs-echo-token-value"\n';

describe('a credential binding removed and brought back ', () => {
  const tmp = scratch('review-cred-back');
  let reconciler: Reconciler | undefined;
  let agent: SimAgent | undefined;
  afterAll(async () => {
    agent?.stop();
    await reconciler?.stop(1000);
    tmp.cleanup();
  });

  it('sends the value again when the binding comes back', async () => {
    const policy = join(tmp.dir, 'policy');
    cpSync(join(import.meta.dirname, '..', '..', 'policies', 'quickstart'), policy, { recursive: true });
    const secrets = join(tmp.dir, 'secrets');
    mkdirSync(secrets);
    writeFileSync(join(secrets, 'echo-token.yaml'), SECRET);
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
    const token = await reconciler.createJoinToken({ daemonGroup: 'riptides/daemongroup/local/quickstart' });
    agent = (await SimAgent.join(reconciler.agentAddress, token, join(tmp.dir, 'agent'))).start();
    const a = agent;
    const refs = () => [...(a.program?.credentialRefs.keys() ?? [])];
    await a.until(() => refs().length === 1 && a.credentials.has(refs()[0]!), 20_000, 'the echo credential');
    const ref = refs()[0]!;

    // Commit 2: the binding is removed. The agent's program drops the reference, and the agent its value.
    const file = join(policy, '40-credential-bindings.yaml');
    const text = readFileSync(file, 'utf8');
    renameSync(file, join(tmp.dir, 'bindings.yaml.away'));
    reconciler.trigger('api');
    await reconciler.idle();
    await a.until(() => !refs().includes(ref), 20_000, 'the program without the binding');
    for (const h of [...a.credentials.keys()]) if (!refs().includes(h)) a.credentials.delete(h);

    // Commit 3 (a revert): the binding is back, same reference, same value.
    writeFileSync(file, text);
    reconciler.trigger('api');
    await reconciler.idle();
    await a.until(() => refs().includes(ref), 20_000, 'the program with the binding again');
    const cb = reconciler.status().resources.find((r) => r.kind === 'CredentialBinding') as {
      state?: string;
    };
    await new Promise((r) => setTimeout(r, 2000));
    expect(cb?.state).toBe('OK'); // the status says the binding is fine...
    expect(a.credentials.has(ref), 'the node holds the credential again').toBe(true); // ...fails: never sent
  }, 90_000);
});
