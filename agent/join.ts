/**
 * Joining, once per node (kubeadm's discovery, then SPIRE's join-token attestation):
 *
 *   1. fetch the trust bundle over TLS without verification, and keep of it only the authority whose
 *      SubjectPublicKeyInfo hashes to the pin in the token (or take the bundle from --bundle FILE): the rest
 *      of an unverified answer proves nothing, and a server that added its own CA beside ours would
 *      otherwise be trusted with the token;
 *   2. reconnect verifying the reconciler's SVID against that authority, and only then send the token;
 *   3. receive the daemon ID the token assigns, generate a key here, send a CSR for that ID;
 *   4. check the SVID that comes back (our key, the assigned ID) and save everything in the state dir.
 *
 * The token never reaches a server that has not proven it holds the pinned CA. Every step shares one
 * deadline. Errors are JoinError values with the reconciler's reason.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { parseTrustDomain } from '../kernel-module/spiffe-id.ts';
import { type AgentServiceStub, unverifiedClient, verifiedClient } from './connection.ts';
import { generateKeyAndCsr } from './csr.ts';
import { parseJoinToken } from './protocol/join-token.ts';
import type { JoinResponse, TrustBundle } from './protocol/messages.ts';
import { bundleVersion, certificatesDer, certificatesPem, spkiPin } from './protocol/version.ts';
import { grpcErrorText, PROTOCOL_VERSION, reconcilerSpiffeId } from './protocol/wire.ts';
import { type AgentIdentity, type AgentStateDir, svidFacts } from './state.ts';

const RECONCILER_ID_RE = /^spiffe:\/\/[^/]+\/riptides\/reconciler$/;

export class JoinError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'JoinError';
  }
}

export interface JoinOptions {
  server: string;
  token: string;
  state: AgentStateDir;
  /** The daemon group the operator expects; the reconciler refuses the join if the token grants another. */
  expectedDaemonGroup?: string;
  /** Trust this bundle (PEM) instead of the pin in the token. */
  bundlePem?: string;
  deadlineMs?: number;
}

function unary<T>(client: AgentServiceStub, deadline: Date): Promise<T> {
  return new Promise((resolve, reject) =>
    client.GetTrustBundle({}, { deadline }, (err, res) => (err ? reject(err) : resolve(res as T))),
  );
}

const describe = grpcErrorText;

/**
 * The authority the token pins, fetched from the server with the trust domain the server names (checked
 * later against the SVID the reconciler presents); throws JoinError when no authority matches.
 */
async function discoverPinnedAuthority(
  server: string,
  pin: string,
  deadline: Date,
): Promise<{ trustDomain: string; pinned: Buffer[] }> {
  const client = unverifiedClient(server);
  try {
    const bundle = await unary<TrustBundle>(client, deadline).catch((err: unknown) => {
      throw new JoinError('UNREACHABLE', `cannot fetch the trust bundle from ${server}: ${describe(err)}`);
    });
    // The trust domain names the reconciler's SPIFFE ID the agent will accept: a name with a path in it
    // ("example.org/team") would let any SVID whose path ends in /riptides/reconciler pass for it.
    const td = parseTrustDomain(String(bundle.trustDomain));
    if (!td.ok || td.trustDomain !== bundle.trustDomain)
      throw new JoinError(
        'PROTOCOL',
        `${server} names its trust domain ${JSON.stringify(String(bundle.trustDomain).slice(0, 256))}, which is not a trust domain name: not sending the token`,
      );
    const pinned = bundle.x509Authorities.filter((der) => safePin(der) === pin);
    if (pinned.length === 0)
      throw new JoinError(
        'PIN_MISMATCH',
        `the trust bundle served by ${server} does not hold the CA pinned by the join token (sha256:${pin.slice(0, 16)}…): not sending the token. Is --server the reconciler that created it?`,
      );
    return { trustDomain: bundle.trustDomain, pinned };
  } finally {
    client.close();
  }
}

function safePin(der: Buffer): string {
  try {
    return spkiPin(der);
  } catch {
    return '';
  }
}

