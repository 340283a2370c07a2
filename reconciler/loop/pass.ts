/**
 * One reconcile pass, each step a function with a typed result (in the manner of Flux's source-controller):
 *
 *   fetch → render → identities → credentials → diff → push → collect → status
 *
 * - **fetch**: the tracked revision (a fetch for a remote, the branch for a local repository, the files for a
 *   plain directory).
 * - **render**: load → validate → compile at that revision, incrementally (only blobs not seen before are
 *   parsed; the compiler reuses what did not change). A revision that does not validate is `ValidationFailed`
 *   (terminal): its diagnostics become the source status, with file and line, and nothing is applied; the last
 *   good revision stays in force. A revision already known bad is not rendered again.
 * - **identities**: a due rotation step of the CA and the JWT keys (prepare, activate, retire).
 * - **credentials**: keeps every (source, workload) pair the new programs reference fresh (ensure); pairs no
 *   longer referenced are released after the push.
 * - **diff**: desired programs against what each agent holds (ACKed or announced): scopes changed, agents to
 *   update.
 * - **push**: the new desired state to the agent server, which sends each connected agent the difference to
 *   its own program (an agent applies a whole program or none of it: ACK, or NACK keeping its version).
 * - **collect**: waits, bounded by the apply timeout, for the agents it pushed to: ACKed, NACKed, still pending.
 * - **status**: source, resources, credentials and daemons in the StatusBook; the applied revision in the store.
 *
 * Errors are ReconcileErrors: a terminal one stalls the source until the next trigger, a transient one is
 * retried with the one backoff policy (common/retry.ts) by the runtime (reconciler.ts).
 */

import { desiredStateOf } from '../agents/desired.ts';
import type { DesiredPrograms } from '../agents/programs.ts';
import type { AgentServer, DesiredState, PublishPlan } from '../agents/server.ts';
import type { AgentStatus } from '../agents/session.ts';
import type { CredentialManager } from '../credentials/manager.ts';
import type { CredentialSourceSpec } from '../credentials/types.ts';
import { classify, validationFailure } from '../errors/classify.ts';
import { type ReconcileError, type Result, reconcileError } from '../errors/reconcile-error.ts';
import type { Authority } from '../identity/authority.ts';
import type { Diagnostic } from '../policy/diagnostics.ts';
import type { RenderResult } from '../policy/render.ts';
import type { RevisionReader } from '../revision/reader.ts';
import { RevisionConfigError } from '../revision/render.ts';
import type { PolicyRepository } from '../revision/repository.ts';

/** The long-lived parts a pass works with. */
export interface PassParts {
  repository: PolicyRepository;
  reader: RevisionReader;
  authority: Authority;
  credentials: CredentialManager | null;
  agents: AgentServer;
  /** Longest wait for ACKs after a push, ms. */
  applyTimeoutMs: number;
  now?: () => number;
}

/** The revision in force: what was last applied, rendered and published. */
export interface AppliedRevision {
  revision: string;
  appliedAt: string;
  result: RenderResult;
  desired: DesiredState;
  trustDomain: string;
}

export interface FetchResult {
  revision: string;
  fetchedAt: string;
  /** False when it is the revision already in force (or already refused). */
  changed: boolean;
  /** The branch moved to a commit that does not contain the revision in force (a force-push). */
  historyRewritten: boolean;
}

export interface RenderStepResult {
  revision: string;
  result: RenderResult;
  desired: DesiredState;
  trustDomain: string;
  /** Files in the revision, files parsed this time (the rest came from the cache), resources. */
  files: number;
  parsed: number;
  resources: number;
  warnings: number;
}

export interface IdentitiesResult {
  /** The rotation step taken, if one was due. */
  rotated: string | null;
  nextRotation: { at: string; what: string } | null;
}

export interface CredentialsResult {
  /** Pairs the programs reference. */
  pairs: number;
  /** Pairs started (new, or whose source changed). */
  ensured: number;
  /** Pairs no longer referenced, released after the push. */
  released: number;
}

export interface DiffResult {
  scopesChanged: string[];
  /** Connected agents whose program changes. */
  toUpdate: Array<{ daemonId: string; from: string; to: string }>;
  /** Registered agents with no stream: they get the new program when they reconnect. */
  unreachable: string[];
  inSync: number;
}

export interface PushResult {
  agentsUpdated: number;
  /** Bytes queued toward agents by this push (programs and credential values). */
  bytes: number;
}

export interface CollectResult {
  acked: string[];
  nacked: Array<{ daemonId: string; code: string; message: string }>;
  /** Still not answered when the apply timeout passed (or disconnected meanwhile). */
  pending: string[];
  waitedMs: number;
}

