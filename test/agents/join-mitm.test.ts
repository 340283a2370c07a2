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
import { bundleVersion, certificatesPem } from '../../agent/protocol/version.ts';
import { agentServiceDefinition } from '../../agent/protocol/wire.ts';
import { AgentStateDir } from '../../agent/state.ts';
import { type Authority, initAuthority } from '../../reconciler/identity/authority.ts';
import { type Fleet, startFleet } from '../support/agent-fleet.ts';
import { FLEET_TD } from '../support/fleet-policy.ts';

/** A gRPC server that answers as the reconciler would, with a certificate `authority` signs for `spiffeId`. */
async function impostorWith(
  authority: Authority,
  spiffeId: string,
  trustDomain: string,
  authorities: Buffer[],
  received: string[],
): Promise<{ server: grpc.Server; addr: string }> {
  const { keyPem, csrDer } = await generateKeyAndCsr(spiffeId);
  const b64 = csrDer.toString('base64').replace(/.{64}/g, '$&\n');
  const svid = await authority.signX509Svid({
    csrPem: `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`,
  });
  const bundle: TrustBundle = {
    trustDomain,
    x509Authorities: authorities,
    version: bundleVersion(authorities),
  };
  const server = new grpc.Server();
  server.addService(agentServiceDefinition, {
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
    server.bindAsync(
      '127.0.0.1:0',
      grpc.ServerCredentials.createSsl(null, [
        { private_key: Buffer.from(keyPem), cert_chain: Buffer.from(svid.chainPem) },
      ]),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  return { server, addr: `127.0.0.1:${port}` };
}

describe('joining through a server that is not the reconciler', () => {
  let fleet: Fleet;
  let impostors: grpc.Server[] = [];
  let impostorAddr: string;
  let suffixedAddr: string;
  let withOwnCaBundlePem: string;
  let dir: string;
  const received: string[] = [];
  const receivedSuffixed: string[] = [];

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
    const withOwnCa = await impostorWith(
      own,
      `spiffe://${FLEET_TD}/riptides/reconciler`,
      FLEET_TD,
      [...real.x509Authorities, ...own.x509Authorities().map((c) => c.der)],
      received,
    );
    // A workload of the real trust domain whose ID ends like the reconciler's (a policy may name one), and a
    // bundle that calls the trust domain "fleet.example.org/x" so that its ID would read as the reconciler's.
    const suffixed = await impostorWith(
      fleet.authority,
      `spiffe://${FLEET_TD}/x/riptides/reconciler`,
      `${FLEET_TD}/x`,
      real.x509Authorities,
      receivedSuffixed,
    );
    impostors = [withOwnCa.server, suffixed.server];
    withOwnCaBundlePem = certificatesPem([
      ...real.x509Authorities,
      ...own.x509Authorities().map((c) => c.der),
    ]);
    impostorAddr = withOwnCa.addr;
    suffixedAddr = suffixed.addr;
  });
  afterAll(async () => {
    for (const i of impostors) i.forceShutdown();
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

    // Nor to one that names a trust domain with a path, presenting a real SVID whose path ends like the
    // reconciler's.
    const refused = await joinReconciler({ server: suffixedAddr, token, state, deadlineMs: 10_000 }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(JoinError);
    expect((refused as JoinError).message).toContain(
      'which is not a trust domain name: not sending the token',
    );
    expect(receivedSuffixed).toEqual([]);

    // Nor with the CAs given in a file (--bundle) that holds the impostor's CA beside ours.
    const fromFile = await joinReconciler({
      server: impostorAddr,
      token,
      state,
      bundlePem: withOwnCaBundlePem,
      deadlineMs: 10_000,
    }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(fromFile).toBeInstanceOf(JoinError);
    expect(received).toEqual([]);

    // Unused, the token still works where it belongs; the agent keeps the reconciler's bundle only.
    await joinReconciler({ server: fleet.addr, token, state });
    const saved = readFileSync(join(dir, 'agent', 'bundle.crt'), 'utf8');
    expect(saved).toBe(fleet.authority.bundlePem());
  });
});
