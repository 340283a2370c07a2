/**
 * Pooled mTLS sessions between data planes (kernel-module/README.md "Pooled sessions"): an application process
 * (fixtures/tcp-app.mjs, attested by pid) → client data plane → one HTTP/2 session per (identity, peer) →
 * CONNECT streams → server data plane → a TCP workload that echoes, answers a FIN with `bye` and a FIN, and
 * resets on `RST!`. Real sockets throughout; peers that do not multiplex, and raw HTTP/2 clients and servers
 * holding real SVIDs, stand in for other data planes.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import {
  connect as h2Connect,
  constants as h2constants,
  createServer as h2Server,
  type ServerHttp2Stream,
} from 'node:http2';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { type TLSSocket, connect as tlsConnect, createServer as tlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane, type DataPlaneOptions } from '../../kernel-module/dataplane/dataplane.ts';
import {
  type KeyPair,
  MemoryInputs,
  type ProcessIdentity,
  type TlsMode,
} from '../../kernel-module/dataplane/inputs.ts';
import {
  authority,
  destination,
  egress,
  id,
  identity,
  interceptCa,
  scratch,
  svid,
  table,
  until,
} from './support.ts';

const APP = join(import.meta.dirname, 'fixtures', 'tcp-app.mjs');
const CLIENT = id('pool/client');
const CLIENT2 = id('pool/client-two');
const CLIENT3 = id('pool/client-three');
const SERVER = id('pool/server');
const OTHER = id('pool/other');

/** Inputs whose change events can be held back: the policy changes, no re-check runs (per-stream checks alone). */
class QuietInputs extends MemoryInputs {
  muted = false;
  override onChange(listener: () => void): () => void {
    return super.onChange(() => {
      if (!this.muted) listener();
    });
  }
}

interface AppEvent {
  id: number;
  event: 'connect' | 'data' | 'end' | 'close';
  data?: string;
  error?: string | null;
}

/** One TCP connection of the application process. */
class Conn {
  constructor(
    private readonly app: App,
    readonly id: number,
  ) {}
  private events(): AppEvent[] {
    return this.app.events.filter((e) => e.id === this.id);
  }
  text(): string {
    return this.events()
      .filter((e) => e.event === 'data')
      .map((e) => e.data)
      .join('');
  }
  ended(): boolean {
    return this.events().some((e) => e.event === 'end');
  }
  closed(): AppEvent | undefined {
    return this.events().find((e) => e.event === 'close');
  }
  /** The data plane ended or reset it (the application half-closes only when told to). */
  cut(): boolean {
    return this.ended() || this.closed() !== undefined;
  }
  send(data: string): void {
    this.app.command({ op: 'send', id: this.id, data });
  }
  end(): void {
    this.app.command({ op: 'end', id: this.id });
  }
  reset(): void {
    this.app.command({ op: 'reset', id: this.id });
  }
  /** Sends `data` and waits for its echo. */
  async echo(data: string): Promise<boolean> {
    const before = this.text();
    this.send(data);
    return until(() => this.text() === before + data);
  }
}

class App {
  readonly events: AppEvent[] = [];
  private next = 1;
  private constructor(readonly child: ChildProcessWithoutNullStreams) {
    createInterface({ input: child.stdout }).on('line', (line) => this.events.push(JSON.parse(line)));
  }
  static start(): App {
    return new App(spawn(process.execPath, [APP]));
  }
  get pid(): number {
    return this.child.pid!;
  }
  command(c: object): void {
    this.child.stdin.write(`${JSON.stringify(c)}\n`);
  }
  open(port: number): Conn {
    const conn = new Conn(this, this.next++);
    this.command({ op: 'open', id: conn.id, port });
    return conn;
  }
  stop(): void {
    this.child.stdin.end();
    this.child.kill();
  }
}

async function metric(dp: DataPlane, name: string, labels: Record<string, string>): Promise<number> {
  const m = await dp.metrics.registry.getSingleMetric(name)!.get();
  return m.values
    .filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k as never] === val))
    .reduce((n, v) => n + v.value, 0);
}

const serverHandshakes = (dp: DataPlane, protocol = 'riptides-h2') =>
  metric(dp, 'riptides_dataplane_mtls_sessions_total', { direction: 'inbound', protocol });

