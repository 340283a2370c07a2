/**
 * An agent server on loopback for tests and the benchmark: a fresh CA, a state directory, a policy
 * repository written by fleet-policy.ts, tokens on demand, and a raw HTTP/2 Sync client for hostile tests
 * (it can send bytes the real client never would, and stop reading).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentMessage, Out } from '../../agent/protocol/messages.ts';
import { encodeAgentMessage } from '../../agent/protocol/wire.ts';
import { AgentServer, type AgentServerOptions } from '../../reconciler/agents/server.ts';
import { bundlePin } from '../../reconciler/agents/serving-identity.ts';
import { JoinTokenStore } from '../../reconciler/agents/tokens.ts';
import type { CredentialManager } from '../../reconciler/credentials/manager.ts';
import { type Authority, initAuthority } from '../../reconciler/identity/authority.ts';
import { FLEET_TD, type FleetSpec, renderFleet, writeFleetPolicy } from './fleet-policy.ts';

export interface Fleet {
  dir: string;
  repo: string;
  authority: Authority;
  server: AgentServer;
  addr: string;
  tokens: JoinTokenStore;
  pin: string;
  token(opts?: { daemonGroup?: string; daemonId?: string; ttlSeconds?: number }): Promise<string>;
  /** Writes the policy and publishes it. */
  publish(spec: FleetSpec): ReturnType<AgentServer['publish']>;
  /** Stops the server and starts another on the same port and state directory (a reconciler restart). */
  restart(extra?: Partial<AgentServerOptions>): Promise<void>;
  close(): Promise<void>;
}

export async function startFleet(
  opts: Omit<Partial<AgentServerOptions>, 'credentials'> & {
    credentialManager?: (a: Authority) => CredentialManager;
  } = {},
): Promise<Fleet> {
  const dir = mkdtempSync(join(tmpdir(), 'riptides-fleet-'));
  const authority = await initAuthority({ trustDomain: FLEET_TD, dir: join(dir, 'state', 'ca') });
  const credentials = opts.credentialManager?.(authority) ?? null;
  const { credentialManager: _, ...rest } = opts;
  const base: Partial<AgentServerOptions> = { ...rest, credentials };
  const make = (port: number, extra: Partial<AgentServerOptions> = {}) =>
    AgentServer.start({
      host: '127.0.0.1',
      port,
      stateDir: join(dir, 'state'),
      authority,
      joinsPerSecond: 1000,
      joinBurst: 1000,
      ...base,
      ...extra,
    });
  let server = await make(0);
  const addr = `127.0.0.1:${server.port}`;
  const tokens = new JoinTokenStore(join(dir, 'state', 'tokens'));
  const pin = bundlePin(authority);
  const repo = join(dir, 'repo');
  const fleet: Fleet = {
    dir,
    repo,
    authority,
    get server() {
      return server;
    },
    addr,
    tokens,
    pin,
    token: async (t = {}) =>
      (
        await tokens.create({
          pin,
          ttlSeconds: t.ttlSeconds ?? 600,
          daemonGroup: t.daemonGroup ?? null,
          daemonId: t.daemonId ?? null,
        })
      ).token,
    publish: (spec) => {
      writeFleetPolicy(repo, spec);
      return server.publish(renderFleet(repo));
    },
    restart: async (extra) => {
      const port = server.port;
      await server.close();
      server = await make(port, extra);
    },
    close: async () => {
      await server.close();
      await credentials?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fleet;
}

/** gRPC framing: 1 byte "not compressed", 4 bytes length, the message. */
export function grpcFrame(payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/**
 * A Sync stream (or another `method` of the service) over plain node:http2 with an agent's SVID: sends any
 * bytes, reads replies only when asked (`paused` makes it a peer that stops reading), and reports the gRPC
 * status the server ends with.
 */
export function rawSync(
  addr: string,
  id: { bundlePem: string; keyPem?: string | undefined; chainPem?: string | undefined },
  method: 'Sync' | 'Join' | 'GetTrustBundle' = 'Sync',
) {
  const session = http2.connect(`https://${addr}`, {
    ca: id.bundlePem,
    ...(id.keyPem && id.chainPem ? { key: id.keyPem, cert: id.chainPem } : {}),
    servername: 'reconciler.riptides.invalid',
    checkServerIdentity: () => undefined,
  });
  session.on('error', () => {});
  const stream = session.request({
    ':method': 'POST',
    ':path': `/riptides.agent.v1.AgentService/${method}`,
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  stream.on('error', () => {});
  let buffered = Buffer.alloc(0);
  const status = new Promise<{ code: number; message: string }>((resolve) => {
    const done = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined)
        resolve({
          code: Number(h['grpc-status']),
          message: decodeURIComponent(String(h['grpc-message'] ?? '')),
        });
    };
    stream.on('response', done);
    stream.on('trailers', done);
    stream.on('close', () => resolve({ code: -1, message: 'closed without a status' }));
  });
  stream.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
  });
  return {
    stream,
    status,
    send: (m: Out<AgentMessage>) => stream.write(grpcFrame(encodeAgentMessage(m as AgentMessage))),
    sendBytes: (b: Buffer) => stream.write(b),
    /** Messages received so far, decoded by the caller. */
    received: (): Buffer[] => {
      const out: Buffer[] = [];
      let off = 0;
      while (buffered.length - off >= 5) {
        const len = buffered.readUInt32BE(off + 1);
        if (buffered.length - off - 5 < len) break;
        out.push(buffered.subarray(off + 5, off + 5 + len));
        off += 5 + len;
      }
      return out;
    },
    close: () => {
      stream.close();
      session.close();
    },
  };
}
