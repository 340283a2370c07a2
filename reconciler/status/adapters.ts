/**
 * From what the other parts know to status entries: the resources of a revision (policy/), and the credential
 * manager's states (credentials/). Small on purpose: the pass calls them and the StatusBook merges.
 */
import type { BindingStatus, CredentialStatus, SourceStatus } from '../credentials/types.ts';
import { reconcileError } from '../errors/reconcile-error.ts';
import { sourceType } from '../policy/kinds/index.ts';
import type { ResourceSet } from '../policy/resource-set.ts';
import { namespaceOf, scopeKey } from '../policy/resource-set.ts';
import type { StatusBook } from './book.ts';
import {
  type Condition,
  findCondition,
  markFailed,
  markReady,
  markReconciling,
  withRevision,
} from './conditions.ts';
import type { CredentialBindingStatus, CredentialSourceStatus, ResourceStatus } from './model.ts';

/**
 * Skeletons by the parsed resource they were made from. The parse cache hands a commit's unchanged files back
 * as the same objects, so an unchanged resource gets its skeleton back (with the new revision) and the
 * StatusBook can keep its entry instead of merging a new one: 10,000 resources, one changed file.
 */
export type SkeletonMemo = WeakMap<object, { status: ResourceStatus; trustDomain: string; uses: number }>;

/**
 * The status skeleton of every resource of `set` at `revision` (what git says; runtime fields empty or
 * pending). Secrets are not listed: they are references, not managed resources. With `memo`, a resource
 * object seen before gets the same skeleton object, its `observedRevision` set to `revision`.
 */
export function statusesFromResources(
  set: ResourceSet,
  opts: { trustDomain: string; revision: string | null },
  memo?: SkeletonMemo,
): ResourceStatus[] {
  const base = (r: {
    file: string;
    value: { metadata: { name: string; namespace?: string | undefined } };
  }) => ({
    namespace: namespaceOf(r as never),
    name: r.value.metadata.name,
    file: r.file,
    observedRevision: opts.revision,
    conditions: [],
  });
  const usesOfSource = new Map<string, number>();
  for (const list of [set.bindings, set.workloadCredentials])
    for (const b of list) {
      const name = b.value.spec.credentialSource;
      usesOfSource.set(name, (usesOfSource.get(name) ?? 0) + 1);
    }
  const out: ResourceStatus[] = [];
  const push = (r: object, uses: number, make: () => ResourceStatus) => {
    const hit = memo?.get(r);
    if (hit && hit.trustDomain === opts.trustDomain && hit.uses === uses) {
      hit.status.observedRevision = opts.revision;
      out.push(hit.status);
      return;
    }
    const status = make();
    memo?.set(r, { status, trustDomain: opts.trustDomain, uses });
    out.push(status);
  };
  for (const r of set.identities)
    push(r, 0, () => ({
      kind: 'WorkloadIdentity',
      ...base(r),
      workloadID: r.value.spec.workloadID,
      spiffeId: `spiffe://${opts.trustDomain}/${r.value.spec.workloadID}`,
      scope: scopeKey(r.value.spec),
      scheduledNodes: 0,
      attestedProcesses: 0,
      svidExpiry: null,
    }));
  for (const r of set.services)
    push(r, 0, () => ({
      kind: 'Service',
      ...base(r),
      addresses: (r.value.spec.addresses ?? []).map((a) => (a.port ? `${a.address}:${a.port}` : a.address)),
      external: r.value.spec.external === true,
      labels: { ...r.value.spec.labels },
      // The Service's tags and those of its addresses (the quickstart tags its addresses), each once.
      tags: [
        ...new Set([
          ...(r.value.spec.tags ?? []),
          ...(r.value.spec.addresses ?? []).flatMap((a) => a.tags ?? []),
        ]),
      ],
    }));
  for (const r of set.sources) {
    const uses = usesOfSource.get(r.value.metadata.name) ?? 0;
    push(r, uses, () => ({
      kind: 'CredentialSource',
      ...base(r),
      type: sourceType(r.value.spec),
      state: 'PENDING',
      message: null,
      bindings: uses,
    }));
  }
  const binding = (
    kind: 'CredentialBinding' | 'WorkloadCredential',
    r: (typeof set.bindings)[number] | (typeof set.workloadCredentials)[number],
    propagation: string,
  ): CredentialBindingStatus => ({
    kind,
    ...base(r),
    workloadID: r.value.spec.workloadID,
    credentialSource: r.value.spec.credentialSource,
    propagation,
    state: 'PENDING',
    message: null,
    fingerprint: null,
    version: null,
    expiresAt: null,
  });
  for (const r of set.bindings)
    push(r, 0, () => {
      const p = r.value.spec.propagation;
      const how = [p.injection ? 'injection' : null, p.sysfs !== undefined ? 'sysfs' : null]
        .filter(Boolean)
        .join('+');
      return binding('CredentialBinding', r, how);
    });
  for (const r of set.workloadCredentials) push(r, 0, () => binding('WorkloadCredential', r, 'egress'));
  return out;
}