/** fetch: the tracked revision, and whether it is new. */
export async function fetchStep(
  parts: PassParts,
  known: { applied: string | null; refused: string | null },
): Promise<Result<FetchResult>> {
  try {
    const { revision, fetchedAt } = await parts.repository.update();
    let historyRewritten = false;
    const git = parts.repository.git;
    if (git && known.applied && known.applied !== revision && !known.applied.startsWith('dir:'))
      historyRewritten = !(await git.isAncestor(known.applied, revision).catch(() => true));
    return {
      ok: true,
      value: {
        revision,
        fetchedAt,
        changed: revision !== known.applied && revision !== known.refused,
        historyRewritten,
      },
    };
  } catch (err) {
    return { ok: false, error: classify(err) };
  }
}

/**
 * render: load, validate and compile `revision`; only a revision with no error yields a desired state. A
 * revision that does not validate also gives its diagnostics (every one, for the source status).
 */
export async function renderStep(
  parts: PassParts,
  revision: string,
): Promise<Result<RenderStepResult> & { diagnostics?: Diagnostic[] }> {
  const source = parts.repository.sourceFor(revision);
  if (!source)
    return {
      ok: false,
      error: reconcileError('SourceUnreachable', `revision ${revision} can no longer be read`, {
        hint: 'the files changed while it was read; the next pass reads them again',
      }),
    };
  try {
    const rendered = await parts.reader.render(source, revision, {
      extra: parts.repository.readDiagnostics(revision),
      fallbackTrustDomain: parts.authority.trustDomain,
    });
    const { result } = rendered;
    const failed = validationFailure(result.diagnostics, revision);
    if (failed) return { ok: false, error: failed, diagnostics: result.diagnostics };
    const trustDomain = rendered.trustDomain ?? parts.authority.trustDomain;
    if (trustDomain !== parts.authority.trustDomain)
      return {
        ok: false,
        error: reconcileError(
          'ValidationFailed',
          `commit ${revision.slice(0, 12)} is for trust domain ${trustDomain}, but this reconciler's CA is for ${parts.authority.trustDomain}`,
          {
            hint: `set trustDomain: ${parts.authority.trustDomain} in riptides.config.yaml, or run a reconciler with its own --state-dir for ${trustDomain}`,
          },
        ),
      };
    const desired = desiredStateOf(result, revision)!;
    return {
      ok: true,
      value: {
        revision,
        result,
        desired,
        trustDomain,
        files: result.stats.files,
        parsed: result.stats.parsed,
        resources: result.stats.resources,
        warnings: result.diagnostics.filter((d) => d.severity === 'warning').length,
      },
    };
  } catch (err) {
    // A configuration file that cannot be used is the commit's fault, like any other diagnostic.
    if (err instanceof RevisionConfigError)
      return { ok: false, error: reconcileError('ValidationFailed', err.message) };
    return { ok: false, error: classify(err) };
  }
}

/** identities: the CA's and JWT keys' rotation step when one is due. */
export async function identitiesStep(parts: PassParts): Promise<Result<IdentitiesResult>> {
  const now = (parts.now ?? Date.now)();
  try {
    const next = parts.authority.status().nextRotation;
    let rotated: string | null = null;
    if (next && next.at.getTime() <= now) {
      await parts.authority.rotate();
      rotated = next.what;
    }
    const after = parts.authority.status().nextRotation;
    return {
      ok: true,
      value: { rotated, nextRotation: after ? { at: after.at.toISOString(), what: after.what } : null },
    };
  } catch (err) {
    return { ok: false, error: classify(err) };
  }
}

/**
 * credentials: starts keeping fresh every (source, workload) pair of the plan not kept yet (or whose source
 * changed). `held` is the pairs kept now (key → spec); returns the keys to release once the push is done.
 */
export function credentialsStep(
  parts: PassParts,
  plan: PublishPlan,
  held: Map<string, CredentialSourceSpec>,
): Result<CredentialsResult & { release: string[] }> {
  try {
    let ensured = 0;
    if (parts.credentials)
      for (const [key, pair] of plan.credentialPairs) {
        if (held.get(key) === pair.spec) continue;
        parts.credentials.ensure(pair.spec, pair.workload);
        held.set(key, pair.spec);
        ensured++;
      }
    const release = [...held.keys()].filter((k) => !plan.credentialPairs.has(k));
    return {
      ok: true,
      value: { pairs: plan.credentialPairs.size, ensured, released: release.length, release },
    };
  } catch (err) {
    return { ok: false, error: classify(err) };
  }
}

/** Releases pairs no program references any more (revoking Vault leases). */
export async function releaseCredentials(
  parts: PassParts,
  keys: readonly string[],
  held: Map<string, CredentialSourceSpec>,
): Promise<void> {
  await Promise.all(
    keys.map((key) => {
      held.delete(key);
      const [source, workload] = key.split('\u0000') as [string, string];
      return parts.credentials?.release(source, workload);
    }),
  );
}

