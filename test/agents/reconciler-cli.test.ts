/**
 * `riptides-cli token create` and `riptides-cli reconciler` as users run them: the token alone on stdout,
 * its refusals; a reconciler process that compiles at start, serves agents (speaking the real protocol),
 * reloads on SIGHUP (a broken policy changes nothing), serves credentials from --secrets-dir only to the
 * agents whose program binds them, and never logs a credential value.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonRecordFile } from '../../reconciler/agents/registry.ts';
import { main } from '../../reconciler/cli/main.ts';
import { reconcilerOptionsFromFlags } from '../../reconciler/cli/reconciler-flags.ts';
import { initAuthority } from '../../reconciler/identity/authority.ts';
import { capture } from '../support/cli.ts';
import { eventually, startCli } from '../support/cli-process.ts';
import {
  FLEET_TD,
  type FleetSpec,
  workloadOf,
  writeFleetPolicy,
  writeSecret,
} from '../support/fleet-policy.ts';
import { SimAgent } from '../support/sim-agent.ts';

const A = 'riptides/daemongroup/cli/a';
const B = 'riptides/daemongroup/cli/b';
const SECRET = 'tok-3f1c9a7e5b2d4c6a8e0f1b3d5c7a9e2f';

describe('token create', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'riptides-token-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('needs the reconciler state first, and says so', async () => {
    const c = capture(dir);
    expect(await main(['token', 'create', '--state-dir', join(dir, 'none')], c.io)).toBe(2);
    expect(c.stdout).toBe('');
    expect(c.stderr).toContain('no reconciler state in');
  });

  it('prints the token alone on stdout, notes on stderr, and stores only a hash of its secret', async () => {
    const state = join(dir, 'state');
    await initAuthority({ trustDomain: FLEET_TD, dir: join(state, 'ca') });
    const c = capture(dir);
    expect(
      await main(['token', 'create', '--state-dir', state, '--daemon-group', A, '--ttl', '15m'], c.io),
    ).toBe(0);
    expect(c.stdout).toMatch(/^rjt1\.[0-9a-f]{8}\.[A-Za-z0-9_-]{32}\.[0-9a-f]{64}\n$/);
    expect(c.stderr).toContain(`in daemon group ${A}`);
    expect(c.stderr).toMatch(/single use, expires \d{4}-/);
    const [, id, secret] = c.stdout.trim().split('.');
    const stored = readFileSync(join(state, 'tokens', `${id}.json`), 'utf8');
    expect(stored).not.toContain(secret!);
    expect(JSON.parse(stored)).toMatchObject({ daemonGroup: A });

    // A token that stays usable for months is refused: exit 2, the flag named, nothing stored.
    const before = readdirSync(join(state, 'tokens')).length;
    const long = capture(dir);
    expect(await main(['token', 'create', '--state-dir', state, '--ttl', '100000d'], long.io)).toBe(2);
    expect(long.stdout).toBe('');
    expect(long.stderr).toContain('--ttl 100000d is over 7d');
    expect(readdirSync(join(state, 'tokens'))).toHaveLength(before);

    // A daemon ID too long for its SPIFFE ID to be signed is refused here, not at the join.
    const huge = capture(dir);
    expect(
      await main(['token', 'create', '--state-dir', state, '--daemon-id', 'a'.repeat(2100)], huge.io),
    ).toBe(2);
    expect(huge.stderr).toContain('--daemon-id is 2100 bytes; at most 253 are accepted');
    expect(huge.stderr.length).toBeLessThan(500);

    // A daemon ID that is registered already is refused: two registrations would share one ID.
    mkdirSync(join(state, 'daemons'), { recursive: true });
    writeFileSync(daemonRecordFile(join(state, 'daemons'), 'node-7'), '{"daemonId":"node-7"}');
    const taken = capture(dir);
    expect(await main(['token', 'create', '--state-dir', state, '--daemon-id', 'node-7'], taken.io)).toBe(2);
    expect(taken.stderr).toContain('daemon node-7 is registered already: evict it first');
    expect(readdirSync(join(state, 'tokens'))).toHaveLength(before);
  });

  it('notes when the applied revision scopes nothing to the daemon group, and not when it does', async () => {
    const state = join(dir, 'state');
    mkdirSync(join(state, 'store'), { recursive: true });
    writeFileSync(
      join(state, 'store', 'applied.json'),
      JSON.stringify({
        revision: '0123456789abcdef0123456789abcdef01234567',
        appliedAt: '2026-12-01T00:00:00Z',
        programVersions: { [`daemonGroup:${A}`]: 'aaaa', 'daemon:riptides/daemon/n1': 'bbbb' },
      }),
    );
    const typo = capture(dir);
    expect(await main(['token', 'create', '--state-dir', state, '--daemon-group', `${A}x`], typo.io)).toBe(0);
    expect(typo.stderr).toContain(
      `note: the applied revision 0123456789ab scopes nothing to daemon group ${A}x (its groups: ${A}); the agent will join and hold an empty program until a policy does\n`,
    );
    const known = capture(dir);
    expect(await main(['token', 'create', '--state-dir', state, '--daemon-group', A], known.io)).toBe(0);
    expect(known.stderr).not.toContain('note:');
  });

  it('refuses conflicting or malformed flags', async () => {
    const state = join(dir, 'state');
    for (const args of [
      ['--daemon-group', A, '--daemon-id', 'n1'],
      ['--daemon-id', 'a//b'],
      ['--ttl', 'soon'],
      ['--daemon-group', 'bad group'],
    ]) {
      const c = capture(dir);
      expect(await main(['token', 'create', '--state-dir', state, ...args], c.io)).toBe(2);
      expect(c.stdout).toBe('');
    }
  });
});

describe('reconciler process', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'riptides-reconciler-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('holds the credential provider flags to the rules of credentials check, before touching its state', async () => {
    const repo = join(dir, 'flags-repo');
    writeFleetPolicy(repo, { groups: { [A]: 1 } });
    const state = join(dir, 'flags-state');
    const start = async (args: string[], env: Record<string, string> = {}) => {
      const c = capture(dir, { HOME: join(dir, 'no-home'), ...env });
      const code = await main(
        ['reconciler', '--repo', repo, '--listen', '127.0.0.1:0', '--state-dir', state, ...args],
        c.io,
      );
      return { code, stderr: c.stderr };
    };
    const plain = await start(['--sts-endpoint', 'http://sts.example.com/']);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toContain(
      '--sts-endpoint http://sts.example.com/ is plain http to a host that is not loopback: refused',
    );
    const missing = await start(['--kubeconfig', 'no-such-kubeconfig']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`--kubeconfig ${join(dir, 'no-such-kubeconfig')}: no such file`);
    // kubectl's order: KUBECONFIG is read when no --kubeconfig is given.
    const listed = await start([], { KUBECONFIG: join(dir, 'gone-a') });
    expect(listed.code).toBe(2);
    expect(listed.stderr).toContain(`KUBECONFIG names no file that exists (${join(dir, 'gone-a')})`);
    const rate = await start(['--join-rate', '5/0']);
    expect(rate.code).toBe(2);
    expect(rate.stderr).toContain('--join-rate must be N or N/BURST');
    // The API over plain HTTP beyond loopback: refused before the CA is made.
    const open = await start(['--api-listen', '0.0.0.0:0']);
    expect(open.code).toBe(2);
    expect(open.stderr).toContain('refusing to serve the API over plain HTTP on 0.0.0.0');
    expect(existsSync(state)).toBe(false);
  });

  it('--join-rate N/BURST reaches the agent server; N alone keeps the burst of 10; absent, the server default', () => {
    const agents = (rate?: string) =>
      reconcilerOptionsFromFlags({ repo: dir, ...(rate ? { 'join-rate': rate } : {}) }, capture(dir).io)
        .options.agents;
    expect(agents('5/200')).toMatchObject({ joinsPerSecond: 5, joinBurst: 200 });
    expect(agents('3')).toMatchObject({ joinsPerSecond: 3, joinBurst: 10 });
    expect(agents()).not.toHaveProperty('joinsPerSecond');
  });

  it('serves agents, reloads on SIGHUP, and serves credentials only in scope, never logging them', async () => {
    const repo = join(dir, 'repo');
    const secrets = join(dir, 'secrets');
    const state = join(dir, 'state');
    const spec: FleetSpec = { groups: { [A]: 2, [B]: 1 }, credentials: { [workloadOf(0, 0)]: 'api-token' } };
    writeFleetPolicy(repo, spec);
    writeSecret(secrets, 'api-token', SECRET);
    const reconciler = startCli([
      'reconciler',
      '--repo',
      repo,
      '--listen',
      '127.0.0.1:0',
      '--state-dir',
      state,
      '--secrets-dir',
      secrets,
    ]);
    const serving = await reconciler.waitForLog((l) => l.msg === 'serving agents', 30_000, 'serving agents');
    const addr = String(serving.listen);
    expect(JSON.parse(readFileSync(join(state, 'reconciler.json'), 'utf8'))).toMatchObject({ listen: addr });
    await reconciler.waitForLog((l) => l.msg === 'published', 10_000, 'first publish');

    const token = async (group: string) => {
      const c = capture(dir);
      expect(await main(['token', 'create', '--state-dir', state, '--daemon-group', group], c.io)).toBe(0);
      return c.stdout.trim();
    };
    const a = (await SimAgent.join(addr, await token(A), join(dir, 'a'))).start();
    const b = (await SimAgent.join(addr, await token(B), join(dir, 'b'))).start();
    try {
      await a.until(
        () => a.program !== null && a.credentials.size === 1,
        20_000,
        'A: program and credential',
      );
      await b.until(() => b.program !== null, 20_000, 'B: program');
      const [value] = [...a.credentials.values()];
      expect(value?.bearer?.token).toBe(SECRET);
      expect(b.credentials.size).toBe(0);

      // A broken policy on SIGHUP: reported, nothing applied.
      const before = a.program!.version;
      writeFleetPolicy(repo, { ...spec, selectors: { [workloadOf(0, 1)]: { 'process:nmae': 'x' } } });
      reconciler.child.kill('SIGHUP');
      await reconciler.waitForLog(
        (l) => String(l.msg).startsWith('policy does not validate'),
        20_000,
        'refusal',
      );
      expect(reconciler.output()).toContain('RT036');
      await new Promise((r) => setTimeout(r, 300));
      expect(a.program!.version).toBe(before);
      expect(a.updates).toHaveLength(1);

      // A good change on SIGHUP: only the changed identity goes out, only to group A.
      writeFleetPolicy(repo, { ...spec, tweak: { [workloadOf(0, 1)]: 'spiffe://fleet.example.org/sighup' } });
      reconciler.child.kill('SIGHUP');
      await a.until(() => a.program!.version !== before, 20_000, 'the update after SIGHUP');
      expect(a.updates.at(-1)!.identities.map((i) => i.workloadId)).toEqual([workloadOf(0, 1)]);
      expect(b.updates).toHaveLength(1);

      // The secret changes: the new value reaches A.
      writeSecret(secrets, 'api-token', `${SECRET}-2`);
      await a.until(
        () => [...a.credentials.values()][0]?.bearer?.token === `${SECRET}-2`,
        20_000,
        'new value',
      );
    } finally {
      a.stop();
      b.stop();
    }
    expect(await reconciler.stop('SIGTERM')).toBe(0);
    const out = reconciler.output();
    expect(out).toContain('credential obtained');
    expect(out).not.toContain(SECRET);
    // Nor anywhere on the reconciler's disk.
    const files = readdirSync(state, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(files.length).toBeGreaterThan(3);
    for (const f of files) expect(readFileSync(join(f.parentPath, f.name), 'utf8')).not.toContain(SECRET);
    await eventually(() => reconciler.child.exitCode !== null, 5000, 'exit');
  });
});
