/**
 * What the agents report, turned into status: one DaemonStatus per registered daemon (health, applied and
 * desired version, last contact, processes, conditions) and the runtime fields of WorkloadIdentities (nodes
 * scheduled, processes attested, earliest SVID expiry). Run at the end of every pass and, debounced, whenever
 * an agent connects, disconnects, ACKs, NACKs or reports.
 *
 * Cost: one walk over the agents and one over each distinct program (agents of a daemon group share one), so a
 * fleet of thousands of agents in a few groups costs a few thousand steps, not agents × identities.
 */
import type { Program } from '../../agent/protocol/program.ts';
import { DAEMON_PATH_PREFIX } from '../../agent/protocol/wire.ts';
import type { DesiredPrograms } from '../agents/programs.ts';
import type { AgentStatus } from '../agents/session.ts';
import { reconcileError } from '../errors/reconcile-error.ts';
import type { StatusBook } from '../status/book.ts';
import { markFailed, markReady, markReconciling } from '../status/conditions.ts';
import type { DaemonStatus, WorkloadIdentityStatus } from '../status/model.ts';
import { daemonKey } from '../status/model.ts';

/** A daemon is in sync when it enforces exactly what the desired state gives it. */
export function inSync(a: AgentStatus): boolean {
  return a.desiredVersion !== '' && a.ackedVersion === a.desiredVersion;
}

function healthOf(a: AgentStatus): Pick<DaemonStatus, 'health' | 'healthMessage'> {
  if (!a.connected) return { health: 'unreachable', healthMessage: 'no stream to the reconciler' };
  // Refusing the program it should enforce leaves the node on an older one: not healthy, whatever its
  // control interface says.
  if (a.nack && a.nack.version === a.desiredVersion)
    return {
      health: 'degraded',
      healthMessage: `refused program ${a.nack.version.slice(0, 16)} (${a.nack.error.code}: ${a.nack.error.message}); enforcing ${a.nack.kept ? a.nack.kept.slice(0, 16) : 'nothing'}`,
    };
  const control = a.report?.control;
  if (!control) return { health: 'unknown', healthMessage: 'no state report yet' };
  if (control.health === 'OK' && control.drift.length === 0) return { health: 'ok', healthMessage: null };
  const drift = control.drift.length
    ? `control interface edited by hand: ${control.drift.slice(0, 3).join(', ')}${control.drift.length > 3 ? ', …' : ''}`
    : '';
  return {
    health: 'degraded',
    healthMessage: [control.health === 'OK' ? '' : control.health, control.error, drift]
      .filter(Boolean)
      .join('; '),
  };
}

/** Updates the book's daemons from the agent server's view; records an event on each change of health. */
export function syncDaemons(book: StatusBook, agents: readonly AgentStatus[], revision: string | null): void {
  const now = book.now();
  const seen = new Set<string>();
  for (const a of agents) {
    seen.add(a.daemonId);
    const prev = book.daemon(a.daemonId);
    const { health, healthMessage } = healthOf(a);
    let conditions = prev?.conditions ?? [];
    if (a.nack && a.nack.version === a.desiredVersion)
      conditions = markFailed(
        conditions,
        revision,
        reconcileError(
          'ProgramRejected',
          `daemon ${a.daemonId} refused program ${a.nack.version} (${a.nack.error.code}: ${a.nack.error.message}) and keeps ${a.nack.kept || 'nothing'}`,
        ),
        now,
      );
    else if (!a.connected)
      conditions = markFailed(
        conditions,
        revision,
        reconcileError('AgentUnreachable', `daemon ${a.daemonId} has no stream to the reconciler`),
        now,
      );
    else if (inSync(a))
      conditions = markReady(conditions, revision, `enforces program ${a.ackedVersion}`, now, 'InSync');
    else if (a.desiredVersion)
      conditions = markReconciling(
        conditions,
        revision,
        `program ${a.desiredVersion} sent; the daemon enforces ${a.ackedVersion || 'nothing'}`,
        now,
      );
    book.upsertDaemon({
      name: a.daemonId,
      workloadID: `${DAEMON_PATH_PREFIX}${a.daemonId}`,
      group: a.daemonGroup,
      health,
      healthMessage,
      appliedVersion: a.ackedVersion || null,
      desiredVersion: a.desiredVersion || null,
      lastContact: a.lastContact,
      processes: a.report?.processes.length ?? 0,
      conditions,
    });
    if (prev && prev.health !== health)
      book.events.record(
        daemonKey(a.daemonId),
        health === 'ok' ? 'Normal' : 'Warning',
        health === 'ok' ? 'Healthy' : health === 'unreachable' ? 'Unreachable' : 'Degraded',
        healthMessage ?? health,
        revision,
      );
  }
  for (const d of book.daemons()) if (!seen.has(d.name)) book.removeDaemon(d.name);
}

/**
 * The runtime fields of every WorkloadIdentity: daemons whose program carries it, processes attested to it,
 * the earliest notAfter of its SVIDs on them; and its Ready condition (in force on every scheduled daemon that
 * is connected, or which daemons lag or refused it). With `memo` (kept by the caller from one call to the
 * next), an identity whose entry and figures are as at the last call is not looked at: after a commit that did
 * not touch it, its entry follows the new revision as a whole (StatusBook.syncResources), which is what setting
 * its conditions again would do.
 */