/** diff: desired programs against what each registered agent holds. */
export function diffStep(plan: PublishPlan): DiffResult {
  const toUpdate: DiffResult['toUpdate'] = [];
  const unreachable: string[] = [];
  let inSync = 0;
  for (const a of plan.agents) {
    if (!a.connected) unreachable.push(a.daemonId);
    else if (a.from !== a.to) toUpdate.push({ daemonId: a.daemonId, from: a.from, to: a.to });
    else inSync++;
  }
  return { scopesChanged: plan.scopesChanged, toUpdate, unreachable, inSync };
}

const bytesSent = (agents: readonly AgentStatus[]) => agents.reduce((n, a) => n + a.counters.bytesSent, 0);

/** push: publishes the plan; each connected agent is sent what it lacks. */
export function pushStep(parts: PassParts, plan: PublishPlan): Result<PushResult> {
  try {
    const before = bytesSent(parts.agents.agents());
    const summary = parts.agents.publish(plan);
    return {
      ok: true,
      value: { agentsUpdated: summary.agentsToUpdate, bytes: bytesSent(parts.agents.agents()) - before },
    };
  } catch (err) {
    return { ok: false, error: classify(err) };
  }
}

/** collect: waits for the agents pushed to, until each ACKs or NACKs its version, disconnects, or time is up. */
export function collectStep(parts: PassParts, diff: DiffResult): Promise<CollectResult> {
  const started = performance.now();
  const waiting = new Map(diff.toUpdate.map((u) => [u.daemonId, u.to] as const));
  const acked: string[] = [];
  const nacked: CollectResult['nacked'] = [];
  const server = parts.agents;
  // Some may have answered before we listen.
  for (const a of server.agents()) {
    const to = waiting.get(a.daemonId);
    if (to === undefined) continue;
    if (a.ackedVersion === to) {
      waiting.delete(a.daemonId);
      acked.push(a.daemonId);
    } else if (a.nack?.version === to) {
      waiting.delete(a.daemonId);
      nacked.push({ daemonId: a.daemonId, code: a.nack.error.code, message: a.nack.error.message });
    }
  }
  return new Promise((resolve) => {
    const finish = () => {
      server.off('ack', onAck);
      server.off('nack', onNack);
      server.off('disconnected', onGone);
      clearTimeout(timer);
      resolve({
        acked: acked.sort(),
        nacked: nacked.sort((a, b) => (a.daemonId < b.daemonId ? -1 : 1)),
        pending: [...waiting.keys()].sort(),
        waitedMs: Math.round(performance.now() - started),
      });
    };
    const onAck = (s: AgentStatus, version: string) => {
      if (waiting.get(s.daemonId) !== version) return;
      waiting.delete(s.daemonId);
      acked.push(s.daemonId);
      if (waiting.size === 0) finish();
    };
    const onNack = (
      s: AgentStatus,
      version: string,
      _kept: string,
      error: { code: string; message: string },
    ) => {
      if (waiting.get(s.daemonId) !== version) return;
      waiting.delete(s.daemonId);
      nacked.push({ daemonId: s.daemonId, code: error.code, message: error.message });
      if (waiting.size === 0) finish();
    };
    // A daemon that goes away stays pending: it gets the program when it reconnects.
    const onGone = () => {};
    server.on('ack', onAck);
    server.on('nack', onNack);
    server.on('disconnected', onGone);
    const timer = setTimeout(finish, parts.applyTimeoutMs);
    timer.unref();
    if (waiting.size === 0) finish();
  });
}

/** The outcome of applying a plan, as one error (or none) for the source's conditions. */
export function applyOutcome(
  revision: string,
  collect: CollectResult,
  unreachable: number,
): ReconcileError | null {
  if (collect.nacked.length) {
    const first = collect.nacked[0]!;
    return reconcileError(
      'ProgramRejected',
      `revision ${revision.slice(0, 12)} is in force, but ${collect.nacked.length} daemon(s) refused it and keep their previous program: ${first.daemonId}: ${first.code} ${first.message}`,
    );
  }
  if (collect.pending.length)
    return reconcileError(
      'AgentUnreachable',
      `revision ${revision.slice(0, 12)} is in force; ${collect.pending.length} daemon(s) have not acknowledged it yet (${collect.pending.slice(0, 5).join(', ')}${collect.pending.length > 5 ? ', …' : ''})${unreachable ? `; ${unreachable} unreachable` : ''}`,
    );
  return null;
}

/** The desired programs the agent server holds (for drift and status). */
export type { DesiredPrograms };