describe('pooled mTLS sessions between data planes (HTTP/2 CONNECT streams)', () => {
  const tmp = scratch();
  const byPid = new Map<number, string>();
  const attest = async (pid: number): Promise<ProcessIdentity | null> => {
    const spiffeId = byPid.get(pid);
    return spiffeId ? { spiffeId, destinationPorts: null } : null;
  };
  const workloadConns: Array<{ ended: boolean; error: string | null; closed: boolean }> = [];
  const servers: Server[] = [];
  let bundle = '';
  let svids: Record<string, KeyPair> = {};
  let serverInputs: QuietInputs;
  let clientInputs: QuietInputs;
  let serverDp: DataPlane;
  let clientDp: DataPlane;
  let workloadPort = 0;
  let front = 0;
  let otherFront = 0;
  let toFront = 0;
  let toLegacy = 0;
  let toPushing = 0;
  let legacyHandshakes = 0;
  let pushError: string | null = null;
  let app: App;
  let app2: App;
  let app3: App;
  const ca = () => authority(join(tmp.dir, 'ca'));
  let issuer: Awaited<ReturnType<typeof ca>>;

  const serverRules = (inbound: string[], mode: TlsMode = 'MUTUAL') =>
    serverInputs.setRules(
      table([
        identity(SERVER, { mode, inbound: [...inbound, CLIENT3] }),
        identity(OTHER, { inbound: [CLIENT] }),
      ]),
    );
  const clientRules = (allowed: string[]) => {
    const rule = egress(
      [
        destination('127.0.0.1', front, 'Service/riptides-system/server'),
        destination('127.0.0.1', toLegacyPeer, 'Service/riptides-system/legacy'),
        destination('127.0.0.1', toPushingPeer, 'Service/riptides-system/pushing'),
      ],
      { mode: 'MUTUAL' },
      allowed,
    );
    clientInputs.setRules(
      table([
        identity(CLIENT, { egress: [rule] }),
        identity(CLIENT2, { egress: [rule] }),
        identity(CLIENT3, { egress: [rule] }),
      ]),
    );
  };
  let toLegacyPeer = 0;
  let toPushingPeer = 0;

  const listen = async (server: Server): Promise<number> => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    servers.push(server);
    return (server.address() as { port: number }).port;
  };

  const toWorkload = (tls: TLSSocket) => {
    const w = netConnect(workloadPort, '127.0.0.1');
    tls.pipe(w).pipe(tls);
    tls.on('error', () => w.destroy());
    w.on('error', () => tls.destroy());
  };

  beforeAll(async () => {
    issuer = await ca();
    bundle = issuer.bundlePem();
    svids = Object.fromEntries(
      await Promise.all(
        [CLIENT, CLIENT2, CLIENT3, SERVER, OTHER].map(async (i) => [i, await svid(issuer, i)]),
      ),
    );
    workloadPort = await listen(
      createServer({ allowHalfOpen: true }, (s: Socket) => {
        const rec = { ended: false, error: null as string | null, closed: false };
        workloadConns.push(rec);
        s.on('data', (d) => (d.includes('RST!') ? s.resetAndDestroy() : s.write(d)));
        s.on('end', () => {
          rec.ended = true;
          s.end('bye');
        });
        s.on('error', (e: NodeJS.ErrnoException) => {
          rec.error = e.code ?? e.message;
        });
        s.on('close', () => {
          rec.closed = true;
        });
      }),
    );
    // A data plane of before pooled sessions: mTLS with ALPN `riptides` only, one connection each.
    const peerTls = {
      ...{ cert: svids[SERVER]!.cert, key: svids[SERVER]!.key },
      ca: bundle,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3' as const,
    };
    toLegacyPeer = await listen(
      tlsServer({ ...peerTls, ALPNProtocols: ['riptides'] }, (s) => {
        legacyHandshakes++;
        toWorkload(s);
      }),
    );
    // A peer that multiplexes and tries to open a stream toward the client (a push) on each CONNECT.
    const pushing = h2Server();
    pushing.on('stream', (stream: ServerHttp2Stream) => {
      stream.respond({ ':status': 200 });
      try {
        stream.pushStream({ ':path': '/' }, (e) => {
          pushError = e ? String((e as NodeJS.ErrnoException).code) : 'pushed';
        });
      } catch (e) {
        pushError = String((e as NodeJS.ErrnoException).code);
      }
      stream.on('error', () => {});
      stream.pipe(stream);
    });
    toPushingPeer = await listen(
      tlsServer({ ...peerTls, ALPNProtocols: ['riptides-h2'] }, (s) => pushing.emit('connection', s)),
    );

    const inputs = async () => {
      const i = new QuietInputs(attest);
      i.setTrustBundle(bundle);
      i.setInterceptCa(await interceptCa());
      return i;
    };
    serverInputs = await inputs();
    serverInputs.setSvid(SERVER, svids[SERVER]!);
    serverInputs.setSvid(OTHER, svids[OTHER]!);
    serverRules([CLIENT, CLIENT2]);
    // Re-checks run at each input change; the interval is pushed out so that a muted change stays unseen.
    const limits = { revalidateIntervalMs: 600_000, muxMaxStreams: 4 };
    serverDp = new DataPlane({
      inputs: serverInputs,
      inbound: [
        {
          spiffeId: SERVER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: workloadPort },
        },
        {
          spiffeId: OTHER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: workloadPort },
        },
      ],
      limits,
    });
    [front, otherFront] = (await serverDp.start()).inbound.map((a) => a.port) as [number, number];

    clientInputs = await inputs();
    clientInputs.setSvid(CLIENT, svids[CLIENT]!);
    clientInputs.setSvid(CLIENT2, svids[CLIENT2]!);
    clientInputs.setSvid(CLIENT3, svids[CLIENT3]!);
    clientRules([SERVER]);
    const mapping = (port: number) => ({
      listen: { host: '127.0.0.1', port: 0 },
      destination: { host: '127.0.0.1', port },
    });
    clientDp = new DataPlane({
      inputs: clientInputs,
      outbound: [mapping(front), mapping(toLegacyPeer), mapping(toPushingPeer)],
      limits,
    });
    [toFront, toLegacy, toPushing] = (await clientDp.start()).outbound.map((a) => a.port) as [
      number,
      number,
      number,
    ];
    app = App.start();
    app2 = App.start();
    app3 = App.start();
    byPid.set(app.pid, CLIENT);
    byPid.set(app2.pid, CLIENT2);
    byPid.set(app3.pid, CLIENT3);
  }, 60_000);

  afterAll(async () => {
    app?.stop();
    app2?.stop();
    app3?.stop();
    await clientDp?.stop();
    await serverDp?.stop();
    for (const s of servers) s.close();
    tmp.cleanup();
  });

  it('N application connections, one after another, cost one handshake: the rest reuse its session', async () => {
    const handshakes = await serverHandshakes(serverDp);
    const reused = await metric(clientDp, 'riptides_dataplane_mux_streams_total', {
      direction: 'outbound',
      session: 'reused',
    });
    for (let i = 0; i < 8; i++) {
      const conn = app.open(toFront);
      expect(await conn.echo(`ping ${i}`)).toBe(true);
      conn.end();
      expect(await until(() => conn.closed() !== undefined)).toBe(true);
    }
    // The pool may already hold a session from an earlier test: at most one new handshake, never eight.
    expect((await serverHandshakes(serverDp)) - handshakes).toBeLessThanOrEqual(1);
    expect(
      (await metric(clientDp, 'riptides_dataplane_mux_streams_total', {
        direction: 'outbound',
        session: 'reused',
      })) - reused,
    ).toBeGreaterThanOrEqual(7);
  });

  it('one record per application connection in both tables; past max streams a second session opens', async () => {
    const conns = [0, 1, 2, 3, 4].map(() => app.open(toFront));
    for (const [i, c] of conns.entries()) expect(await c.echo(`held ${i}`)).toBe(true);
    const client = clientDp.connections().filter((c) => c.mode === 'mtls' && c.dst_port === front);
    expect(await until(() => serverDp.connections().length === 5)).toBe(true);
    const server = serverDp.connections().filter((c) => c.peer_spiffe_id === CLIENT);
    expect(client).toHaveLength(5);
    expect(server).toHaveLength(5);
    for (const r of client)
      expect(r).toMatchObject({
        direction: 'outbound',
        mtls_version: 'TLS1.3',
        spiffe_id: CLIENT,
        peer_spiffe_id: SERVER,
        pid: app.pid,
      });
    for (const r of server)
      expect(r).toMatchObject({
        direction: 'inbound',
        mode: 'mtls',
        mtls_version: 'TLS1.3',
        spiffe_id: SERVER,
      });
    // muxMaxStreams is 4 here: five held connections need two sessions, none carrying more than four.
    const perSession = new Map<number, number>();
    for (const r of client) perSession.set(r.session!, (perSession.get(r.session!) ?? 0) + 1);
    expect(perSession.size).toBe(2);
    expect(Math.max(...perSession.values())).toBeLessThanOrEqual(4);
    expect(new Set(server.map((r) => r.session)).size).toBe(2);
    for (const c of conns) c.end();
    expect(await until(() => conns.every((c) => c.closed() !== undefined))).toBe(true);
  });

  it('a burst of connections waits for the sessions being made: one handshake per max streams', async () => {
    const handshakes = await serverHandshakes(serverDp);
    // A fresh identity (no session yet), twelve connections at once, four streams a session.
    const conns = Array.from({ length: 12 }, () => app3.open(toFront));
    for (const c of conns) expect(await c.echo('burst')).toBe(true);
    expect((await serverHandshakes(serverDp)) - handshakes).toBe(3);
    const records = clientDp.connections().filter((r) => r.spiffe_id === CLIENT3);
    expect(records).toHaveLength(12);
    expect(new Set(records.map((r) => r.session)).size).toBe(3);
    for (const c of conns) c.end();
    expect(await until(() => conns.every((c) => c.closed() !== undefined))).toBe(true);
  });

  it('a session idle for muxIdleTimeoutMs is closed: the next connection makes a new one', async () => {
    const inputs = new QuietInputs(attest);
    inputs.setTrustBundle(bundle);
    inputs.setSvid(CLIENT, svids[CLIENT]!);
    inputs.setRules(
      table([identity(CLIENT, { egress: [egress([destination('127.0.0.1', front)], { mode: 'MUTUAL' })] })]),
    );
    const quick = new DataPlane({
      inputs,
      outbound: [{ listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: front } }],
      limits: { muxIdleTimeoutMs: 300 },
    });
    const port = (await quick.start()).outbound[0]!.port;
    try {
      const handshakesFor = async (fn: () => Promise<void>) => {
        const before = await serverHandshakes(serverDp);
        await fn();
        return (await serverHandshakes(serverDp)) - before;
      };
      const once = async () => {
        const conn = app.open(port);
        expect(await conn.echo('idle?')).toBe(true);
        conn.end();
        expect(await until(() => conn.closed() !== undefined)).toBe(true);
      };
      expect(await handshakesFor(once)).toBe(1);
      expect(await handshakesFor(once)).toBe(0);
      await new Promise((r) => setTimeout(r, 600));
      expect(await handshakesFor(once)).toBe(1);
    } finally {
      await quick.stop();
    }
  });

  it('a session whose own SVID expired takes no new stream: the next connection needs a handshake', async () => {
    const inputs = new QuietInputs(attest);
    inputs.setTrustBundle(bundle);
    inputs.setSvid(CLIENT, await svid(issuer, CLIENT, 3));
    inputs.setRules(
      table([identity(CLIENT, { egress: [egress([destination('127.0.0.1', front)], { mode: 'MUTUAL' })] })]),
    );
    const shortLived = new DataPlane({
      inputs,
      outbound: [{ listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: front } }],
      limits: { revalidateIntervalMs: 600_000 },
    });
    const port = (await shortLived.start()).outbound[0]!.port;
    const expiredHandshakes = () =>
      metric(serverDp, 'riptides_dataplane_handshakes_failed_total', {
        direction: 'inbound',
        reason: 'expired',
      });
    const expiredStreams = () =>
      metric(serverDp, 'riptides_dataplane_streams_refused_total', {
        direction: 'inbound',
        reason: 'expired',
      });
    try {
      const first = app.open(port);
      expect(await first.echo('before')).toBe(true);
      first.end();
      const [handshakes, streams] = [await expiredHandshakes(), await expiredStreams()];
      await new Promise((r) => setTimeout(r, 3_500));
      const next = app.open(port);
      expect(await until(() => next.cut())).toBe(true);
      expect(next.text()).toBe('');
      // Refused at a new handshake (the server saw the expired SVID), not as a stream of the old session.
      expect(await expiredHandshakes()).toBe(handshakes + 1);
      expect(await expiredStreams()).toBe(streams);
    } finally {
      await shortLived.stop();
    }
  }, 15_000);

  it('PERMISSIVE: a ClientHello offering riptides-h2 gets a pooled session; plaintext still reaches the workload', async () => {
    serverRules([CLIENT, CLIENT2], 'PERMISSIVE');
    const inputs = new QuietInputs(attest);
    inputs.setTrustBundle(bundle);
    inputs.setSvid(CLIENT, svids[CLIENT]!);
    inputs.setRules(
      table([identity(CLIENT, { egress: [egress([destination('127.0.0.1', front)], { mode: 'MUTUAL' })] })]),
    );
    const fresh = new DataPlane({
      inputs,
      outbound: [{ listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: front } }],
    });
    const port = (await fresh.start()).outbound[0]!.port;
    try {
      const handshakes = await serverHandshakes(serverDp);
      const pooled = app.open(port);
      expect(await pooled.echo('sniffed')).toBe(true);
      expect(await serverHandshakes(serverDp)).toBe(handshakes + 1);
      expect(fresh.connections()[0]).toMatchObject({ mode: 'mtls', peer_spiffe_id: SERVER });
      expect(fresh.connections()[0]!.session).toBeDefined();
      const plain = app.open(front);
      expect(await plain.echo('plaintext')).toBe(true);
      pooled.end();
      plain.end();
    } finally {
      await fresh.stop();
      serverRules([CLIENT, CLIENT2]);
    }
  });

  it('two identities never share a session', async () => {
    const mine = [app.open(toFront), app.open(toFront)];
    const theirs = [app2.open(toFront), app2.open(toFront)];
    for (const c of [...mine, ...theirs]) expect(await c.echo('who')).toBe(true);
    const client = clientDp.connections().filter((c) => c.mode === 'mtls' && c.dst_port === front);
    const sessionsOf = (spiffeId: string) =>
      new Set(client.filter((r) => r.spiffe_id === spiffeId).map((r) => r.session));
    const a = sessionsOf(CLIENT);
    const b = sessionsOf(CLIENT2);
    expect(a.size).toBeGreaterThan(0);
    expect(b.size).toBeGreaterThan(0);
    expect([...a].filter((s) => b.has(s))).toEqual([]);
    // The server side agrees: each session it serves carries the streams of one peer only.
    const peerOf = new Map<number, Set<string>>();
    for (const r of serverDp.connections())
      peerOf.set(r.session!, (peerOf.get(r.session!) ?? new Set()).add(r.peer_spiffe_id!));
    expect([...peerOf.values()].every((p) => p.size === 1)).toBe(true);
    expect(serverDp.connections().filter((r) => r.peer_spiffe_id === CLIENT2)).toHaveLength(2);
    for (const c of [...mine, ...theirs]) c.end();
    expect(await until(() => [...mine, ...theirs].every((c) => c.closed() !== undefined))).toBe(true);
  });

  it('a FIN from either end is a FIN at the other, with the other direction still open; a reset is a reset', async () => {
    const before = workloadConns.length;
    const half = app.open(toFront);
    expect(await half.echo('hello')).toBe(true);
    half.end();
    // The workload saw the FIN, then answered on the direction still open, then closed it.
    expect(await until(() => half.ended())).toBe(true);
    expect(half.text()).toBe('hellobye');
    expect(workloadConns[before]!.ended).toBe(true);

    const reset = app.open(toFront);
    expect(await reset.echo('x')).toBe(true);
    const rec = workloadConns[workloadConns.length - 1]!;
    reset.reset();
    expect(await until(() => rec.closed)).toBe(true);
    expect(rec).toMatchObject({ error: 'ECONNRESET', ended: false });

    const reset2 = app.open(toFront);
    expect(await reset2.echo('y')).toBe(true);
    reset2.send('RST!');
    expect(await until(() => reset2.closed() !== undefined)).toBe(true);
    expect(reset2.closed()!.error).toBe('ECONNRESET');
  });

  it('server side: each stream is authorized with the inbound policy in force, on a session made before it', async () => {
    const warm = app.open(toFront);
    expect(await warm.echo('warm')).toBe(true);
    const handshakes = await serverHandshakes(serverDp);
    const refused = () =>
      metric(serverDp, 'riptides_dataplane_streams_refused_total', {
        direction: 'inbound',
        reason: 'not-allowed',
      });
    const before = await refused();
    // The change is not announced: no re-check drains the session, only the stream's own check can refuse.
    serverInputs.muted = true;
    try {
      serverRules([CLIENT2]);
      const next = app.open(toFront);
      expect(await until(() => next.cut())).toBe(true);
      expect(next.text()).toBe('');
      expect(await refused()).toBe(before + 1);
      expect(await serverHandshakes(serverDp)).toBe(handshakes);
    } finally {
      serverRules([CLIENT, CLIENT2]);
      serverInputs.muted = false;
    }
    warm.end();
  });

  it('client side: each stream is checked against the allow lists in force before it is opened', async () => {
    const warm = app.open(toFront);
    expect(await warm.echo('warm')).toBe(true);
    const streams = () => metric(serverDp, 'riptides_dataplane_mux_streams_total', { direction: 'inbound' });
    const opened = await streams();
    const refused = () =>
      metric(clientDp, 'riptides_dataplane_handshakes_failed_total', {
        direction: 'outbound',
        reason: 'not-allowed',
      });
    const before = await refused();
    clientInputs.muted = true;
    try {
      clientRules([id('pool/elsewhere')]);
      const next = app.open(toFront);
      expect(await until(() => next.cut())).toBe(true);
      expect(await refused()).toBe(before + 1);
      // Refused before any stream was opened toward the peer.
      expect(await streams()).toBe(opened);
    } finally {
      clientRules([SERVER]);
      clientInputs.muted = false;
    }
    warm.end();
  });

  it('a peer removed from the inbound list loses its live streams at the next re-check, and its session', async () => {
    const live = app.open(toFront);
    expect(await live.echo('live')).toBe(true);
    const revoked = () =>
      metric(serverDp, 'riptides_dataplane_connections_revoked_total', { direction: 'inbound' });
    const before = await revoked();
    serverRules([CLIENT2]);
    try {
      expect(await until(() => live.cut())).toBe(true);
      expect(await revoked()).toBe(before + 1);
      // The next connection needs a new session, and the handshake refuses it.
      const next = app.open(toFront);
      expect(await until(() => next.cut())).toBe(true);
      expect(next.text()).toBe('');
    } finally {
      serverRules([CLIENT, CLIENT2]);
    }
  });

  it('a new SVID takes no stream on the old session: a new handshake, the old session drains its streams', async () => {
    const old = app.open(toFront);
    expect(await old.echo('old')).toBe(true);
    const handshakes = await serverHandshakes(serverDp);
    const rotated = await svid(issuer, CLIENT);
    // Unannounced, so that no re-check drains the old session first: the pool itself must not pick it.
    clientInputs.muted = true;
    let fresh: Conn;
    try {
      clientInputs.setSvid(CLIENT, rotated);
      fresh = app.open(toFront);
      expect(await fresh.echo('fresh')).toBe(true);
    } finally {
      clientInputs.muted = false;
    }
    expect(await serverHandshakes(serverDp)).toBe(handshakes + 1);
    const records = clientDp.connections().filter((r) => r.dst_port === front && r.mode === 'mtls');
    expect(records).toHaveLength(2);
    expect(new Set(records.map((r) => r.session)).size).toBe(2);
    // Drained, not cut: the connection made before the rotation still works.
    expect(await old.echo('still')).toBe(true);
    old.end();
    fresh.end();
  });

  it('a new trust bundle takes no stream on the old session either', async () => {
    const old = app.open(toFront);
    expect(await old.echo('old')).toBe(true);
    const handshakes = await serverHandshakes(serverDp);
    const another = await authority(join(tmp.dir, 'another'));
    clientInputs.muted = true;
    try {
      clientInputs.setTrustBundle(bundle + another.bundlePem());
      const fresh = app.open(toFront);
      expect(await fresh.echo('fresh')).toBe(true);
      fresh.end();
    } finally {
      clientInputs.muted = false;
    }
    expect(await serverHandshakes(serverDp)).toBe(handshakes + 1);
    expect(await old.echo('still')).toBe(true);
    old.end();
  });

  it('the server drains its sessions when its own SVID changes: the next connection makes a new one', async () => {
    const first = app.open(toFront);
    expect(await first.echo('first')).toBe(true);
    first.end();
    expect(await until(() => first.closed() !== undefined)).toBe(true);
    const handshakes = await serverHandshakes(serverDp);
    serverInputs.setSvid(SERVER, await svid(issuer, SERVER));
    // The client learns it from the server's GOAWAY (its own inputs did not change); a stream sent before that
    // arrives is refused by the closing session and retried on another.
    const next = app.open(toFront);
    expect(await next.echo('next')).toBe(true);
    expect(await serverHandshakes(serverDp)).toBe(handshakes + 1);
    next.end();
  });

  it('a CONNECT to anything but a port fronted for the session’s workload is refused (no open relay)', async () => {
    const tls = clientPeer(front, ['riptides-h2']);
    await new Promise((r) => tls.once('secureConnect', r));
    expect(tls.alpnProtocol).toBe('riptides-h2');
    const session = h2Connect(`https://127.0.0.1:${front}`, { createConnection: () => tls });
    const status = (headers: Record<string, string>) =>
      new Promise<{ status: number; reason: string }>((resolve) => {
        const s = session.request(headers, { endStream: false });
        s.on('error', () => {});
        s.once('response', (h) => {
          resolve({ status: Number(h[':status']), reason: String(h['x-riptides-reason'] ?? '') });
          s.close();
        });
      });
    const notFronted = () =>
      metric(serverDp, 'riptides_dataplane_streams_refused_total', {
        direction: 'inbound',
        reason: 'not-fronted',
      });
    const before = await notFronted();
    try {
      // The workload's own address, and another workload's front on the same data plane.
      expect(await status({ ':method': 'CONNECT', ':authority': `127.0.0.1:${workloadPort}` })).toEqual({
        status: 403,
        reason: 'not-fronted',
      });
      expect(await status({ ':method': 'CONNECT', ':authority': `127.0.0.1:${otherFront}` })).toEqual({
        status: 403,
        reason: 'not-fronted',
      });
      expect(await notFronted()).toBe(before + 2);
      expect((await status({ ':method': 'GET', ':path': '/', ':scheme': 'https' })).status).toBe(405);
      expect((await status({ ':method': 'CONNECT', ':authority': `127.0.0.1:${front}` })).status).toBe(200);
    } finally {
      session.destroy();
    }
  });

  it('a peer that answers only `riptides` gets one mTLS connection per application connection', async () => {
    const handshakes = legacyHandshakes;
    const perConnection = () =>
      metric(clientDp, 'riptides_dataplane_mtls_sessions_total', {
        direction: 'outbound',
        protocol: 'riptides',
      });
    const before = await perConnection();
    for (let i = 0; i < 3; i++) {
      const conn = app.open(toLegacy);
      expect(await conn.echo(`legacy ${i}`)).toBe(true);
      const record = clientDp.connections().find((r) => r.dst_port === toLegacyPeer);
      expect(record).toMatchObject({ mode: 'mtls', peer_spiffe_id: SERVER, mtls_version: 'TLS1.3' });
      expect(record!.session).toBeUndefined();
      conn.end();
      expect(await until(() => conn.closed() !== undefined)).toBe(true);
    }
    expect(legacyHandshakes - handshakes).toBe(3);
    expect((await perConnection()) - before).toBe(3);
  });

  it('a client that offers only `riptides` gets the per-connection path from this server', async () => {
    const before = await serverHandshakes(serverDp, 'riptides');
    const tls = clientPeer(front, ['riptides']);
    await new Promise((r) => tls.once('secureConnect', r));
    expect(tls.alpnProtocol).toBe('riptides');
    tls.write('plain old');
    const got = await new Promise<string>((r) => tls.once('data', (d) => r(String(d))));
    expect(got).toBe('plain old');
    expect(await serverHandshakes(serverDp, 'riptides')).toBe(before + 1);
    const record = serverDp.connections().find((r) => r.src_port === tls.localPort);
    expect(record).toMatchObject({ peer_spiffe_id: CLIENT, mode: 'mtls' });
    expect(record!.session).toBeUndefined();
    tls.destroy();
  });

  it('the client side takes no stream from its peer: a push is refused by the settings it sent', async () => {
    const conn = app.open(toPushing);
    expect(await conn.echo('pushed?')).toBe(true);
    expect(pushError).toBe('ERR_HTTP2_PUSH_DISABLED');
    conn.end();
  });

  /**
   * A raw TLS connection to `port` holding CLIENT's SVID and offering `alpn`, with no data plane of its own: what a
   * peer (or an attacker with a valid SVID) writes over.
   */
  function clientPeer(port: number, alpn: string[]) {
    return tlsConnect({
      port,
      host: '127.0.0.1',
      cert: svids[CLIENT]!.cert,
      key: svids[CLIENT]!.key,
      ca: bundle,
      ALPNProtocols: alpn,
      checkServerIdentity: () => undefined,
    });
  }

  /**
   * A server data plane fronting `forward` for SERVER (CLIENT allowed in), and a raw TLS connection to it that holds
   * CLIENT's SVID and offers ALPN riptides-h2: what an attacker's own HTTP/2 client writes frames over.
   */
  async function rawPeerOfServer(forward: number, limits: DataPlaneOptions['limits']) {
    const inputs = new QuietInputs(attest);
    inputs.setTrustBundle(bundle);
    inputs.setSvid(SERVER, svids[SERVER]!);
    inputs.setRules(table([identity(SERVER, { inbound: [CLIENT] })]));
    const server = new DataPlane({
      inputs,
      inbound: [
        {
          spiffeId: SERVER,
          listen: { host: '127.0.0.1', port: 0 },
          forward: { host: '127.0.0.1', port: forward },
        },
      ],
      limits,
    });
    const at = (await server.start()).inbound[0]!.port;
    const tls = clientPeer(at, ['riptides-h2']);
    tls.on('error', () => {});
    return { server, at, tls };
  }

  /** One HTTP/2 frame (RFC 9113 §4.1). */
  const frame = (type: number, flags: number, stream: number, payload: Buffer) => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head.writeUInt8(type, 3);
    head.writeUInt8(flags, 4);
    head.writeUInt32BE(stream, 5);
    return Buffer.concat([head, payload]);
  };
  /** An HPACK literal header field without indexing, new name (RFC 7541 §6.2.2), short strings only. */
  const literal = (name: string, value: string) =>
    Buffer.concat([
      Buffer.from([0, name.length]),
      Buffer.from(name),
      Buffer.from([value.length]),
      Buffer.from(value),
    ]);
  /** A CONNECT's header block toward `port` on loopback. */
  const connectHeaders = (port: number) =>
    Buffer.concat([literal(':method', 'CONNECT'), literal(':authority', `127.0.0.1:${port}`)]);
  /** The client connection preface and an empty SETTINGS frame. */
  const PREFACE = Buffer.concat([
    Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    frame(4, 0, 0, Buffer.alloc(0)),
  ]);

  it('rapid reset: CONNECT then RST_STREAM in a loop costs no workload dial, and the session is closed for its rate', async () => {
    let accepts = 0;
    const workloadAt = await listen(
      createServer((s: Socket) => {
        accepts++;
        s.on('error', () => {});
        s.destroy();
      }),
    );
    const { server, at, tls } = await rawPeerOfServer(workloadAt, { muxStreamsPerSecond: 500 });
    // Raw frames, as an attacker writes them: each CONNECT's HEADERS and its RST_STREAM in one write (node's
    // own client sends nothing for a stream reset before its HEADERS went out).
    const connectBlock = connectHeaders(at);
    const cancel = Buffer.alloc(4);
    cancel.writeUInt32BE(h2constants.NGHTTP2_CANCEL);
    let goaway: number | null = null;
    let received = Buffer.alloc(0);
    tls.on('data', (d: Buffer) => {
      received = Buffer.concat([received, d]);
      while (received.length >= 9 && received.length >= 9 + received.readUIntBE(0, 3)) {
        const length = received.readUIntBE(0, 3);
        // The first GOAWAY says why; the one closing the session after it says NO_ERROR.
        if (received.readUInt8(3) === 7) goaway ??= received.readUInt32BE(9 + 4);
        received = received.subarray(9 + length);
      }
    });
    const pairs = 2_000;
    try {
      await new Promise((r) => tls.once('secureConnect', r));
      expect(tls.alpnProtocol).toBe('riptides-h2');
      tls.write(PREFACE);
      let stream = 1;
      while (stream < pairs * 2 && goaway === null && !tls.destroyed) {
        const batch: Buffer[] = [];
        for (let i = 0; i < 100; i++, stream += 2)
          batch.push(frame(1, 0x4, stream, connectBlock), frame(3, 0, stream, cancel));
        tls.write(Buffer.concat(batch));
        await new Promise((r) => setImmediate(r));
      }
      expect(await until(() => goaway !== null)).toBe(true);
      expect(goaway).toBe(h2constants.NGHTTP2_ENHANCE_YOUR_CALM);
      expect(
        await metric(server, 'riptides_dataplane_mux_sessions_closed_total', {
          direction: 'inbound',
          reason: 'stream-rate',
        }),
      ).toBe(1);
      // Each CONNECT was reset before the server's next tick: none was worth a dial.
      await new Promise((r) => setTimeout(r, 200));
      expect(accepts).toBeLessThan(10);
    } finally {
      tls.destroy();
      await server.stop();
    }
  });

  describe('pooled sessions off (`pooledSessions: false`) and limits out of range', () => {
    it('a client with them off makes one handshake per connection (ALPN riptides), to a server that pools', async () => {
      const inputs = new QuietInputs(attest);
      inputs.setTrustBundle(bundle);
      inputs.setSvid(CLIENT, svids[CLIENT]!);
      inputs.setRules(
        table([
          identity(CLIENT, { egress: [egress([destination('127.0.0.1', front)], { mode: 'MUTUAL' })] }),
        ]),
      );
      const off = new DataPlane({
        inputs,
        outbound: [
          { listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: front } },
        ],
        pooledSessions: false,
      });
      const port = (await off.start()).outbound[0]!.port;
      const [pooled, single] = [
        await serverHandshakes(serverDp),
        await serverHandshakes(serverDp, 'riptides'),
      ];
      try {
        for (let i = 0; i < 3; i++) {
          const conn = app.open(port);
          expect(await conn.echo(`one ${i}`)).toBe(true);
          expect(off.connections()[0]).toMatchObject({ mode: 'mtls', peer_spiffe_id: SERVER });
          expect(off.connections()[0]!.session).toBeUndefined();
          conn.end();
          expect(await until(() => conn.closed() !== undefined)).toBe(true);
        }
        expect(await serverHandshakes(serverDp, 'riptides')).toBe(single + 3);
        expect(await serverHandshakes(serverDp)).toBe(pooled);
      } finally {
        await off.stop();
      }
    });

    it('a server with them off answers riptides to a client offering riptides-h2 first', async () => {
      const inputs = new QuietInputs(attest);
      inputs.setTrustBundle(bundle);
      inputs.setSvid(SERVER, svids[SERVER]!);
      inputs.setRules(table([identity(SERVER, { inbound: [CLIENT] })]));
      const off = new DataPlane({
        inputs,
        inbound: [
          {
            spiffeId: SERVER,
            listen: { host: '127.0.0.1', port: 0 },
            forward: { host: '127.0.0.1', port: workloadPort },
          },
        ],
        pooledSessions: false,
      });
      const at = (await off.start()).inbound[0]!.port;
      const tls = clientPeer(at, ['riptides-h2', 'riptides']);
      try {
        await new Promise((r) => tls.once('secureConnect', r));
        expect(tls.alpnProtocol).toBe('riptides');
        tls.write('single');
        expect(await new Promise<string>((r) => tls.once('data', (d) => r(String(d))))).toBe('single');
      } finally {
        tls.destroy();
        await off.stop();
      }
    });

    it('limits out of range are refused with the limit named', () => {
      const make = (limits: object) => () => new DataPlane({ inputs: new QuietInputs(attest), limits });
      expect(make({ muxMaxStreams: 0 })).toThrow(/muxMaxStreams .*at least 1.*pooledSessions: false/);
      expect(make({ muxMaxStreams: 2.5 })).toThrow(/muxMaxStreams/);
      expect(make({ muxIdleTimeoutMs: 0 })).toThrow(/muxIdleTimeoutMs must be a positive number \(got 0\)/);
      expect(make({ handshakeTimeoutMs: -1 })).toThrow(/handshakeTimeoutMs/);
      expect(make({ muxStreamWindowBytes: Number.NaN })).toThrow(/muxStreamWindowBytes/);
      expect(make({ muxStreamWindowBytes: 2 ** 28 })).toThrow(/muxStreamWindowBytes .*up to 134217727/);
      expect(make({ muxStreamsPerSecond: 0 })).toThrow(/muxStreamsPerSecond/);
      expect(make({ muxMaxStreams: 1, muxStreamWindowBytes: 65_535 })).not.toThrow();
    });
  });

  it('a peer ending its session with an error code is logged and counted with its reason', async () => {
    const { server, tls } = await rawPeerOfServer(workloadPort, {});
    try {
      await new Promise((r) => tls.once('secureConnect', r));
      tls.resume();
      tls.write(PREFACE);
      // GOAWAY (RFC 9113 §6.8): last stream 0, PROTOCOL_ERROR.
      const goaway = Buffer.alloc(8);
      goaway.writeUInt32BE(h2constants.NGHTTP2_PROTOCOL_ERROR, 4);
      tls.write(frame(7, 0, 0, goaway));
      const counted = () =>
        metric(server, 'riptides_dataplane_mux_sessions_closed_total', {
          direction: 'inbound',
          reason: 'peer-goaway',
        });
      expect(await until(async () => (await counted()) === 1)).toBe(true);
    } finally {
      tls.destroy();
      await server.stop();
    }
  });

  it('at most 32 workload dials at once per session: further CONNECTs wait for one to end', async () => {
    // A workload that never accepts, with no room in its accept queue: past the first, every dial stays in
    // SYN_SENT, so the dials in progress are the data plane's sockets toward it in that state.
    let stuck: ChildProcessWithoutNullStreams | undefined;
    let peer: Awaited<ReturnType<typeof rawPeerOfServer>> | undefined;
    try {
      stuck = spawn('python3', [
        '-c',
        'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(120)',
      ]);
      const exited = new Promise<string>((r) => {
        stuck!.once('error', (e) => r(`python3: ${e.message}`));
        stuck!.once('exit', (code) => r(`python3 exited (${code})`));
      });
      const line = new Promise<string>((r) => createInterface({ input: stuck!.stdout }).once('line', r));
      const port = Number(await Promise.race([line, exited.then((m) => Promise.reject(new Error(m)))]));
      const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
      const synSent = () =>
        readFileSync('/proc/net/tcp', 'utf8')
          .split('\n')
          .slice(1)
          .filter((row) => {
            const f = row.trim().split(/\s+/);
            return f[2]?.endsWith(hex) && f[3] === '02';
          }).length;
      peer = await rawPeerOfServer(port, { muxStreamsPerSecond: 500 });
      const { at, tls } = peer;
      await new Promise((r) => tls.once('secureConnect', r));
      tls.resume();
      // 40 CONNECTs (HEADERS, END_HEADERS) on odd stream IDs, in one write.
      const block = connectHeaders(at);
      const connects = Array.from({ length: 40 }, (_, i) => frame(1, 0x4, 1 + 2 * i, block));
      tls.write(Buffer.concat([PREFACE, ...connects]));
      // The one accepted into the queue ends its dial, and one waiting CONNECT takes its slot: 32 in progress.
      expect(await until(() => synSent() === 32)).toBe(true);
      // And it stays there: the other seven wait.
      await new Promise((r) => setTimeout(r, 300));
      expect(synSent()).toBe(32);
    } finally {
      peer?.tls.destroy();
      await peer?.server.stop();
      stuck?.kill();
    }
  });

  it('a peer that sends no HTTP/2 preface after its handshake is closed at the handshake deadline, and counted', async () => {
    const { server, tls } = await rawPeerOfServer(workloadPort, { handshakeTimeoutMs: 400 });
    let closed = false;
    tls.on('close', () => {
      closed = true;
    });
    try {
      await new Promise((r) => tls.once('secureConnect', r));
      expect(tls.alpnProtocol).toBe('riptides-h2');
      // Reading, so that the server's close is seen.
      tls.resume();
      expect(await until(() => closed, 3_000)).toBe(true);
      expect(
        await metric(server, 'riptides_dataplane_mux_sessions_closed_total', {
          direction: 'inbound',
          reason: 'preface-timeout',
        }),
      ).toBe(1);
    } finally {
      tls.destroy();
      await server.stop();
    }
  });

  it('two inbound listeners of one identity on one port are refused at start', async () => {
    const probe = createServer();
    const port = await new Promise<number>((r) =>
      probe.listen(0, '127.0.0.1', () => r((probe.address() as { port: number }).port)),
    );
    await new Promise((r) => probe.close(r));
    const front = (host: string) => ({
      spiffeId: SERVER,
      listen: { host, port },
      forward: { host: '127.0.0.1', port: workloadPort },
    });
    const dp = new DataPlane({
      inputs: new QuietInputs(attest),
      inbound: [front('127.0.0.1'), front('127.0.0.2')],
    });
    await expect(dp.start()).rejects.toThrow(/share port .*pooled sessions reach a front by port/);
  });

  describe('an application that closes before the CONNECT answer leaves nothing open (on either side)', () => {
    /** An echo workload that knows how many of its sockets are open. */
    const countingWorkload = async () => {
      const sockets = new Set<Socket>();
      const port = await listen(
        createServer((s: Socket) => {
          sockets.add(s);
          s.on('error', () => {});
          s.on('close', () => sockets.delete(s));
          s.pipe(s);
        }),
      );
      return { port, open: () => sockets.size };
    };
    const quietInputs = () => {
      const i = new QuietInputs(attest);
      i.setTrustBundle(bundle);
      return i;
    };
    /** A client data plane for CLIENT whose one outbound mapping stands for `peer`. */
    const clientFor = async (peer: number, limits: object) => {
      const inputs = quietInputs();
      inputs.setSvid(CLIENT, svids[CLIENT]!);
      inputs.setRules(
        table([
          identity(CLIENT, {
            egress: [egress([destination('127.0.0.1', peer)], { mode: 'MUTUAL' }, [SERVER])],
          }),
        ]),
      );
      const dp = new DataPlane({
        inputs,
        outbound: [
          { listen: { host: '127.0.0.1', port: 0 }, destination: { host: '127.0.0.1', port: peer } },
        ],
        limits,
      });
      return { dp, port: (await dp.start()).outbound[0]!.port };
    };
    /** Opens `n` connections 10 ms apart, each reset 0–3 ms after it was established: most before their answer. */
    const openAndReset = async (port: number, n: number) => {
      for (let i = 0; i < n; i++) {
        app.command({ op: 'open', id: 1_000_000 + i, port, resetAfterMs: i % 4 });
        await new Promise((r) => setTimeout(r, 10));
      }
    };

    it('pooled: no stream, workload socket or connection record is left; the session goes idle', async () => {
      const workload = await countingWorkload();
      const inputs = quietInputs();
      inputs.setSvid(SERVER, svids[SERVER]!);
      inputs.setRules(table([identity(SERVER, { inbound: [CLIENT] })]));
      const server = new DataPlane({
        inputs,
        inbound: [
          {
            spiffeId: SERVER,
            listen: { host: '127.0.0.1', port: 0 },
            forward: { host: '127.0.0.1', port: workload.port },
          },
        ],
        limits: { muxIdleTimeoutMs: 300 },
      });
      const serverFront = (await server.start()).inbound[0]!.port;
      const client = await clientFor(serverFront, { muxMaxStreams: 4, muxIdleTimeoutMs: 300 });
      try {
        await openAndReset(client.port, 60);
        expect(await until(() => workload.open() === 0 && server.connections().length === 0, 3_000)).toBe(
          true,
        );
        expect(client.dp.connections()).toEqual([]);
        // Every stream closed on the client too: the sessions, idle, are closed after muxIdleTimeoutMs.
        const handshakes = await serverHandshakes(server);
        await new Promise((r) => setTimeout(r, 500));
        const conn = app.open(client.port);
        expect(await conn.echo('after')).toBe(true);
        expect(await serverHandshakes(server)).toBe(handshakes + 1);
        conn.end();
      } finally {
        await client.dp.stop();
        await server.stop();
      }
    }, 20_000);

    it('per connection (a peer answering only `riptides`): no mTLS connection to the peer is left', async () => {
      const workload = await countingWorkload();
      const open = new Set<TLSSocket>();
      const peer = await listen(
        tlsServer(
          {
            cert: svids[SERVER]!.cert,
            key: svids[SERVER]!.key,
            ca: bundle,
            requestCert: true,
            rejectUnauthorized: true,
            minVersion: 'TLSv1.3',
            ALPNProtocols: ['riptides'],
          },
          (s) => {
            open.add(s);
            s.on('close', () => open.delete(s));
            const w = netConnect(workload.port, '127.0.0.1');
            s.pipe(w).pipe(s);
            s.on('error', () => w.destroy());
            w.on('error', () => s.destroy());
            s.on('close', () => w.destroy());
          },
        ),
      );
      const client = await clientFor(peer, {});
      try {
        await openAndReset(client.port, 40);
        expect(await until(() => open.size === 0 && workload.open() === 0, 3_000)).toBe(true);
        expect(client.dp.connections()).toEqual([]);
      } finally {
        await client.dp.stop();
      }
    }, 20_000);
  });
});