/**
 * Copies the credential manager's states into the CredentialSource and CredentialBinding (and
 * WorkloadCredential) statuses, sets their conditions, and records an event on each change of state. `only`:
 * the keys of the entries to look at, when the others are known to show `status` at `revision` already (the
 * same status was applied before the last syncResources, which moved them to `revision` as a whole). The
 * entries come out as with every entry looked at; the events of two entries may be recorded in another order,
 * which decides which entry's events go first only once the event log holds more rings than it keeps
 * (`maxResources`, 50,000).
 */
export function applyCredentialStatus(
  book: StatusBook,
  status: CredentialStatus,
  revision: string | null,
  only?: ReadonlySet<string>,
): void {
  const now = book.now();
  const { sources, bindings } = indexOf(status);
  // Already showing this state and message for this revision: nothing to recompute. The status is refreshed
  // several times a second, and thousands of bindings failing as before must not cost anything.
  const current = (
    r: { state: string; message: string | null; conditions: readonly Condition[] },
    state: string,
    message: string | undefined,
  ) =>
    r.state === state &&
    r.message === (message ?? null) &&
    findCondition(r.conditions, 'Ready')?.observedRevision === revision;
  // The same state and message at another revision (a commit that did not touch it): only the revision moves.
  const carried = (
    r: { state: string; message: string | null; conditions: readonly Condition[] },
    state: string,
    message: string | undefined,
  ) => r.state === state && r.message === (message ?? null) && r.conditions.length > 0;
  for (const [key, r] of only ? entriesOf(book, only) : book.entries()) {
    if (r.kind === 'CredentialSource') {
      const s = sources.get(r.name);
      if (!s || current(r, s.state, s.message)) continue;
      if (carried(r, s.state, s.message)) {
        book.updateResource(key, (x) => {
          x.conditions = withRevision(x.conditions, revision);
        });
        continue;
      }
      const before = r.state;
      book.updateResource(key, (x) => {
        const src = x as CredentialSourceStatus;
        src.state = s.state;
        src.message = s.message ?? null;
        src.conditions = conditionsFor(
          src.conditions,
          s.state,
          s.message,
          revision,
          now,
          'CredentialAvailable',
        );
      });
      if (before !== s.state)
        book.events.record(
          key,
          s.state === 'ERROR' ? 'Warning' : 'Normal',
          `Credential${title(s.state)}`,
          s.message ?? s.state,
          revision,
        );
    } else if (r.kind === 'CredentialBinding' || r.kind === 'WorkloadCredential') {
      const b = bindings.get(r.credentialSource)?.get(r.workloadID);
      if (!b) continue;
      const same =
        r.fingerprint === (b.fingerprint ?? null) &&
        r.version === (b.version ?? null) &&
        r.expiresAt === (b.expiresAt ?? null);
      if (same && current(r, b.state, b.message)) continue;
      if (same && carried(r, b.state, b.message)) {
        book.updateResource(key, (x) => {
          x.conditions = withRevision(x.conditions, revision);
        });
        continue;
      }
      const before = r.state;
      book.updateResource(key, (x) => {
        const cb = x as CredentialBindingStatus;
        cb.state = b.state;
        cb.message = b.message ?? null;
        cb.fingerprint = b.fingerprint ?? null;
        cb.version = b.version ?? null;
        cb.expiresAt = b.expiresAt ?? null;
        cb.conditions = conditionsFor(cb.conditions, b.state, b.message, revision, now, 'CredentialBound');
      });
      if (before !== b.state)
        book.events.record(
          key,
          b.state === 'FAILED' ? 'Warning' : 'Normal',
          `Binding${title(b.state)}`,
          b.message ?? b.state,
          revision,
        );
    }
  }
}

function* entriesOf(book: StatusBook, keys: ReadonlySet<string>): Generator<[string, ResourceStatus]> {
  for (const key of keys) {
    const r = book.entry(key);
    if (r) yield [key, r];
  }
}

interface StatusIndex {
  sources: Map<string, SourceStatus>;
  /** By source name, then workload ID: no key string built per binding and per refresh. */
  bindings: Map<string, Map<string, BindingStatus>>;
}

/**
 * The credential manager's status by name, built once per status object: the manager hands out the same object
 * until something in it changes, and each pass applies it again to the resources of the new revision.
 */
const indexes = new WeakMap<CredentialStatus, StatusIndex>();

function indexOf(status: CredentialStatus): StatusIndex {
  let index = indexes.get(status);
  if (!index) {
    index = { sources: new Map(status.sources.map((s) => [s.name, s])), bindings: new Map() };
    for (const b of status.bindings) {
      const of = index.bindings.get(b.source);
      if (of) of.set(b.workloadID, b);
      else index.bindings.set(b.source, new Map([[b.workloadID, b]]));
    }
    indexes.set(status, index);
  }
  return index;
}

function title(state: string): string {
  return state.charAt(0) + state.slice(1).toLowerCase();
}

function conditionsFor(
  conditions: CredentialSourceStatus['conditions'],
  state: string,
  message: string | undefined,
  revision: string | null,
  now: Date,
  readyReason: string,
) {
  if (state === 'AVAILABLE' || state === 'OK')
    return markReady(conditions, revision, message ?? state, now, readyReason);
  if (state === 'PENDING')
    return markReconciling(conditions, revision, message ?? 'waiting for the first fetch', now);
  // The manager keeps retrying with backoff: transient, unless the source itself is unusable.
  return markFailed(conditions, revision, reconcileError('CredentialUnavailable', message ?? state), now);
}
