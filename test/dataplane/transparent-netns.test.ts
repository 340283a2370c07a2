/**
 * Transparent interception in a network namespace this test creates: nftables redirects an unmodified
 * client's outbound TCP to the data plane's transparent listener, the original destination is read with
 * SO_ORIGINAL_DST, the process is attributed through /proc, and the data plane's own traffic is excluded by
 * its uid. Needs root (CI runs as root).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnectionRecord } from '../../kernel-module/dataplane/connections.ts';
import { bearerBinding, destination, egress, id, identity, run, scratch, table, until } from './support.ts';

const NS = `rt-dp-${randomBytes(3).toString('hex')}`;
const ADDR = '198.18.0.1'; // RFC 2544 benchmarking range, only inside the namespace
const CLIENT = id('netns/curl');

const sh = (cmd: string, args: string[], input?: string) => execFileSync(cmd, args, { stdio: 'pipe', input });

describe('transparent mode: nftables redirect in a network namespace', () => {
  const tmp = scratch();
  let child: ChildProcess;
  let upstreamPort = 0;
  let transparentPort = 0;
  const logs: Array<Record<string, unknown>> = [];
  const seenConnections: ConnectionRecord[] = [];

  beforeAll(async () => {
    sh('ip', ['netns', 'add', NS]);
    sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', NS, 'addr', 'add', `${ADDR}/32`, 'dev', 'lo']);
    const api = destination(ADDR, null, 'Service/riptides-system/netns-api');
    const config = {
      upstreamHost: ADDR,
      byName: { curl: CLIENT },
      rules: table([
        identity(CLIENT, {
          egress: [egress([api], { mode: null })],
          credentials: [bearerBinding('c1', 'netns-token', [api])],
        }),
      ]),
      credentials: { c1: { kind: 'bearer', token: 'injected-in-netns' } },
    };
    const file = join(tmp.dir, 'config.json');
    writeFileSync(file, JSON.stringify(config));
    const script = fileURLToPath(new URL('./fixtures/transparent-child.ts', import.meta.url));
    child = spawn('ip', ['netns', 'exec', NS, process.execPath, '--import', 'tsx', script, file], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout! });
    const ports = await new Promise<{ upstreamPort: number; transparentPort: number }>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`data plane child exited with ${code}`)));
      lines.on('line', (l) => {
        const msg = JSON.parse(l);
        if (msg.log) logs.push(msg.log);
        else if (msg.connections) seenConnections.push(...msg.connections);
        else resolve(msg);
      });
    });
    upstreamPort = ports.upstreamPort;
    transparentPort = ports.transparentPort;
    // Everything a non-root process sends to TCP port upstreamPort goes to the data plane; the data plane runs
    // as root (uid 0) and is excluded, so its own connection to the real destination is not redirected again.
    sh(
      'ip',
      ['netns', 'exec', NS, 'nft', '-f', '-'],
      [
        'table ip riptides {',
        '  chain output {',
        '    type nat hook output priority -100; policy accept;',
        `    meta skuid 0 return`,
        `    tcp dport ${upstreamPort} redirect to :${transparentPort}`,
        '  }',
        '}',
      ].join('\n'),
    );
  }, 60_000);

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      child.kill('SIGKILL');
    }
    try {
      sh('ip', ['netns', 'del', NS]);
    } catch {
      // already gone
    }
    tmp.cleanup();
  });

  /** A command run inside the namespace as `nobody` (not root, so the redirect applies to it). */
  const asNobody = (cmd: string[]) =>
    run('ip', ['netns', 'exec', NS, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...cmd], {
      timeout: 20_000,
    }).then((r) => r.stdout);

  it('an unmodified curl is intercepted and attributed: its request leaves with its identity’s credential', async () => {
    const out = await asNobody([
      'curl',
      '-sS',
      '--max-time',
      '10',
      `http://${ADDR}:${upstreamPort}/transparent`,
    ]);
    const body = JSON.parse(out);
    expect(body).toEqual({ url: '/transparent', authorization: 'Bearer injected-in-netns' });
    expect(await until(() => seenConnections.some((c) => c.spiffe_id === CLIENT))).toBe(true);
    const row = seenConnections.find((c) => c.spiffe_id === CLIENT)!;
    expect(row).toMatchObject({
      direction: 'outbound',
      mode: 'inject',
      dst: ADDR,
      dst_port: upstreamPort,
      binding: 'netns-token',
    });
    expect(row.pid).toBeGreaterThan(0);
  });

  it('another process to the same destination is not this identity: passed through, recorded, no credential', async () => {
    const py = `import urllib.request, json; print(urllib.request.urlopen("http://${ADDR}:${upstreamPort}/other", timeout=10).read().decode())`;
    const body = JSON.parse(await asNobody(['/usr/bin/python3', '-c', py]));
    expect(body).toEqual({ url: '/other', authorization: null });
    expect(await until(() => logs.some((l) => l.event === 'passthrough' && l.reason === 'no-identity'))).toBe(
      true,
    );
  });

  it('a connection to the transparent port that was not redirected is refused as a loop', async () => {
    // As root: not redirected, so SO_ORIGINAL_DST names the data plane itself.
    await run('ip', [
      'netns',
      'exec',
      NS,
      'curl',
      '-sS',
      '--max-time',
      '5',
      `http://127.0.0.1:${transparentPort}/`,
    ]).catch(() => {});
    expect(await until(() => logs.some((l) => l.event === 'loop-detected'))).toBe(true);
  });
});
