/**
 * `riptides-cli agent` with its data plane flags, as an operator meets them: every malformed flag refused with
 * exit 2 and a reason naming it (before anything joins or listens); an inbound identity of another trust
 * domain and a port already in use refused after joining, with nothing left listening; `agent nft-rules`
 * printing the redirect for the program a node holds, which nftables itself accepts (installed in a network
 * namespace this test creates, then listed).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlWriter } from '../../kernel-module/control/index.ts';
import { main } from '../../reconciler/cli/main.ts';
import { type Fleet, startFleet } from '../support/agent-fleet.ts';
import { capture } from '../support/cli.ts';
import { identityRule, table } from '../support/control-fixtures.ts';

const A = 'riptides/daemongroup/cli/node';

describe('riptides-cli agent: data plane flags', () => {
  let dir: string;
  let fleet: Fleet;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'riptides-agent-cli-'));
    fleet = await startFleet();
    fleet.publish({ groups: { [A]: 1 } });
  });
  afterAll(async () => {
    await fleet.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses malformed data plane flags with exit 2 and a reason that names the flag', async () => {
    writeFileSync(join(dir, 'not-a-cert.pem'), 'hello\n');
    const cases: Array<[string[], RegExp]> = [
      [['--proxy-listen', 'localhost'], /--proxy-listen must be HOST:PORT/],
      [['--inbound', 'listen=127.0.0.1:1,forward=127.0.0.1:2'], /--inbound .* lacks identity/],
      [
        ['--inbound', 'identity=a/b,listen=nowhere,forward=127.0.0.1:2'],
        /--inbound listen must be HOST:PORT/,
      ],
      [
        ['--inbound', 'identity=a/b,lisen=127.0.0.1:1,forward=127.0.0.1:2'],
        /"lisen=127.0.0.1:1" is not one of/,
      ],
      [['--outbound', 'listen=127.0.0.1:0,destination=db:0'], /--outbound destination needs a port/],
      [['--nftables'], /--nftables redirects to the --transparent listener/],
      [['--upstream-ca', join(dir, 'missing.pem')], /cannot read --upstream-ca .*ENOENT/],
      [['--upstream-ca', join(dir, 'not-a-cert.pem')], /holds no PEM certificate/],
    ];
    for (const [args, reason] of cases) {
      const c = capture(dir);
      const state = join(dir, `never-${randomBytes(3).toString('hex')}`);
      expect(await main(['agent', '--state-dir', state, ...args], c.io), args.join(' ')).toBe(2);
      expect(c.stderr, args.join(' ')).toMatch(reason);
      expect(c.stdout).toBe('');
    }
  });

  it('an inbound identity of another trust domain, or a port in use: exit 2 with the reason, nothing left listening', async () => {
    const foreign = capture(dir);
    expect(
      await main(
        [
          ...['agent', '--server', fleet.addr, '--join-token', await fleet.token({ daemonGroup: A })],
          ...['--state-dir', join(dir, 'foreign'), '--proxy-listen', '127.0.0.1:0'],
          ...['--inbound', 'identity=spiffe://elsewhere.org/app,listen=127.0.0.1:0,forward=127.0.0.1:9'],
        ],
        foreign.io,
      ),
    ).toBe(2);
    expect(foreign.stderr).toMatch(
      /inbound identity spiffe:\/\/elsewhere\.org\/app is in trust domain elsewhere\.org, this node's is fleet\.example\.org/,
    );

    // The data plane binds its proxy, then the metrics endpoint finds its port taken: all of it stops again.
    const busy: Server = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as { port: number }).port;
    const free = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const inUse = capture(dir);
    expect(
      await main(
        [
          ...['agent', '--server', fleet.addr, '--join-token', await fleet.token({ daemonGroup: A })],
          ...['--state-dir', join(dir, 'busy'), '--proxy-listen', `127.0.0.1:${free}`],
          ...['--metrics-listen', `127.0.0.1:${port}`],
        ],
        inUse.io,
      ),
    ).toBe(2);
    await new Promise((r) => busy.close(r));
    expect(inUse.stderr).toMatch(
      new RegExp(
        `the metrics endpoint cannot listen on 127\\.0\\.0\\.1:${port}: address already in use \\(change --metrics-listen\\)`,
      ),
    );
    const proxyStillBound = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(true));
      s.listen(free, '127.0.0.1', () => s.close(() => resolve(false)));
    });
    expect(proxyStillBound).toBe(false);
  });

  it('nft-rules prints the redirect for the program a node holds; nftables accepts it as printed', async () => {
    const root = join(dir, 'control');
    const writer = await ControlWriter.open(root);
    const api = identityRule('app/api');
    api.egress[0]!.destinations.push(
      {
        ...api.egress[0]!.destinations[0]!,
        address: '10.1.2.3',
        port: 5432,
        networkPrefixes: ['10.9.0.0/16'],
      },
      { ...api.egress[0]!.destinations[0]!, address: 'fd00::7', port: null },
      { ...api.egress[0]!.destinations[0]!, address: 'db.internal', port: null },
    );
    await writer.writeRules(table('v1', [api]));
    const c = capture(dir);
    expect(
      await main(['agent', 'nft-rules', '--transparent', '127.0.0.1:15002', '--control-root', root], c.io),
    ).toBe(0);
    const uid = process.getuid!();
    expect(c.stdout).toBe(
      [
        'table inet riptides {',
        '  chain output {',
        '    type nat hook output priority -100; policy accept;',
        `    meta skuid ${uid} return`,
        '    ip daddr 10.1.2.3 tcp dport 5432 redirect to :15002',
        '    ip daddr 10.9.0.0/16 tcp dport 5432 redirect to :15002',
        '    ip6 daddr fd00::7 meta l4proto tcp redirect to :15002',
        '    tcp dport 443 redirect to :15002',
        '    # not redirected: db.internal (any port): a name without a port cannot be matched by nftables',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    expect(c.stderr).toMatch(/rules for program v1/);

    // nftables itself takes the text as printed, in a namespace of this test's own.
    const ns = `rt-nft-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: c.stdout });
      const listed = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'riptides'], {
        encoding: 'utf8',
      });
      expect(listed).toMatch(/ip daddr 10\.1\.2\.3 tcp dport 5432 redirect to :15002/);
      expect(listed).toMatch(/ip6 daddr fd00::7 meta l4proto tcp redirect to :15002/);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  });

  it('nft-rules without a program says so (exit 2)', async () => {
    const c = capture(dir);
    expect(
      await main(
        ['agent', 'nft-rules', '--transparent', '127.0.0.1:15002', '--control-root', join(dir, 'empty')],
        c.io,
      ),
    ).toBe(2);
    expect(c.stderr).toMatch(/no rule table in .*empty/);
  });
});
