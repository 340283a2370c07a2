/**
 * The Join call: token → assignment → CSR → agent SVID, within one deadline. The token is checked first
 * (format, known, secret in constant time, expiry, daemon group), the SVID is signed only for the daemon ID
 * the token assigns, and the token is used (atomically) only once everything else succeeded, so a join that
 * fails half-way leaves the token usable and one that succeeds leaves it gone.
 */
import * as grpc from '@grpc/grpc-js';
import type { JoinRequest, JoinResponse, Out } from '../../agent/protocol/messages.ts';
import { daemonSpiffeId, LIMITS, PROTOCOL_VERSION } from '../../agent/protocol/wire.ts';
import { toPem } from '../identity/x509.ts';
import type { DaemonRecord } from './registry.ts';
import { malformedReason } from './session.ts';
import { JoinTokenError, type JoinTokenRecord, type JoinTokenStore } from './tokens.ts';

export type JoinCall = grpc.ServerDuplexStream<JoinRequest, Out<JoinResponse>>;

export interface JoinContext {
  trustDomain: string;
  tokens: JoinTokenStore;
  deadlineMs: number;
  agentSvidTtlSeconds: number;
  reconcilerSpiffeId: string;
  bundleDer(): Buffer[];
  bundleVersion(): string;
  /** False when the caller's address is over its join rate. */
  admit(peer: string): boolean;
  sign(csrPem: string, spiffeId: string, ttlSeconds: number): Promise<{ chainDer: Buffer[]; serial: string }>;
  register(record: DaemonRecord): Promise<void>;
  onRefused(code: string, message: string, peer: string): void;
  onJoined(record: DaemonRecord, peer: string): void;
}

/** The address part of grpc-js's peer string ("1.2.3.4:5678", "[::1]:5678"). */
export function peerAddress(peer: string): string {
  const m = /^\[?([^\]]*?)\]?:\d+$/.exec(peer);
  return m ? m[1]! : peer;
}

export function handleJoin(call: JoinCall, ctx: JoinContext): void {
  const peer = call.getPeer();
  let record: JoinTokenRecord | null = null;
  let done = false;
  const fail = (code: grpc.status, reasonCode: string, message: string) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    ctx.onRefused(reasonCode, message, peer);
    call.emit('error', { code, details: message });
  };
  const timer = setTimeout(
    () => fail(grpc.status.DEADLINE_EXCEEDED, 'DEADLINE', `join not completed within ${ctx.deadlineMs} ms`),
    ctx.deadlineMs,
  );
  timer.unref();
  if (!ctx.admit(peerAddress(peer))) {
    fail(
      grpc.status.RESOURCE_EXHAUSTED,
      'RATE_LIMITED',
      'too many join attempts from this address: retry in a few seconds',
    );
    return;
  }
  call.on('error', () => {
    done = true;
    clearTimeout(timer);
  });
  call.on('data', (m: JoinRequest) => {
    if (done) return;
    const malformed = malformedReason(m);
    if (malformed !== null) {
      fail(grpc.status.INVALID_ARGUMENT, 'MALFORMED', malformed);
      return;
    }
    if (!record) {
      if (m.step !== 'token' || !m.token) {
        fail(grpc.status.INVALID_ARGUMENT, 'PROTOCOL', 'the first Join message must carry the join token');
        return;
      }
      const t = m.token;
      if (t.protocolVersion !== PROTOCOL_VERSION) {
        fail(
          grpc.status.FAILED_PRECONDITION,
          'PROTOCOL_VERSION',
          `protocol version ${t.protocolVersion} is not supported: this reconciler speaks ${PROTOCOL_VERSION}`,
        );
        return;
      }
      ctx.tokens.check(String(t.token).slice(0, 512)).then(
        (rec) => {
          if (done) return;
          const expected = String(t.expectedDaemonGroup);
          if (expected && expected !== (rec.daemonGroup ?? '')) {
            fail(
              grpc.status.PERMISSION_DENIED,
              'GROUP_MISMATCH',
              `join token ${rec.id} grants ${rec.daemonGroup ? `daemon group ${rec.daemonGroup}` : 'no daemon group'}, not ${expected}: create a token with --daemon-group ${expected}`,
            );
            return;
          }
          record = rec;
          call.write({
            assignment: {
              daemonId: rec.daemonId,
              spiffeId: daemonSpiffeId(ctx.trustDomain, rec.daemonId),
              daemonGroup: rec.daemonGroup ?? '',
              trustDomain: ctx.trustDomain,
            },
          });
        },
        (err: unknown) => {
          if (err instanceof JoinTokenError) fail(grpc.status.PERMISSION_DENIED, err.code, err.message);
          else fail(grpc.status.INTERNAL, 'INTERNAL', `join token store: ${(err as Error).message}`);
        },
      );
      return;
    }
    if (m.step !== 'csrDer' || !m.csrDer || m.csrDer.length === 0 || m.csrDer.length > LIMITS.maxCsrBytes) {
      fail(
        grpc.status.INVALID_ARGUMENT,
        'PROTOCOL',
        `the second Join message must carry a CSR of 1..${LIMITS.maxCsrBytes} bytes`,
      );
      return;
    }
    const rec = record;
    const spiffeId = daemonSpiffeId(ctx.trustDomain, rec.daemonId);
    ctx
      .sign(toPem('CERTIFICATE REQUEST', m.csrDer), spiffeId, ctx.agentSvidTtlSeconds)
      .then(async (svid) => {
        if (done) return;
        await ctx.tokens.claim(rec);
        const daemon: DaemonRecord = {
          daemonId: rec.daemonId,
          spiffeId,
          daemonGroup: rec.daemonGroup,
          joinedAt: new Date().toISOString(),
          tokenId: rec.id,
          svidSerials: [svid.serial],
        };
        await ctx.register(daemon);
        if (done) return;
        done = true;
        clearTimeout(timer);
        call.write({
          result: {
            svidChainDer: svid.chainDer,
            bundle: {
              trustDomain: ctx.trustDomain,
              version: ctx.bundleVersion(),
              x509Authorities: ctx.bundleDer(),
            },
            reconcilerSpiffeId: ctx.reconcilerSpiffeId,
          },
        });
        call.end();
        ctx.onJoined(daemon, peer);
      })
      .catch((err: unknown) => {
        if (err instanceof JoinTokenError) fail(grpc.status.PERMISSION_DENIED, err.code, err.message);
        else fail(grpc.status.INVALID_ARGUMENT, 'CSR_REFUSED', (err as Error).message);
      });
  });
}
