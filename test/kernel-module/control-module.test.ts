import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { sidOf } from '../../kernel-module/control/abi.ts';
import { ControlModule, type EnforcedState, type Refusal } from '../../kernel-module/control/module.ts';
import { ControlReader } from '../../kernel-module/control/reader.ts';
import { ControlWriter } from '../../kernel-module/control/writer.ts';
import { identityRule, type Pki, startPki, TD, table } from '../support/control-fixtures.ts';
import { waitFor } from '../support/cred-wait.ts';
import { tempDir } from '../support/scratch.ts';

let pki: Pki;
beforeAll(async () => {
  pki = await startPki();
});
afterAll(() => pki.close());

const API = `spiffe://${TD}/app/api`;

async function setup() {
  const root = join(tempDir('module'), 'riptides');
  const writer = await ControlWriter.open(root);
  await writer.writeConfig({ trustDomain: TD, daemonId: 'node-a' });
  await writer.writeTrustBundle(pki.authority.bundlePem());
  await writer.ensureInterceptCa();
  const module = new ControlModule({ root, pollIntervalMs: 50 });
  onTestFinished(() => module.stop());
  const enforced: EnforcedState[] = [];
  const refused: Refusal[] = [];
  module.on('enforced', (s) => enforced.push(s));
  module.on('refused', (r) => refused.push(r));
  return { root, writer, module, reader: new ControlReader(root), enforced, refused };
}

