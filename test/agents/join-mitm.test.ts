/**
 * A join through a server that is not the reconciler (agent/join.ts). The trust bundle is fetched before
 * anything is verified, so whoever answers can add its own CA to it; the agent must trust only the CA its
 * token pins until the reconciler has proven it holds that CA, and send the token to no one else.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unverifiedClient } from '../../agent/connection.ts';
import { generateKeyAndCsr } from '../../agent/csr.ts';
import { JoinError, joinReconciler } from '../../agent/join.ts';
import type { TrustBundle } from '../../agent/protocol/messages.ts';
import { bundleVersion } from '../../agent/protocol/version.ts';
import { agentServiceDefinition } from '../../agent/protocol/wire.ts';
import { AgentStateDir } from '../../agent/state.ts';
import { initAuthority } from '../../reconciler/identity/authority.ts';
import { type Fleet, startFleet } from '../support/agent-fleet.ts';
import { FLEET_TD } from '../support/fleet-policy.ts';

describe('joining through a server that added its own CA to the bundle', () => {
  let fleet: Fleet;
  let impostor: grpc.Server;
  let impostorAddr: string;
  let dir: string;
  const received: string[] = [];

  beforeAll(async () => {
    fleet = await startFleet();
    dir = mkdtempSync(join(tmpdir(), 'riptides-join-mitm-'));
    // The real bundle (anyone may fetch it), plus a CA of the impostor's own for the same trust domain,
    // which signs the impostor a certificate naming the reconciler's SPIFFE ID.
    const real = await new Promise<TrustBundle>((resolve, reject) => {
      const c = unverifiedClient(fleet.addr);
      c.GetTrustBundle({}, { deadline: new Date(Date.now() + 10_000) }, (err, b) => {
        c.close();
        if (err) reject(err);
        else resolve(b as TrustBundle);
      });
    });
    const own = await initAuthority({ trustDomain: FLEET_TD, dir: join(dir, 'impostor-ca') });
    const reconcilerId = `spiffe://${FLEET_TD}/riptides/reconciler`;
    const { keyPem, csrDer } = await generateKeyAndCsr(reconcilerId);
    const b64 = csrDer.toString('base64').replace(/.{64}/g, '$&\n');
    const svid = await own.signX509Svid({
      csrPem: `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`,
    });
    const authorities = [...real.x509Authorities, ...own.x509Authorities().map((c) => c.der)];
    const bundle: TrustBundle = {
      trustDomain: FLEET_TD,
      x509Authorities: authorities,
      version: bundleVersion(authorities),
    };
    impostor = new grpc.Server();
    impostor.addService(agentServiceDefinition, {
      GetTrustBundle: (_: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, bundle),
      Join: (call: grpc.ServerDuplexStream<{ token?: { token: string } }, unknown>) => {
        call.on('data', (m) => {
          if (m.token) received.push(m.token.token);
          call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'try again' });
        });
      },
      Sync: () => {},
    });
    const port = await new Promise<number>((resolve, reject) =>
      impostor.bindAsync(
        '127.0.0.1:0',
        grpc.ServerCredentials.createSsl(null, [
          { private_key: Buffer.from(keyPem), cert_chain: Buffer.from(svid.chainPem) },
        ]),
        (err, p) => (err ? reject(err) : resolve(p)),
      ),
    );
    impostorAddr = `127.0.0.1:${port}`;
  });
  afterAll(async () => {
    impostor?.forceShutdown();
    await fleet?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('never sends it the token, and the token then joins the real reconciler', async () => {
    const token = await fleet.token();
    const state = new AgentStateDir(join(dir, 'agent'));
    const failed = await joinReconciler({ server: impostorAddr, token, state, deadlineMs: 10_000 }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(failed).toBeInstanceOf(JoinError);
    expect(received).toEqual([]);

    // Unused, the token still works where it belongs; the agent keeps the reconciler's bundle only.
    await joinReconciler({ server: fleet.addr, token, state });
    const saved = readFileSync(join(dir, 'agent', 'bundle.crt'), 'utf8');
    expect(saved).toBe(fleet.authority.bundlePem());
  });
});
