/**
 * One data plane in a process of its own, driven over IPC by bench/dataplane.bench.ts, so that its CPU is its
 * own (like one HAProxy process) and its RSS can be read alone. Messages: start {inputs, options} → started
 * {addresses}; floor {floor} → started {port}; rss → rss {rss} (after a full GC); stop.
 *
 * `floor` runs what node:tls alone costs for the same legs, with no policy work at all (no attribution,
 * matching, SPIFFE checks, HTTP parsing or injection): the lower bound for any data plane written on node:tls
 * in one thread, measured in the same run as the data plane and HAProxy.
 */
import { connect as netConnect, createServer as netServer, type Socket } from 'node:net';
import {
  createSecureContext,
  type TLSSocket,
  connect as tlsConnect,
  createServer as tlsServer,
} from 'node:tls';
import type { DataPlaneOptions } from '../../kernel-module/dataplane/dataplane.ts';
import type { CredentialValue, KeyPair, RuleTable } from '../../kernel-module/dataplane/inputs.ts';
import { inputsByProcessName, loopbackLookup } from '../../test/dataplane/support.ts';

interface Start {
  type: 'start';
  inputs: {
    rules: RuleTable;
    svids: Record<string, KeyPair>;
    bundle: string;
    interceptCa: KeyPair;
    credentials: Record<string, CredentialValue>;
    byName: Record<string, string>;
  };
  options: Omit<DataPlaneOptions, 'inputs' | 'lookup'>;
  /** Resolve *.amazonaws.com and *.test to loopback (the upstream stands in for AWS). */
  loopback?: boolean;
}

/**
 * `mtls-client`: plain in, TLS 1.3 out with a client certificate, ALPN `riptides`, sessions resumed, chain
 * verified. `mtls-server`: TLS 1.3 in, client certificate required and verified, plain out. `tls-relay`: TLS
 * in with `cert`, TLS out verified against `ca`, bytes relayed (no HTTP parsing).
 */
interface Floor {
  type: 'floor';
  floor: {
    kind: 'mtls-client' | 'mtls-server' | 'tls-relay';
    cert: string;
    key: string;
    ca: string;
    forward: number;
  };
}

// The data plane as shipped: compiled by the `npm run build` that `npm run bench` runs first. Through tsx, as
// this file runs, every function the data plane makes per request would also go through esbuild's naming helper.
const { DataPlane } = (await import(
  new URL('../../dist/kernel-module/dataplane/dataplane.js', import.meta.url).href
)) as typeof import('../../kernel-module/dataplane/dataplane.ts');

let dp: InstanceType<typeof DataPlane> | null = null;
const send = (m: unknown) => process.send!(m);

function relay(a: Socket, b: Socket): void {
  const close = () => {
    a.destroy();
    b.destroy();
  };
  for (const s of [a, b]) {
    s.setNoDelay(true);
    s.on('error', close);
    s.on('close', close);
  }
  a.pipe(b);
  b.pipe(a);
}

function floor(f: Floor['floor']): Promise<number> {
  const own = createSecureContext({ cert: f.cert, key: f.key, ca: f.ca, minVersion: 'TLSv1.3' });
  const upstream = createSecureContext({ ca: f.ca });
  let session: Buffer | undefined;
  const out = (): TLSSocket => {
    const s = tlsConnect({
      host: '127.0.0.1',
      port: f.forward,
      ...(session ? { session } : {}),
      ...(f.kind === 'mtls-client'
        ? {
            secureContext: own,
            ALPNProtocols: ['riptides'],
            minVersion: 'TLSv1.3' as const,
            // An SVID names no host: the chain is verified, the SPIFFE ID not even looked at.
            checkServerIdentity: () => undefined,
          }
        : { secureContext: upstream }),
    });
    s.on('session', (t: Buffer) => {
      session = t;
    });
    return s;
  };
  const server =
    f.kind === 'mtls-client'
      ? netServer((c) => relay(c, out()))
      : f.kind === 'mtls-server'
        ? tlsServer(
            {
              cert: f.cert,
              key: f.key,
              ca: f.ca,
              requestCert: true,
              rejectUnauthorized: true,
              ALPNProtocols: ['riptides'],
              minVersion: 'TLSv1.3',
            },
            (c) => relay(c, netConnect(f.forward, '127.0.0.1')),
          )
        : tlsServer({ cert: f.cert, key: f.key }, (c) => relay(c, out()));
  return new Promise((resolve) =>
    server.listen({ host: '127.0.0.1', port: 0, backlog: 1024 }, () =>
      resolve((server.address() as { port: number }).port),
    ),
  );
}

process.on('message', async (msg: Start | Floor | { type: 'rss' | 'stop' }) => {
  if (msg.type === 'start') {
    const inputs = inputsByProcessName(new Map(Object.entries(msg.inputs.byName)));
    inputs.setTrustBundle(msg.inputs.bundle);
    inputs.setInterceptCa(msg.inputs.interceptCa);
    for (const [id, pair] of Object.entries(msg.inputs.svids)) inputs.setSvid(id, pair);
    for (const [hash, value] of Object.entries(msg.inputs.credentials)) inputs.loadCredential(hash, value);
    inputs.setRules(msg.inputs.rules);
    dp = new DataPlane({ ...msg.options, inputs, ...(msg.loopback ? { lookup: loopbackLookup } : {}) });
    send({ type: 'started', addresses: await dp.start() });
  } else if (msg.type === 'floor') {
    send({ type: 'started', port: await floor(msg.floor) });
  } else if (msg.type === 'rss') {
    for (let i = 0; i < 3; i++) (globalThis as { gc?: () => void }).gc?.();
    send({ type: 'rss', rss: process.memoryUsage().rss });
  } else if (msg.type === 'stop') {
    await dp?.stop();
    process.exit(0);
  }
});