export function syncIdentities(
  book: StatusBook,
  agents: readonly AgentStatus[],
  programs: DesiredPrograms | null,
  revision: string | null,
  memo?: IdentityMemo,
): void {
  const now = book.now();
  const scheduled = new Map<string, number>();
  const lagging = new Map<string, string[]>();
  const refused = new Map<string, string[]>();
  const processes = new Map<string, number>();
  const expiry = new Map<string, number>();
  // Agents sharing a program (a daemon group) are counted together: one walk per distinct program.
  const byProgram = new Map<Program, AgentStatus[]>();
  if (programs)
    for (const a of agents) {
      const p = programs.programFor(a.scopes);
      const list = byProgram.get(p);
      if (list) list.push(a);
      else byProgram.set(p, [a]);
    }
  const add = (m: Map<string, string[]>, id: string, daemon: string) => {
    const list = m.get(id);
    if (!list) m.set(id, [daemon]);
    else if (list.length < 5) list.push(daemon);
  };
  for (const [program, list] of byProgram) {
    const behind = list.filter((a) => a.connected && !inSync(a));
    for (const id of program.identities.keys()) {
      scheduled.set(id, (scheduled.get(id) ?? 0) + list.length);
      for (const a of behind) {
        if (a.nack?.version === program.version) add(refused, id, a.daemonId);
        else add(lagging, id, a.daemonId);
      }
    }
  }
  for (const a of agents)
    for (const i of a.report?.identities ?? []) {
      processes.set(i.spiffeId, (processes.get(i.spiffeId) ?? 0) + i.processCount);
      if (i.svidNotAfterUnix > 0) {
        const at = i.svidNotAfterUnix * 1000;
        expiry.set(i.spiffeId, Math.min(expiry.get(i.spiffeId) ?? at, at));
      }
    }
  // One message per daemon count, not one string per identity per refresh.
  const messages = new Map<number, string>();
  const inForce = (nodes: number) => {
    let m = messages.get(nodes);
    if (m === undefined) {
      m = nodes === 0 ? 'no daemon is registered in its scope yet' : `in force on ${nodes} daemon(s)`;
      messages.set(nodes, m);
    }
    return m;
  };
  // The identities only, in the book's order: nothing here depends on it, and sorting 10,000 names per refresh did.
  const seen = new Map<string, Seen>();
  // The book follows its own revision: an entry is left to follow it only when that is the one shown here.
  const follows = book.revision === revision;
  for (const key of book.keysOf('WorkloadIdentity')) {
    const spiffeId = spiffeIdOf(key, book, memo);
    const nodes = scheduled.get(spiffeId) ?? 0;
    const no = refused.get(spiffeId);
    const behind = lagging.get(spiffeId);
    const attested = processes.get(spiffeId) ?? 0;
    const exp = expiry.get(spiffeId);
    const figures = `${nodes} ${attested} ${exp ?? ''} ${no?.join(',') ?? ''} ${behind?.join(',') ?? ''}`;
    const was = memo?.seen.get(key);
    const stamp = book.stamp(key);
    if (follows && was && stamp !== undefined && was.stamp === stamp && was.figures === figures) {
      seen.set(key, was);
      continue;
    }
    const w = book.entry(key) as WorkloadIdentityStatus;
    const svidExpiry = exp === undefined ? null : new Date(exp).toISOString();
    const conditions = no
      ? markFailed(
          w.conditions,
          revision,
          reconcileError('ProgramRejected', `refused by daemon(s) ${no.join(', ')}`),
          now,
        )
      : behind
        ? markReconciling(
            w.conditions,
            revision,
            `waiting for daemon(s) ${behind.join(', ')} to enforce it`,
            now,
          )
        : markReady(w.conditions, revision, inForce(nodes), now, 'Applied');
    // As it is (the mark* helpers give back the same conditions): not changed, so the status store does not
    // serialise it again. A refresh runs several times a second over every identity.
    if (
      conditions !== w.conditions ||
      w.scheduledNodes !== nodes ||
      w.attestedProcesses !== attested ||
      w.svidExpiry !== svidExpiry
    )
      book.updateResource(key, (x) => {
        const s = x as WorkloadIdentityStatus;
        s.scheduledNodes = nodes;
        s.attestedProcesses = attested;
        s.svidExpiry = svidExpiry;
        s.conditions = conditions;
      });
    if (follows) seen.set(key, { stamp: book.stamp(key), figures, spiffeId: w.spiffeId });
  }
  if (memo) memo.seen = seen;
}

interface Seen {
  stamp: number | undefined;
  /** What the entry was set from: nodes, processes, SVID expiry, refusing and lagging daemons. */
  figures: string;
  spiffeId: string;
}

/** What syncIdentities keeps from one call to the next (see there); start with `newIdentityMemo()`. */
export interface IdentityMemo {
  seen: Map<string, Seen>;
}

export function newIdentityMemo(): IdentityMemo {
  return { seen: new Map() };
}

/** The identity's SPIFFE ID, without reading (and so bringing up to date) an entry seen before. */
function spiffeIdOf(key: string, book: StatusBook, memo: IdentityMemo | undefined): string {
  const was = memo?.seen.get(key);
  if (was && was.stamp !== undefined && was.stamp === book.stamp(key)) return was.spiffeId;
  return (book.entry(key) as WorkloadIdentityStatus).spiffeId;
}
