/**
 * End to end with real processes on loopback: one `riptides-cli reconciler`, several `riptides-cli agent`
 * processes each with its own state directory and control interface, and workload processes the test starts
 * under names of its own. What an operator would check: the control interface of each node, the SVIDs and
 * credential files there, the logs, the exit codes.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlReader, svidDirOf } from '../../kernel-module/control/index.ts';
import { allOutput, type CliProcess, eventually, runCli, startCli } from '../support/cli-process.ts';
import {
  type FleetSpec,
  spiffeOf,
  workloadOf,
  writeFleetPolicy,
  writeSecret,
} from '../support/fleet-policy.ts';
import { copyBinary, start, uniqueName } from '../support/processes.ts';

const A = 'riptides/daemongroup/e2e/a';
const B = 'riptides/daemongroup/e2e/b';
const SECRET = 'e2e-bearer-9c1f0d3b7a5e4c2b8d6f0a1e3c5b7d9f';

interface Node {
  name: string;
  dir: string;
  root: string;
  reader: ControlReader;
  proc: CliProcess;
}

describe('reconciler and agents as processes', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'riptides-e2e-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
    // Every line every process wrote in this file's tests: never a credential value.
    for (const out of allOutput) expect(out).not.toContain(SECRET);
  });

  function setup(label: string) {
    const base = join(dir, label);
    const repo = join(base, 'repo');
    const state = join(base, 'state');
    const secrets = join(base, 'secrets');
    writeSecret(secrets, 'e2e-token', SECRET);
    const startReconciler = (listen = '127.0.0.1:0') =>
      startCli([
        'reconciler',
        '--repo',
        repo,
        '--listen',
        listen,
        '--state-dir',
        state,
        '--secrets-dir',
        secrets,
      ]);
    const token = (group: string) => {
      const r = runCli(['token', 'create', '--state-dir', state, '--daemon-group', group]);
      expect(r.status).toBe(0);
      return r.stdout.trim();
    };
    const startAgent = (name: string, addr: string, extra: string[] = [], tokenText?: string): Node => {
      const agentDir = join(base, name);
      const root = join(agentDir, 'control');
      const args = ['agent', '--state-dir', agentDir, '--server', addr, ...extra];
      // As the README advises: the token in a file, not in the arguments every local user can read.
      const tokenFile = join(base, `${name}.token`);
      if (tokenText) {
        writeFileSync(tokenFile, `${tokenText}\n`, { mode: 0o600 });
        args.push('--join-token-file', tokenFile);
      }
      const proc = startCli(args);
      if (tokenText) expect(readFileSync(`/proc/${proc.child.pid}/cmdline`, 'utf8')).not.toContain(tokenText);
      return { name, dir: agentDir, root, reader: new ControlReader(root), proc };
    };
    return { base, repo, state, startReconciler, token, startAgent };
  }

  const identitiesOf = async (n: Node) => (await n.reader.rules())?.identities.map((i) => i.spiffeId) ?? [];
  const enforcedVersion = async (n: Node) => (await n.reader.enforced())?.version ?? null;

  it('joins, scopes, SVIDs per attested process, credentials, and a NACK that keeps the program in force', async () => {
    const s = setup('main');
    const names = {
      a0: uniqueName('rta'),
      a1: uniqueName('rta'),
      a2: uniqueName('rta'),
      b0: uniqueName('rtb'),
    };
    const bins = Object.fromEntries(Object.entries(names).map(([k, n]) => [k, copyBinary(n)])) as Record<
      keyof typeof names,
      string
    >;
    const uid = process.getuid!();
    const spec: FleetSpec = {
      groups: { [A]: 3, [B]: 1 },
      selectors: {
        [workloadOf(0, 0)]: { 'process:name': [names.a0, 'not-this-one'] },
        [workloadOf(0, 1)]: { 'process:cmdline': `${bins.a1} 601` },
        [workloadOf(0, 2)]: { 'process:binary:path': bins.a2, 'process:uid': uid },
        [workloadOf(1, 0)]: { 'process:name': names.b0 },
      },
      credentials: { [workloadOf(0, 0)]: 'e2e-token' },
    };
    writeFleetPolicy(s.repo, spec);
    const reconciler = s.startReconciler();
    const addr = String((await reconciler.waitForLog((l) => l.msg === 'serving agents', 60_000)).listen);

    const tokenA1 = s.token(A);
    const a1 = s.startAgent('a1', addr, [], tokenA1);
    const a2 = s.startAgent('a2', addr, ['--max-identities', '3'], s.token(A));
    const b1 = s.startAgent('b1', addr, [], s.token(B));
    for (const n of [a1, a2, b1])
      await n.proc.waitForLog((l) => l.msg === 'program enforced (ACK)', 60_000, `${n.name} ACK`);

    // Scope: each node holds its group's identities only.
    const groupA = [0, 1, 2].map((j) => spiffeOf(workloadOf(0, j)));
    expect(await identitiesOf(a1)).toEqual(groupA);
    expect(await identitiesOf(a2)).toEqual(groupA);
    expect(await identitiesOf(b1)).toEqual([spiffeOf(workloadOf(1, 0))]);
    expect((await a1.reader.health()).state).toBe('ok');

    // The credential reaches the group-A nodes as a 0600 sysfs file, and never node B.
    const credDir = (await a1.reader.rules())!.identities[0]!.credentials[0]!.sysfs!.dir;
    const files = await eventually(
      () => a1.reader.sysfsCredential(credDir).then((f) => (f?.token ? f : undefined)),
      20_000,
      'sysfs token',
    );
    expect(files.token).toBe(SECRET);
    expect(statSync(join(a1.root, 'credentials', credDir, 'token')).mode & 0o777).toBe(0o600);
    expect(await b1.reader.sysfsCredential(credDir)).toBeNull();

    // SVIDs only for identities with a process: by name (list value), cmdline prefix, binary path + uid.
    expect((await a1.reader.rules())!.identities.every((i) => i.svid === null)).toBe(true);
    const p0 = start(bins.a0);
    start(bins.a1, ['601', '2']);
    start(bins.a2);
    const svidOf = (n: Node, id: string) => n.reader.svid(id);
    for (const id of groupA) {
      const svid = await eventually(
        () => svidOf(a1, id).then((x) => x ?? undefined),
        30_000,
        `SVID for ${id}`,
      );
      expect(new X509Certificate(svid.certPem).subjectAltName).toBe(`URI:${id}`);
      expect(statSync(join(a1.root, svidDirOf(id), 'svid.key')).mode & 0o777).toBe(0o600);
    }
    await eventually(
      async () => (await a1.reader.rules())!.identities.every((i) => i.svid !== null),
      20_000,
      'table names SVIDs',
    );
    expect(await svidOf(b1, spiffeOf(workloadOf(1, 0)))).toBeNull();

    // augment shows what a selector sees.
    const augment = runCli(['agent', 'augment', String(p0.pid)]);
    expect(augment.status).toBe(0);
    expect(augment.stdout).toContain(`process:name=${names.a0}\n`);

    // The process exits: its identity's SVID goes. It returns: a new one is issued.
    const w0 = groupA[0]!;
    const firstSerial = (await svidOf(a1, w0))!.serial;
    await p0.stop();
    await eventually(async () => (await svidOf(a1, w0)) === null, 30_000, 'SVID removed');
    start(bins.a0);
    const again = await eventually(() => svidOf(a1, w0).then((x) => x ?? undefined), 30_000, 'SVID again');
    expect(again.serial).not.toBe(firstSerial);

    // A fourth identity in group A: a1 ACKs it; a2 (at most 3) NACKs and keeps its program in force.
    const keptByA2 = await enforcedVersion(a2);
    writeFleetPolicy(s.repo, { ...spec, groups: { [A]: 4, [B]: 1 } });
    reconciler.child.kill('SIGHUP');
    await eventually(async () => (await identitiesOf(a1)).length === 4, 30_000, 'a1 has four identities');
    const nack = await a2.proc.waitForLog(
      (l) => String(l.msg).startsWith('program refused (NACK)'),
      30_000,
      'NACK',
    );
    expect(nack.code).toBe('LIMIT');
    await reconciler.waitForLog(
      (l) => l.msg === 'program refused by agent',
      20_000,
      'NACK at the reconciler',
    );
    expect(await identitiesOf(a2)).toEqual(groupA);
    expect(await enforcedVersion(a2)).toBe(keptByA2);
    expect(b1.proc.logs().filter((l) => l.msg === 'program enforced (ACK)')).toHaveLength(1);

    // A used token is refused with its reason; the agent exits 2.
    const reuse = s.startAgent('reuse', addr, [], tokenA1);
    expect(await reuse.proc.exited).toBe(2);
    expect(reuse.proc.output()).toContain('already used');

    for (const n of [a1, a2, b1]) expect(await n.proc.stop('SIGTERM')).toBe(0);
    expect(await reconciler.stop('SIGTERM')).toBe(0);
  }, 240_000);

  it('an agent killed and restarted comes back as itself; a restarted reconciler gets every agent back in sync', async () => {
    const s = setup('restarts');
    const spec: FleetSpec = { groups: { [A]: 2 } };
    writeFleetPolicy(s.repo, spec);
    let reconciler = s.startReconciler();
    const addr = String((await reconciler.waitForLog((l) => l.msg === 'serving agents', 60_000)).listen);
    let a1 = s.startAgent('a1', addr, [], s.token(A));
    const a2 = s.startAgent('a2', addr, [], s.token(A));
    for (const n of [a1, a2]) await n.proc.waitForLog((l) => l.msg === 'program enforced (ACK)', 60_000);
    const identity = JSON.parse(readFileSync(join(a1.dir, 'agent.json'), 'utf8')) as { spiffeId: string };

    // Kill a1 outright; change the policy while it is down.
    await a1.proc.stop('SIGKILL');
    const v1 = await enforcedVersion(a2);
    writeFleetPolicy(s.repo, {
      ...spec,
      tweak: { [workloadOf(0, 1)]: 'spiffe://fleet.example.org/while-down' },
    });
    reconciler.child.kill('SIGHUP');
    await eventually(async () => (await enforcedVersion(a2)) !== v1, 30_000, 'a2 updated');
    const v2 = await enforcedVersion(a2);
    expect(await enforcedVersion(a1)).toBe(v1);

    // Restarted without a token: same identity, resynced to the version it missed.
    a1 = s.startAgent('a1', addr);
    await a1.proc.waitForLog((l) => l.msg === 'connected to the reconciler', 60_000, 'a1 reconnects');
    expect(JSON.parse(readFileSync(join(a1.dir, 'agent.json'), 'utf8'))).toMatchObject(identity);
    await eventually(async () => (await enforcedVersion(a1)) === v2, 30_000, 'a1 resynced');
    expect(a1.proc.logs().some((l) => l.msg === 'joined')).toBe(false);

    // The reconciler stops: the nodes keep enforcing. A new policy; the reconciler comes back on the same
    // address; every agent reconnects and converges.
    expect(await reconciler.stop('SIGTERM')).toBe(0);
    await a2.proc.waitForLog((l) => String(l.msg).startsWith('disconnected from the reconciler'), 20_000);
    expect(await enforcedVersion(a2)).toBe(v2);
    expect((await a2.reader.health()).state).toBe('ok');
    // It says why it cannot reconnect, once, however many times it retries.
    const why = (l: { msg?: unknown }) => String(l.msg).startsWith('cannot reach the reconciler');
    const said = await a2.proc.waitForLog(why, 20_000, 'a2 says why');
    expect(String(said.hint)).toContain(`listening at ${addr}`);
    await new Promise((r) => setTimeout(r, 3000));
    expect(a2.proc.logs().filter(why)).toHaveLength(1);
    writeFleetPolicy(s.repo, {
      ...spec,
      tweak: { [workloadOf(0, 0)]: 'spiffe://fleet.example.org/after-restart' },
    });
    reconciler = s.startReconciler(addr);
    await reconciler.waitForLog((l) => l.msg === 'serving agents', 60_000);
    await eventually(
      async () => {
        const [x, y] = [await enforcedVersion(a1), await enforcedVersion(a2)];
        return x !== v2 && x === y;
      },
      60_000,
      'both agents on the new version',
    );
    expect((await a1.reader.rules())!.identities[0]!.inbound.allowedSpiffeIds).toContain(
      'spiffe://fleet.example.org/after-restart',
    );
    for (const n of [a1, a2]) expect(await n.proc.stop('SIGTERM')).toBe(0);
    expect(await reconciler.stop('SIGTERM')).toBe(0);
  }, 240_000);
});
