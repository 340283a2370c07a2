/**
 * From what the other parts know to status entries: the resources of a revision (policy/), and the credential
 * manager's states (credentials/). Small on purpose: the pass calls them and the StatusBook merges.
 */
import type { BindingStatus, CredentialStatus, SourceStatus } from '../credentials/types.ts';
import { reconcileError } from '../errors/reconcile-error.ts';
import { sourceType } from '../policy/kinds/index.ts';
import { diffResourceSets } from '../policy/resource-delta.ts';
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

type Field = 'identities' | 'services' | 'sources' | 'bindings' | 'workloadCredentials';
/** The kinds that have a status, in the order statusesFromResources lists them (Secrets are references). */
const FIELDS: readonly Field[] = ['identities', 'services', 'sources', 'bindings', 'workloadCredentials'];
type Listed = ResourceSet[Field][number];

/** The number of CredentialBindings and WorkloadCredentials naming each CredentialSource name. */
function usesOfSources(set: ResourceSet): Map<string, number> {
  const uses = new Map<string, number>();
  for (const list of [set.bindings, set.workloadCredentials])
    for (const b of list) {
      const name = b.value.spec.credentialSource;
      uses.set(name, (uses.get(name) ?? 0) + 1);
    }
  return uses;
}

/**
 * The status skeleton of one resource at `revision` (what git says; runtime fields empty or pending); `uses`:
 * for a CredentialSource, the bindings naming it.
 */
function skeletonOf(
  field: Field,
  r: Listed,
  opts: { trustDomain: string; revision: string | null },
  uses: number,
): ResourceStatus {
  const base = {
    namespace: namespaceOf(r as never),
    name: r.value.metadata.name,
    file: r.file,
    observedRevision: opts.revision,
    conditions: [],
  };
  const binding = (
    kind: 'CredentialBinding' | 'WorkloadCredential',
    spec: { workloadID: string; credentialSource: string },
    propagation: string,
  ): CredentialBindingStatus => ({
    kind,
    ...base,
    workloadID: spec.workloadID,
    credentialSource: spec.credentialSource,
    propagation,
    state: 'PENDING',
    message: null,
    fingerprint: null,
    version: null,
    expiresAt: null,
  });
  switch (field) {
    case 'identities': {
      const spec = (r as ResourceSet['identities'][number]).value.spec;
      return {
        kind: 'WorkloadIdentity',
        ...base,
        workloadID: spec.workloadID,
        spiffeId: `spiffe://${opts.trustDomain}/${spec.workloadID}`,
        scope: scopeKey(spec),
        scheduledNodes: 0,
        attestedProcesses: 0,
        svidExpiry: null,
      };
    }
    case 'services': {
      const spec = (r as ResourceSet['services'][number]).value.spec;
      return {
        kind: 'Service',
        ...base,
        addresses: (spec.addresses ?? []).map((a) => (a.port ? `${a.address}:${a.port}` : a.address)),
        external: spec.external === true,
        labels: { ...spec.labels },
        // The Service's tags and those of its addresses (the quickstart tags its addresses), each once.
        tags: [...new Set([...(spec.tags ?? []), ...(spec.addresses ?? []).flatMap((a) => a.tags ?? [])])],
      };
    }
    case 'sources':
      return {
        kind: 'CredentialSource',
        ...base,
        type: sourceType((r as ResourceSet['sources'][number]).value.spec),
        state: 'PENDING',
        message: null,
        bindings: uses,
      };
    case 'bindings': {
      const spec = (r as ResourceSet['bindings'][number]).value.spec;
      const p = spec.propagation;
      const how = [p.injection ? 'injection' : null, p.sysfs !== undefined ? 'sysfs' : null]
        .filter(Boolean)
        .join('+');
      return binding('CredentialBinding', spec, how);
    }
    case 'workloadCredentials':
      return binding(
        'WorkloadCredential',
        (r as ResourceSet['workloadCredentials'][number]).value.spec,
        'egress',
      );
  }
}

/**
 * The status skeleton of every resource of `set` at `revision` (what git says; runtime fields empty or
 * pending), for StatusBook.syncResources. Secrets are not listed: they are references, not managed resources.
 */
export function statusesFromResources(
  set: ResourceSet,
  opts: { trustDomain: string; revision: string | null },
): ResourceStatus[] {
  const uses = usesOfSources(set);
  const out: ResourceStatus[] = [];
  for (const field of FIELDS)
    for (const r of set[field] as readonly Listed[])
      out.push(skeletonOf(field, r, opts, field === 'sources' ? (uses.get(r.value.metadata.name) ?? 0) : 0));
  return out;
}

/**
 * Brings a StatusBook to the resources of each newly applied revision, at the cost of what the commit changed:
 * the parse cache hands a commit's unchanged files back as the same objects, so one pointer walk against the
 * last set (diffResourceSets) finds the resources that came and went, and only those get a skeleton
 * (StatusBook.syncChanges). A CredentialSource whose count of bindings moved gets a new one too. The first
 * sync, one to another book or trust domain, and a set whose order moved, go through syncResources whole.
 */
