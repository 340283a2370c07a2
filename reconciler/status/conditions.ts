/**
 * Conditions in the style of Flux (kstatus): `Ready`, `Reconciling`, `Stalled`, each with a status, a CamelCase
 * reason, a message, the time it last changed status, and the revision it refers to.
 *
 * The helpers keep the set consistent as Flux's controllers do:
 *  - in progress: Reconciling=True, Ready=Unknown, no Stalled;
 *  - done: Ready=True, no Reconciling, no Stalled;
 *  - transient failure: Ready=False (reason = the error code), Reconciling=True with reason
 *    `ProgressingWithRetry`, no Stalled;
 *  - terminal failure: Stalled=True and Ready=False (reason = the error code), no Reconciling.
 * `lastTransitionTime` changes only when a condition's status changes (apimachinery's SetStatusCondition).
 */
import type { ReconcileError } from '../errors/reconcile-error.ts';

export type ConditionType = 'Ready' | 'Reconciling' | 'Stalled';
export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: ConditionType;
  status: ConditionStatus;
  reason: string;
  message: string;
  /** ISO 8601: when `status` last changed. */
  lastTransitionTime: string;
  /** The commit the condition refers to (null before the first fetch). */
  observedRevision: string | null;
}

/** Condition order in output: Ready first, as `kubectl describe` and `flux get` show it. */
const ORDER: Record<ConditionType, number> = { Ready: 0, Reconciling: 1, Stalled: 2 };

/**
 * `conditions` with `next` set (added or replaced), its transition time kept when the status is unchanged.
 * When `next` is already there as it is, `conditions` itself comes back: the status of thousands of bindings is
 * refreshed several times a second, and a retry that fails as before changes nothing (callers never mutate
 * condition arrays in place; followRevision is the StatusBook's one exception).
 */
export function setCondition(
  conditions: readonly Condition[],
  next: Omit<Condition, 'lastTransitionTime'>,
  now: Date,
): Condition[] {
  const prev = conditions.find((c) => c.type === next.type);
  if (
    prev &&
    prev.status === next.status &&
    prev.reason === next.reason &&
    prev.message === next.message &&
    prev.observedRevision === next.observedRevision
  )
    return conditions as Condition[];
  const lastTransitionTime =
    prev && prev.status === next.status ? prev.lastTransitionTime : now.toISOString();
  return [...conditions.filter((c) => c.type !== next.type), { ...next, lastTransitionTime }].sort(
    (a, b) => ORDER[a.type] - ORDER[b.type],
  );
}

/**
 * `conditions` referring to `revision`, each otherwise as it is (status, reason, message, transition time);
 * `conditions` itself when they all do. For a new revision that leaves a resource's state as it was: thousands
 * of bindings are carried over to every commit, and rebuilding each one's conditions cost most of a pass.
 */
export function withRevision(conditions: readonly Condition[], revision: string | null): Condition[] {
  return conditions.every((c) => c.observedRevision === revision)
    ? (conditions as Condition[])
    : conditions.map((c) => (c.observedRevision === revision ? c : { ...c, observedRevision: revision }));
}

/**
 * When every condition of `conditions` refers to `from`, sets them to refer to `revision`, in place, and says
 * true; else changes nothing and says false. The one exception to conditions being immutable, for the
 * StatusBook only, when an entry follows a new revision as a whole (a commit that did not touch it). Each
 * entry's conditions are its own objects (the helpers here copy what they change), so nothing else sees the
 * move, and what compares arrays by identity rightly finds the entry's state unchanged.
 */
export function followRevision(
  conditions: readonly Condition[],
  from: string | null,
  revision: string | null,
): boolean {
  for (let i = 0; i < conditions.length; i++) if (conditions[i]!.observedRevision !== from) return false;
  for (let i = 0; i < conditions.length; i++) conditions[i]!.observedRevision = revision;
  return true;
}

/** `conditions` without `type`; `conditions` itself when it has none. */
export function removeCondition(conditions: readonly Condition[], type: ConditionType): Condition[] {
  return conditions.some((c) => c.type === type)
    ? conditions.filter((c) => c.type !== type)
    : (conditions as Condition[]);
}

export function findCondition(conditions: readonly Condition[], type: ConditionType): Condition | undefined {
  return conditions.find((c) => c.type === type);
}

/** Work on `revision` has started. */
export function markReconciling(
  conditions: readonly Condition[],
  revision: string | null,
  message: string,
  now: Date,
): Condition[] {
  let out = removeCondition(conditions, 'Stalled');
  out = setCondition(
    out,
    { type: 'Reconciling', status: 'True', reason: 'Progressing', message, observedRevision: revision },
    now,
  );
  return setCondition(
    out,
    { type: 'Ready', status: 'Unknown', reason: 'Progressing', message, observedRevision: revision },
    now,
  );
}

/** `revision` is in force. */
export function markReady(
  conditions: readonly Condition[],
  revision: string | null,
  message: string,
  now: Date,
  reason = 'Succeeded',
): Condition[] {
  // Already exactly this (the usual answer for thousands of identities at every refresh): no closures, no copies.
  const only = conditions.length === 1 ? conditions[0]! : undefined;
  if (
    only?.type === 'Ready' &&
    only.status === 'True' &&
    only.reason === reason &&
    only.message === message &&
    only.observedRevision === revision
  )
    return conditions as Condition[];
  const out = removeCondition(removeCondition(conditions, 'Reconciling'), 'Stalled');
  return setCondition(
    out,
    { type: 'Ready', status: 'True', reason, message, observedRevision: revision },
    now,
  );
}

/** Work on `revision` failed with `error`: Stalled when terminal, retrying otherwise. */
export function markFailed(
  conditions: readonly Condition[],
  revision: string | null,
  error: ReconcileError,
  now: Date,
): Condition[] {
  const message = `${error.reason} (${error.hint})`;
  let out: Condition[];
  if (error.terminal) {
    out = removeCondition(conditions, 'Reconciling');
    out = setCondition(
      out,
      { type: 'Stalled', status: 'True', reason: error.code, message, observedRevision: revision },
      now,
    );
  } else {
    out = removeCondition(conditions, 'Stalled');
    out = setCondition(
      out,
      {
        type: 'Reconciling',
        status: 'True',
        reason: 'ProgressingWithRetry',
        message,
        observedRevision: revision,
      },
      now,
    );
  }
  return setCondition(
    out,
    { type: 'Ready', status: 'False', reason: error.code, message, observedRevision: revision },
    now,
  );
}

/** `True`, `False` or `Unknown` of the Ready condition, for READY columns. */
export function readyStatus(conditions: readonly Condition[]): ConditionStatus {
  return findCondition(conditions, 'Ready')?.status ?? 'Unknown';
}