/** Joins and saves the identity; returns it. */
export async function joinReconciler(opts: JoinOptions): Promise<AgentIdentity> {
  const parsed = parseJoinToken(opts.token);
  if (!parsed)
    throw new JoinError(
      'MALFORMED',
      'the join token is malformed: pass it exactly as `riptides-cli token create` printed it (rjt1.…)',
    );
  const deadline = new Date(Date.now() + (opts.deadlineMs ?? 30_000));
  let bundlePem: string;
  let trustDomain: string | null = null;
  if (opts.bundlePem) {
    // Nothing is fetched unverified, but the token is still bound to the CA it pins: a file that holds other
    // CAs too (another trust domain's, a staging one) must not send the token to a server of theirs.
    const all = certificatesDer(opts.bundlePem);
    if (all.length === 0) throw new JoinError('BAD_BUNDLE', 'the --bundle file holds no PEM certificate');
    const pinned = all.filter((der) => safePin(der) === parsed.pin);
    if (pinned.length === 0)
      throw new JoinError(
        'PIN_MISMATCH',
        `the --bundle file does not hold the CA the join token pins (sha256:${parsed.pin.slice(0, 16)}…): is it this reconciler's bundle (riptides-cli bundle show)?`,
      );
    bundlePem = certificatesPem(pinned);
  } else {
    const b = await discoverPinnedAuthority(opts.server, parsed.pin, deadline);
    bundlePem = certificatesPem(b.pinned);
    trustDomain = b.trustDomain;
  }
  // With --bundle the trust domain is not known yet: any reconciler SVID the bundle verifies will do, and the
  // assignment must then name the same trust domain.
  const client = verifiedClient(opts.server, {
    bundlePem,
    reconcilerSpiffeId: trustDomain ? reconcilerSpiffeId(trustDomain) : RECONCILER_ID_RE,
  });
  try {
    const result = await new Promise<{
      assignment: NonNullable<JoinResponse['assignment']>;
      chainDer: Buffer[];
      bundle: TrustBundle;
      keyPem: string;
      reconcilerId: string;
    }>((resolve, reject) => {
      const call = client.Join({ deadline });
      let assignment: JoinResponse['assignment'] = null;
      let keyPem = '';
      call.on('data', (m: JoinResponse) => {
        if (m.step === 'assignment' && m.assignment && !assignment) {
          assignment = m.assignment;
          const a = m.assignment;
          generateKeyAndCsr(a.spiffeId).then(
            (k) => {
              keyPem = k.keyPem;
              call.write({ csrDer: k.csrDer });
            },
            (err: unknown) => {
              call.cancel();
              reject(new JoinError('LOCAL', `cannot make a key and CSR: ${(err as Error).message}`));
            },
          );
          return;
        }
        if (m.step === 'result' && m.result && assignment && keyPem) {
          const r = m.result;
          if (!r.bundle) {
            reject(new JoinError('PROTOCOL', 'the reconciler sent no trust bundle with the SVID'));
            return;
          }
          resolve({
            assignment,
            chainDer: r.svidChainDer,
            bundle: r.bundle,
            keyPem,
            reconcilerId: r.reconcilerSpiffeId,
          });
          call.end();
          return;
        }
        reject(new JoinError('PROTOCOL', 'unexpected Join message from the reconciler'));
        call.cancel();
      });
      call.on('error', (err: grpc.ServiceError) => {
        const reason = describe(err);
        reject(
          new JoinError(
            /not known|does not verify|already used|expired|grants|malformed/.test(reason)
              ? 'REFUSED'
              : 'FAILED',
            `join refused by ${opts.server}: ${reason}`,
          ),
        );
      });
      call.write({
        token: {
          token: opts.token.trim(),
          expectedDaemonGroup: opts.expectedDaemonGroup ?? '',
          protocolVersion: PROTOCOL_VERSION,
        },
      });
    });
    const { assignment, chainDer, bundle, keyPem, reconcilerId } = result;
    const chainPem = certificatesPem(chainDer);
    const facts = svidFacts(chainPem);
    if (facts.uris.length !== 1 || facts.uris[0] !== assignment.spiffeId)
      throw new JoinError(
        'PROTOCOL',
        `the SVID returned names ${facts.uris.join(', ')}, not ${assignment.spiffeId}`,
      );
    if (reconcilerId !== reconcilerSpiffeId(assignment.trustDomain))
      throw new JoinError(
        'PROTOCOL',
        `the reconciler calls itself ${reconcilerId} in trust domain ${assignment.trustDomain}`,
      );
    if (!new X509Certificate(chainPem).checkPrivateKey(createPrivateKey(keyPem)))
      throw new JoinError('PROTOCOL', 'the SVID returned is not for the key this agent generated');
    // The reconciler proved it holds the pinned CA on this stream, so the bundle it sends (other authorities
    // of a rotation included) is its own; it must still hold the pinned one.
    if (!bundle.x509Authorities.some((der) => safePin(der) === parsed.pin))
      throw new JoinError('PIN_MISMATCH', 'the bundle sent with the SVID does not hold the pinned CA');
    if (bundle.version !== bundleVersion(bundle.x509Authorities))
      throw new JoinError('PROTOCOL', 'the bundle sent with the SVID does not match its version');
    const identity: AgentIdentity = {
      version: 1,
      server: opts.server,
      trustDomain: assignment.trustDomain,
      daemonId: assignment.daemonId,
      spiffeId: assignment.spiffeId,
      daemonGroup: assignment.daemonGroup || null,
      reconcilerSpiffeId: reconcilerId,
      joinedAt: new Date().toISOString(),
    };
    await opts.state.ensure();
    await opts.state.saveBundle(certificatesPem(bundle.x509Authorities));
    await opts.state.saveSvid(keyPem, chainPem);
    await opts.state.saveIdentity(identity);
    return identity;
  } finally {
    client.close();
  }
}
