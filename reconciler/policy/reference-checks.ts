/**
 * Runs the checks across resources (references.ts) and the checks of each resource's own fields
 * (resource-checks.ts) over a ResourceSet, and keeps what it found, so that the next set (the next commit, or
 * the other side of a plan) costs what changed between the two rather than what the repository holds.
 *
 * From one set to the next:
 *  - the resources that came and went are found by object (a parsed file read through the parse cache hands
 *    the same objects to every render): one pointer walk per kind, no lookup per resource that stayed;
 *  - the indexes (claimants of each name, identities by workload ID, sources and workload credentials by
 *    namespace and name, identities by scope) are updated for those only;
 *  - a check of one resource against others records each look it made (RuleContext.find); it runs again when
 *    the resource is new, or when an index entry it looked at now finds something else (a reverse index from
 *    each look to its checks), or when a Service it selected came or went (Service selections are found
 *    through an index of the selectors by label). A check that gave a "did you mean" hint runs every time,
 *    since the hint reads every name;
 *  - the groups whose membership changed (a name's claimants, a workload ID's, a scope's identities) are
 *    checked again as a whole.
 * A set whose resources that stayed come in another order than before (not from git, whose trees are sorted)
 * is checked from scratch, since "first" and "last" claimants depend on the order.
 *
 * The result is what checking the set from scratch finds (test/policy/reference-checks.test.ts compares the two
 * over random edits), in another order: render.ts sorts diagnostics by file, position, code and message.
 */
import type { PendingDiagnostic } from './diagnostics.ts';
import type {
  CredentialBinding,
  CredentialSource,
  Service,
  WorkloadCredential,
  WorkloadIdentity,
} from './kinds/index.ts';
import {
  checkAllowedSpiffeIdsOf,
  checkBinding,
  checkDuplicateNames,
  checkEgressRulesOf,
  checkScopeClaims,
  checkSelectorKeysOf,
  checkSourceNameClash,
  checkStatusBlock,
  checkWorkloadCredential,
  checkWorkloadIdClash,
  type Lookups,
  namesByNamespace,
  type RuleContext,
  type ValidateOptions,
} from './references.ts';
import { Reporter } from './reporter.ts';
import { checkSecret, checkService, checkSource, checkWorkloadId } from './resource-checks.ts';
import {
  Claimants,
  diffResourceSets,
  type Field,
  MultiMap,
  positionsIn,
  resetOnThrow,
  SelectionWatch,
} from './resource-delta.ts';
import { namespaceOf, type ResourceSet, scopeKey } from './resource-set.ts';
import type { Located } from './resources.ts';
import { type ServiceIndex, ServiceIndexMemo } from './service-index.ts';
import { Suggestions } from './suggest.ts';

export type { ValidateOptions } from './references.ts';

/** What most resources' checks find, shared rather than an empty array per resource. */
const NOTHING: readonly PendingDiagnostic[] = [];
const FIELDS: readonly Field[] = [
  'identities',
  'services',
  'sources',
  'bindings',
  'workloadCredentials',
  'secrets',
];

/** What the checks found for one resource, and what its check against others looked at. */
interface ResourceRecord {
  readonly r: Located<unknown>;
  readonly field: Field;
  /** Found by the checks of its own fields (options only): kept while the resource is. */
  own: readonly PendingDiagnostic[];
  /** Identities: spec.workloadID is well-formed (only those are found by workload ID). */
  validId: boolean;
  /** Found by its check against others (identities, bindings, workload credentials). */
  cross: readonly PendingDiagnostic[];
  /**
   * The looks that check made, as pairs (lookup, key); null when it gave a hint (then it runs
   * every time) or has not run.
   */
  deps: unknown[] | null;
}

/**
 * The checks across resources, kept from one ResourceSet to the next (see the module comment). One instance
 * follows one sequence of renders (CompileMemo.checks); a plan's base and head alternate through it, each
 * costing the difference from the other.
 */