export class StatusSync {
  #book: StatusBook | null = null;
  #previous: ResourceSet | null = null;
  #trustDomain = '';
  /** The skeleton made for each resource object of the last set. */
  readonly #skeletons = new Map<object, ResourceStatus>();
  #uses = new Map<string, number>();
  /** The CredentialSources of the last set by name (what a change of bindings touches). */
  readonly #sourcesNamed = new Map<string, Set<Listed>>();

  sync(book: StatusBook, set: ResourceSet, opts: { trustDomain: string; revision: string | null }): void {
    if (book !== this.#book || opts.trustDomain !== this.#trustDomain || !this.#previous) {
      this.#whole(book, set, opts);
      return;
    }
    let restarted = false;
    const delta = diffResourceSets(
      this.#previous,
      set,
      FIELDS,
      (r) => this.#skeletons.has(r),
      () => {
        restarted = true;
      },
    );
    if (restarted) {
      this.#whole(book, set, opts);
      return;
    }
    const added: ResourceStatus[] = [];
    const removed: ResourceStatus[] = [];
    const moved = new Set<string>();
    const count = (r: Listed, field: Field, by: number) => {
      if (field !== 'bindings' && field !== 'workloadCredentials') return;
      const name = (r as ResourceSet['bindings'][number]).value.spec.credentialSource;
      this.#uses.set(name, (this.#uses.get(name) ?? 0) + by);
      moved.add(name);
    };
    for (const { r, field } of delta.removed) {
      const listed = r as Listed;
      count(listed, field as Field, -1);
      removed.push(this.#skeletons.get(r)!);
      this.#skeletons.delete(r);
      if (field === 'sources') this.#sourcesNamed.get(listed.value.metadata.name)?.delete(listed);
    }
    const make = (r: Listed, field: Field) => {
      const skeleton = skeletonOf(
        field,
        r,
        opts,
        field === 'sources' ? (this.#uses.get(r.value.metadata.name) ?? 0) : 0,
      );
      this.#skeletons.set(r, skeleton);
      added.push(skeleton);
    };
    for (const { r, field } of delta.added) count(r as Listed, field as Field, 1);
    for (const { r, field } of delta.added) {
      make(r as Listed, field as Field);
      if (field === 'sources') this.#sourceNamed(r as Listed);
    }
    for (const name of moved)
      for (const r of this.#sourcesNamed.get(name) ?? []) {
        const was = this.#skeletons.get(r)!;
        if ((was as CredentialSourceStatus).bindings === (this.#uses.get(name) ?? 0)) continue;
        removed.push(was);
        make(r, 'sources');
      }
    this.#previous = set;
    book.syncChanges(added, removed, opts.revision);
  }

  #whole(book: StatusBook, set: ResourceSet, opts: { trustDomain: string; revision: string | null }): void {
    this.#book = book;
    this.#previous = set;
    this.#trustDomain = opts.trustDomain;
    this.#skeletons.clear();
    this.#sourcesNamed.clear();
    this.#uses = usesOfSources(set);
    const list: ResourceStatus[] = [];
    for (const field of FIELDS)
      for (const r of set[field] as readonly Listed[]) {
        const skeleton = skeletonOf(
          field,
          r,
          opts,
          field === 'sources' ? (this.#uses.get(r.value.metadata.name) ?? 0) : 0,
        );
        this.#skeletons.set(r, skeleton);
        if (field === 'sources') this.#sourceNamed(r);
        list.push(skeleton);
      }
    book.syncResources(list, opts.revision);
  }

  #sourceNamed(r: Listed): void {
    const name = r.value.metadata.name;
    const named = this.#sourcesNamed.get(name);
    if (named) named.add(r);
    else this.#sourcesNamed.set(name, new Set([r]));
  }
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
  for (const [key, r] of entriesOf(book, only ?? credentialKeys(book))) {
    if (r.kind === 'CredentialSource') {
      const s = sources.get(r.name);
      if (!s && r.bindings === 0 && (r.state !== 'PENDING' || r.conditions.length > 0)) {
        // Its last binding is gone and the manager no longer keeps it: shown as a source never bound is, not
        // with the state and Ready condition of a revision before (found by review).
        book.updateResource(key, (x) => {
          const src = x as CredentialSourceStatus;
          src.state = 'PENDING';
          src.message = null;
          src.conditions = [];
        });
        book.events.record(key, 'Normal', 'CredentialUnbound', 'no binding uses it any more', revision);
        continue;
      }
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

/** The keys of the entries a credential status reaches: sources, bindings and WorkloadCredentials. */
function* credentialKeys(book: StatusBook): Generator<string> {
  yield* book.keysOf('CredentialSource');
  yield* book.keysOf('CredentialBinding');
  yield* book.keysOf('WorkloadCredential');
}

function* entriesOf(book: StatusBook, keys: Iterable<string>): Generator<[string, ResourceStatus]> {
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