describe('kernel side of the control interface', () => {
  it('enforces a valid table with its SVIDs, reports the version in rules.enforced, and is healthy', async () => {
    const { writer, module, reader } = await setup();
    const svid = await writer.writeSvid(API, await pki.svid(API));
    const written = await writer.writeRules(table('prog-1', [identityRule('app/api', { svid })]));
    await module.start();
    expect(await reader.enforced()).toMatchObject({ version: 'prog-1', generation: written.generation });
    expect(await reader.health()).toEqual({ state: 'ok' });
    const state = module.current()!;
    expect(state.version).toBe('prog-1');
    expect(state.svids.get(API)?.serial).toBe(svid.serial);
    expect(state.trustBundle?.length).toBeGreaterThan(0);
    expect(state.interceptCa).not.toBeNull();
    expect(state.config?.daemon_id).toBe('node-a');
  });

  it('follows the writer: a new table is enforced, and an agent can wait for the verdict on its generation', async () => {
    const { writer, module, reader } = await setup();
    await writer.writeRules(table('prog-1', []));
    await module.start();
    const next = await writer.writeRules(table('prog-2', [identityRule('app/api')]));
    const verdict = await reader.waitForEnforced(next.generation, { timeoutMs: 10_000 });
    expect(verdict.result).toBe('enforced');
    expect(verdict.status).toMatchObject({ version: 'prog-2', generation: next.generation });
    expect(module.current()?.version).toBe('prog-2');
  });

  it('refuses a bad table without dropping the good one: rules.enforced keeps the old version and says why', async () => {
    const { root, writer, module, reader, refused } = await setup();
    const good = await writer.writeRules(table('prog-good', [identityRule('app/api')]));
    await module.start();
    // A table the writer would refuse, put there by hand (or by a foreign daemon).
    const bad = JSON.parse(readFileSync(join(root, 'rules'), 'utf8'));
    bad.generation = good.generation + 1;
    bad.version = 'prog-bad';
    bad.identities[0].egress[0].tls.mode = 'STRICT';
    writeFileSync(join(root, 'rules'), JSON.stringify(bad));
    const verdict = await reader.waitForEnforced(good.generation + 1, { timeoutMs: 10_000 });
    expect(verdict.result).toBe('refused');
    expect(verdict.status).toMatchObject({
      version: 'prog-good',
      generation: good.generation,
      error: { generation: good.generation + 1, version: 'prog-bad' },
    });
    expect(verdict.status?.error?.reason).toMatch(/identities\[0\]\.egress\[0\]\.tls\.mode/);
    expect(module.current()?.version).toBe('prog-good');
    expect(refused.at(-1)).toMatchObject({ what: 'rules', generation: good.generation + 1 });
    const health = await reader.health();
    expect(health.state).toBe('degraded');
    expect((health as { reason: string }).reason).toMatch(/generation \d+ stays in force/);
    // The next good table clears it.
    const fixed = await writer.writeRules(table('prog-fixed', [identityRule('app/api')]));
    expect((await reader.waitForEnforced(fixed.generation, { timeoutMs: 10_000 })).result).toBe('enforced');
    await waitFor('health OK', async () => (await reader.health()).state === 'ok');
  });

  it('refuses JSON garbage and a removed table, keeping what is in force', async () => {
    const { root, writer, module, reader } = await setup();
    const good = await writer.writeRules(table('prog-good', []));
    await module.start();
    writeFileSync(join(root, 'rules'), '{"abi":1,"version":');
    await waitFor('refusal', async () => (await reader.enforced())?.error !== undefined);
    expect((await reader.enforced())?.error?.reason).toMatch(/not JSON/);
    rmSync(join(root, 'rules'));
    await waitFor('removal noticed', async () =>
      /removed/.test((await reader.enforced())?.error?.reason ?? ''),
    );
    expect(module.current()?.generation).toBe(good.generation);
  });

  it('refuses a table whose SVID on disk is not the one it names, or whose key is not the certificate key', async () => {
    const { root, writer, module, reader } = await setup();
    const first = await writer.writeSvid(API, await pki.svid(API));
    await writer.writeRules(table('v1', [identityRule('app/api', { svid: first })]));
    await module.start();
    expect(module.current()?.svids.get(API)?.serial).toBe(first.serial);
    // A rotation written in the right order (key, certificate, then the table naming it) is taken.
    const second = await writer.writeSvid(API, await pki.svid(API));
    const t2 = await writer.writeRules(table('v2', [identityRule('app/api', { svid: second })]));
    expect((await reader.waitForEnforced(t2.generation, { timeoutMs: 10_000 })).result).toBe('enforced');
    expect(module.current()?.svids.get(API)?.serial).toBe(second.serial);
    // A table naming a serial that is not on disk is refused.
    const t3 = await writer.writeRules(table('v3', [identityRule('app/api', { svid: first })]));
    const v3 = await reader.waitForEnforced(t3.generation, { timeoutMs: 10_000 });
    expect(v3.result).toBe('refused');
    expect(v3.status?.error?.reason).toMatch(
      new RegExp(`has serial ${second.serial}, the table says ${first.serial}`),
    );
    // A key swapped by hand under a certificate is refused when a table names it.
    const other = await pki.svid(API);
    const third = await writer.writeSvid(API, other);
    writeFileSync(join(root, 'identities', sidOf(API), 'svid.key'), (await pki.svid(API)).keyPem);
    const t4 = await writer.writeRules(table('v4', [identityRule('app/api', { svid: third })]));
    const v4 = await reader.waitForEnforced(t4.generation, { timeoutMs: 10_000 });
    expect(v4.status?.error?.reason).toMatch(/the key is not the certificate's key/);
    expect(module.current()?.version).toBe('v2');
  });

  it('refuses a replayed older table and a same-generation table edited by hand', async () => {
    const { root, writer, module, reader } = await setup();
    await writer.writeRules(table('old', []));
    const oldText = readFileSync(join(root, 'rules'), 'utf8');
    const current = await writer.writeRules(table('new', [identityRule('app/api')]));
    await module.start();
    writeFileSync(join(root, 'rules'), oldText);
    await waitFor('replay refused', async () =>
      /replayed/.test((await reader.enforced())?.error?.reason ?? ''),
    );
    const edited = JSON.parse(readFileSync(join(root, 'rules'), 'utf8'));
    edited.generation = current.generation;
    edited.version = 'new';
    edited.identities = [];
    writeFileSync(join(root, 'rules'), JSON.stringify(edited));
    await waitFor('edit refused', async () =>
      /edited outside the writer/.test((await reader.enforced())?.error?.reason ?? ''),
    );
    expect(module.current()?.table.identities).toHaveLength(1);
  });

  it('reports an expired SVID in health', async () => {
    const { writer, reader } = await setup();
    const svid = await writer.writeSvid(API, await pki.svid(API, 60));
    await writer.writeRules(table('v1', [identityRule('app/api', { svid })]));
    const late = new ControlModule({
      root: writer.root,
      pollIntervalMs: 50,
      now: () => new Date(Date.now() + 3600_000),
    });
    onTestFinished(() => late.stop());
    await late.start();
    const health = await reader.health();
    expect(health).toMatchObject({ state: 'degraded' });
    expect((health as { reason: string }).reason).toMatch(/SVID of spiffe:\/\/example.org\/app\/api expired/);
  });

  it('serves the process table by pid and start time, and removes health when stopped', async () => {
    const { writer, module, reader } = await setup();
    await writer.writeRules(table('v1', []));
    await module.start();
    await writer.writeProcesses([
      { pid: 4242, startTime: 1000, spiffeId: API, conflict: null, destinationPorts: null },
    ]);
    await waitFor('processes', () => module.process(4242) !== undefined);
    expect(module.process(4242, 1000)?.spiffeId).toBe(API);
    // The same pid with another start time is another process: it inherits nothing.
    expect(module.process(4242, 1001)).toBeUndefined();
    await module.stop();
    expect(await reader.health()).toEqual({ state: 'absent' });
    expect(() => statSync(join(writer.root, 'health'))).toThrow(/ENOENT/);
  });
});