export class ReferenceChecks {
  #options: string | null = null;
  #previous: ResourceSet | null = null;
  readonly #records = new Map<object, ResourceRecord>();
  // The indexes.
  readonly #names = new Claimants<Located<unknown>>();
  readonly #sourceNames = new Claimants<Located<CredentialSource>>();
  readonly #workloadIds = new Claimants<Located<WorkloadIdentity>>();
  readonly #scopes = new Claimants<Located<WorkloadIdentity>>();
  readonly #sourcesByNs = new Claimants<Located<CredentialSource>>();
  readonly #credentialsByNs = new Claimants<Located<WorkloadCredential>>();
  readonly #indexes: readonly Pick<Claimants<unknown>, 'clear' | 'reset'>[] = [
    this.#names,
    this.#sourceNames,
    this.#workloadIds,
    this.#scopes,
    this.#sourcesByNs,
    this.#credentialsByNs,
  ];
  /** The first identity with a well-formed ID, per workload ID (what the `identity` lookup finds). */
  readonly #owners = new Map<string, Located<WorkloadIdentity>>();
  /** What the groups (claimants of a name, of a workload ID, a scope) found, by group; empty ones are left out. */
  readonly #groupFound = new Map<string, readonly PendingDiagnostic[]>();
  /** Records with something found (own or cross). */
  readonly #holders = new Set<ResourceRecord>();
  // The reverse index of looks: lookup and key → the records whose check made it.
  readonly #dependents = new MultiMap<string, ResourceRecord>();
  readonly #selections = new SelectionWatch<ResourceRecord>();
  /** Records whose check gave a hint: run every time. */
  readonly #always = new Set<ResourceRecord>();
  #duplicated = false;

  /**
   * What the checks find in `set` under `opts`: the diagnostics of a from-scratch check, in no particular
   * order. `services`: the Service index brought to `set.services` (shared with compile).
   */
  check(set: ResourceSet, opts: ValidateOptions, services: ServiceIndex): PendingDiagnostic[] {
    return resetOnThrow(
      () => this.#check(set, opts, services),
      () => this.#reset(null),
    );
  }

  #check(set: ResourceSet, opts: ValidateOptions, services: ServiceIndex): PendingDiagnostic[] {
    const options = `${opts.trustDomain}\u0000${opts.allowSecrets === true}\u0000${[...(opts.federatesWith ?? [])].sort().join(',')}`;
    if (options !== this.#options) this.#reset(options);
    const known = (r: object) => this.#records.has(r);
    const delta = diffResourceSets(this.#previous, set, FIELDS, known, () => this.#reset(options));
    this.#previous = set;
    const position = positionsIn(set);

    const dirty = new Set<ResourceRecord>(this.#always);
    const changedServices: Record<string, string>[] = [];
    for (const { r } of delta.removed) {
      const rec = this.#records.get(r)!;
      this.#unindex(rec);
      dirty.delete(rec);
      this.#always.delete(rec);
      if (rec.field === 'services') changedServices.push((rec.r as Located<Service>).value.spec.labels);
    }
    for (const { r, field } of delta.added) {
      const rec = this.#index(r, field, opts);
      if (field === 'identities' || field === 'bindings' || field === 'workloadCredentials') dirty.add(rec);
      if (field === 'services') changedServices.push((r as Located<Service>).value.spec.labels);
    }
    // A name's claimants are all of one kind (the key starts with it).
    this.#names.settle((r) => position(this.#records.get(r)!.field)(r));
    this.#sourceNames.settle(position('sources'));
    this.#workloadIds.settle(position('identities'));
    this.#scopes.settle(position('identities'));
    this.#sourcesByNs.settle(position('sources'));
    this.#credentialsByNs.settle(position('workloadCredentials'));

    // Looks that now find something else: the checks that made them run again.
    const prefix = `spiffe://${opts.trustDomain}/`;
    for (const id of this.#workloadIds.touched.keys()) {
      const before = this.#owners.get(id);
      const owner = this.#workloadIds.lists.get(id)?.find((r) => this.#records.get(r)!.validId);
      if (owner) this.#owners.set(id, owner);
      else this.#owners.delete(id);
      if (owner === before) continue;
      this.#mark(dirty, `identity\u0000${id}`);
      if (!owner !== !before) this.#mark(dirty, `spiffeId\u0000${prefix}${id}`);
    }
    for (const [k, before] of this.#sourcesByNs.touched)
      if (before.at(-1) !== this.#sourcesByNs.lists.get(k)?.at(-1)) this.#mark(dirty, `source\u0000${k}`);
    for (const [k, before] of this.#credentialsByNs.touched)
      if (before.at(-1) !== this.#credentialsByNs.lists.get(k)?.at(-1))
        this.#mark(dirty, `workloadCredential\u0000${k}`);
    this.#selections.affected(changedServices, dirty);

    const ctx = this.#context(set, opts, services);
    for (const rec of dirty) this.#runCross(rec, ctx);

    // Groups whose membership changed are checked again as a whole.
    this.#regroup('n', this.#names, (rep, list) => checkDuplicateNames(rep, list));
    this.#regroup('s', this.#sourceNames, (rep, list) => checkSourceNameClash(rep, list));
    this.#regroup('w', this.#workloadIds, (rep, list, id) =>
      checkWorkloadIdClash(rep, list, this.#owners.get(id)),
    );
    this.#regroup('c', this.#scopes, (rep, list) => checkScopeClaims(rep, list));
    for (const c of this.#indexes) c.clear();

    const out: PendingDiagnostic[] = [];
    for (const rec of this.#holders) {
      for (const d of rec.own) out.push(d);
      for (const d of rec.cross) out.push(d);
    }
    for (const found of this.#groupFound.values()) for (const d of found) out.push(d);
    if (this.#duplicated) this.#reset(null);
    return out;
  }

  #reset(options: string | null): void {
    this.#options = options;
    this.#duplicated = false;
    this.#previous = null;
    this.#records.clear();
    for (const c of this.#indexes) c.reset();
    this.#owners.clear();
    this.#groupFound.clear();
    this.#holders.clear();
    this.#dependents.clear();
    this.#selections.clear();
    this.#always.clear();
  }

  /** A new resource: its own checks, and its place in the indexes. */
  #index(r: Located<unknown>, field: Field, opts: ValidateOptions): ResourceRecord {
    const rep = new Reporter();
    const rec: ResourceRecord = { r, field, own: NOTHING, validId: false, cross: NOTHING, deps: null };
    // One object twice in the set (one cached file given twice): nothing of this render can be kept.
    if (this.#records.has(r)) this.#duplicated = true;
    this.#records.set(r, rec);
    const ns = () => namespaceOf(r as Located<{ metadata: { namespace?: string } }>);
    this.#names.add(r.key, r);
    switch (field) {
      case 'identities': {
        const identity = r as Located<WorkloadIdentity>;
        const id = identity.value.spec.workloadID;
        rec.validId = checkWorkloadId(rep, r, ['spec', 'workloadID'], id, opts.trustDomain);
        checkSelectorKeysOf(rep, identity);
        this.#workloadIds.add(id, identity);
        this.#scopes.add(scopeKey(identity.value.spec), identity);
        break;
      }
      case 'services':
        checkService(rep, r as Located<Service>);
        break;
      case 'sources': {
        const source = r as Located<CredentialSource>;
        checkSource(rep, source);
        this.#sourceNames.add(source.value.metadata.name, source);
        this.#sourcesByNs.add(`${ns()}/${source.value.metadata.name}`, source);
        break;
      }
      case 'workloadCredentials': {
        const wc = r as Located<WorkloadCredential>;
        this.#credentialsByNs.add(`${ns()}/${wc.value.metadata.name}`, wc);
        break;
      }
      case 'secrets':
        checkSecret(rep, r as Located<never>, opts.allowSecrets ?? false);
        break;
    }
    if (field !== 'secrets') checkStatusBlock(rep, r as Located<{ status?: unknown }>);
    rec.own = rep.out.length ? rep.out : NOTHING;
    if (rec.own.length) this.#holders.add(rec);
    return rec;
  }

  /** A resource gone: out of the indexes, and what it found with it. */
  #unindex(rec: ResourceRecord): void {
    const r = rec.r;
    this.#records.delete(r);
    this.#holders.delete(rec);
    this.#forgetDeps(rec);
    this.#names.remove(r.key, r);
    const ns = () => namespaceOf(r as Located<{ metadata: { namespace?: string } }>);
    switch (rec.field) {
      case 'identities': {
        const identity = r as Located<WorkloadIdentity>;
        this.#workloadIds.remove(identity.value.spec.workloadID, identity);
        this.#scopes.remove(scopeKey(identity.value.spec), identity);
        break;
      }
      case 'sources': {
        const source = r as Located<CredentialSource>;
        this.#sourceNames.remove(source.value.metadata.name, source);
        this.#sourcesByNs.remove(`${ns()}/${source.value.metadata.name}`, source);
        break;
      }
      case 'workloadCredentials': {
        const wc = r as Located<WorkloadCredential>;
        this.#credentialsByNs.remove(`${ns()}/${wc.value.metadata.name}`, wc);
        break;
      }
    }
  }

  #mark(dirty: Set<ResourceRecord>, look: string): void {
    this.#dependents.forEach(look, (rec) => dirty.add(rec));
  }

  /** Runs a record's check against others, recording its looks in the reverse index. */
  #runCross(rec: ResourceRecord, ctx: RunContext): void {
    this.#forgetDeps(rec);
    const rep = new Reporter();
    const deps: unknown[] = [];
    ctx.rep = rep;
    ctx.recording = deps;
    ctx.hinted = false;
    try {
      switch (rec.field) {
        case 'identities': {
          const identity = rec.r as Located<WorkloadIdentity>;
          checkAllowedSpiffeIdsOf(ctx, identity);
          checkEgressRulesOf(ctx, identity);
          break;
        }
        case 'bindings':
          checkBinding(ctx, rec.r as Located<CredentialBinding>);
          break;
        case 'workloadCredentials':
          checkWorkloadCredential(ctx, rec.r as Located<WorkloadCredential>);
          break;
      }
    } finally {
      ctx.recording = null;
    }
    rec.cross = rep.out.length ? rep.out : NOTHING;
    if (rec.cross.length || rec.own.length) this.#holders.add(rec);
    else this.#holders.delete(rec);
    if (ctx.hinted) {
      this.#always.add(rec);
      return;
    }
    this.#always.delete(rec);
    rec.deps = deps;
    for (let i = 0; i < deps.length; i += 2) {
      const kind = deps[i] as keyof Lookups;
      if (kind === 'select') this.#selections.watch(deps[i + 1] as Record<string, string>, rec);
      else this.#dependents.add(`${kind}\u0000${deps[i + 1] as string}`, rec);
    }
  }

  #forgetDeps(rec: ResourceRecord): void {
    const deps = rec.deps;
    if (!deps) return;
    rec.deps = null;
    for (let i = 0; i < deps.length; i += 2) {
      if (deps[i] === 'select') this.#selections.unwatch(deps[i + 1] as Record<string, string>, rec);
      else {
        this.#dependents.delete(`${deps[i] as string}\u0000${deps[i + 1] as string}`, rec);
      }
    }
  }

  #regroup<T extends Located<unknown>>(
    tag: string,
    claimants: Claimants<T>,
    check: (rep: Reporter, list: readonly T[], key: string) => void,
  ): void {
    for (const key of claimants.touched.keys()) {
      const group = `${tag}\u0000${key}`;
      const list = claimants.lists.get(key);
      const rep = new Reporter();
      if (list) check(rep, list, key);
      if (rep.out.length) this.#groupFound.set(group, rep.out);
      else this.#groupFound.delete(group);
    }
  }

  #context(set: ResourceSet, opts: ValidateOptions, services: ServiceIndex): RunContext {
    const prefix = `spiffe://${opts.trustDomain}/`;
    const lookups: Lookups = {
      identity: (id) => this.#owners.get(id),
      spiffeId: (id) => id.startsWith(prefix) && this.#owners.has(id.slice(prefix.length)),
      source: (k) => this.#sourcesByNs.lists.get(k)?.at(-1),
      workloadCredential: (k) => this.#credentialsByNs.lists.get(k)?.at(-1),
      select: (sel) => services.select(sel),
    };
    // Names in set order (as a from-scratch check lists them), whatever order the indexes were filled in.
    const ownersInOrder = once(() => {
      const ids: string[] = [];
      for (const r of set.identities)
        if (this.#owners.get(r.value.spec.workloadID) === r) ids.push(r.value.spec.workloadID);
      return ids;
    });
    const ctx: RunContext = {
      opts,
      rep: new Reporter(),
      recording: null,
      hinted: false,
      find: (kind, key) => {
        const value = lookups[kind](key as never) as ReturnType<Lookups[typeof kind]>;
        ctx.recording?.push(kind, key);
        return value;
      },
      spiffeIdNames: hinting(() => new Suggestions(ownersInOrder().map((id) => `${prefix}${id}`))),
      workloadIdNames: hinting(() => new Suggestions(ownersInOrder())),
      sourceNames: hinting(() => namesByNamespace(set.sources)),
      workloadCredentialNames: hinting(() => namesByNamespace(set.workloadCredentials)),
    };
    return ctx;

    function hinting<T>(make: () => T): () => T {
      const get = once(make);
      return () => {
        ctx.hinted = true;
        return get();
      };
    }
  }
}

interface RunContext extends RuleContext {
  /** The looks of the check running now go here. */
  recording: unknown[] | null;
  /** Set when the check running now read a "did you mean" index. */
  hinted: boolean;
}

function once<T>(make: () => T): () => T {
  let value: T | undefined;
  let made = false;
  return () => {
    if (!made) {
      value = make();
      made = true;
    }
    return value as T;
  };
}

/**
 * The checks across resources of `set`, from scratch, or through `memo` (kept from the renders before, see
 * ReferenceChecks). Diagnostics are pending (document paths, not yet line:column), in no particular order.
 */
export function checkReferences(
  set: ResourceSet,
  opts: ValidateOptions,
  memo?: { checks: ReferenceChecks; services: ServiceIndexMemo },
): PendingDiagnostic[] {
  const services = (memo?.services ?? new ServiceIndexMemo()).indexFor(set.services);
  return (memo?.checks ?? new ReferenceChecks()).check(set, opts, services);
}
