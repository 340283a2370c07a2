/**
 * The incremental status sync (StatusSync diffing each commit's ResourceSet against the last one,
 * StatusBook.syncChanges, entries following a new revision lazily, the status store writing only the keys the
 * book names, syncIdentities' memo) against a model of what each commit should leave and against the same
 * commits synced whole, through seeded random sequences of commits.
 */
import { describe, expect, it } from 'vitest';
import type { Program } from '../../agent/protocol/program.ts';
import type { DesiredPrograms } from '../../reconciler/agents/programs.ts';
import type { AgentStatus } from '../../reconciler/agents/session.ts';
import { reconcileError } from '../../reconciler/errors/reconcile-error.ts';
import { newIdentityMemo, syncIdentities } from '../../reconciler/loop/live-status.ts';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { namespaceOf, type ResourceSet } from '../../reconciler/policy/resource-set.ts';
import { StatusSync, statusesFromResources } from '../../reconciler/status/adapters.ts';
import { StatusBook } from '../../reconciler/status/book.ts';
import {
  type Condition,
  markFailed,
  markReady,
  markReconciling,
} from '../../reconciler/status/conditions.ts';
import {
  RESOURCE_KINDS,
  type ResourceKind,
  type ResourceStatus,
  resourceKeyOf,
  type SourceStatusView,
} from '../../reconciler/status/model.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { random } from '../support/random.ts';
import { tempDir } from '../support/scratch.ts';
import { appliedSource } from '../support/status-fixture.ts';

const T0 = new Date('2026-03-01T12:00:00Z');
const at = (step: number) => new Date(T0.getTime() + step * 1000);

type Field = 'identities' | 'services' | 'sources' | 'bindings' | 'workloadCredentials';
const FIELDS: readonly Field[] = ['identities', 'services', 'sources', 'bindings', 'workloadCredentials'];
const KIND: Record<Field, ResourceKind> = {
  identities: 'WorkloadIdentity',
  services: 'Service',
  sources: 'CredentialSource',
  bindings: 'CredentialBinding',
  workloadCredentials: 'WorkloadCredential',
};
type Listed = ResourceSet[Field][number];
// biome-ignore lint/suspicious/noExplicitAny: resources are edited generically, field by field
type Loose = any;

const keyOf = (field: Field, r: Listed) =>
  `${KIND[field]}/${namespaceOf(r as never)}/${r.value.metadata.name}`;

function sampleSet(): ResourceSet {
  const tree = loadPolicyDir({ repo: '.', path: 'policies' });
  return renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics).resources;
}

const source = (revision: string): SourceStatusView => appliedSource(revision, T0);

/** The number of CredentialBindings and WorkloadCredentials naming each CredentialSource name. */
function uses(set: ResourceSet): Map<string, number> {
  const out = new Map<string, number>();
  for (const b of [...set.bindings, ...set.workloadCredentials])
    out.set(b.value.spec.credentialSource, (out.get(b.value.spec.credentialSource) ?? 0) + 1);
  return out;
}

/** Every resource of `set` by key: its object and field. */
function byKey(set: ResourceSet): Map<string, { field: Field; r: Listed }> {
  const out = new Map<string, { field: Field; r: Listed }>();
  for (const field of FIELDS)
    for (const r of set[field] as readonly Listed[]) out.set(keyOf(field, r), { field, r });
  return out;
}

interface Commit {
  revision: string;
  set: ResourceSet;
  trustDomain: string;
}

/**
 * The resources both sets hold come in another order in `now`: not git's order, so StatusSync starts over and
 * syncs the commit whole (as it does for another trust domain).
 */
function reordered(before: ResourceSet, now: ResourceSet): boolean {
  return FIELDS.some((field) => {
    const a = before[field] as readonly object[];
    const b = now[field] as readonly object[];
    const inA = new Set(a);
    const inB = new Set(b);
    const common = b.filter((r) => inA.has(r));
    return a.filter((r) => inB.has(r)).some((r, i) => r !== common[i]);
  });
}

/**
 * A policy repository as the parse cache shows it commit after commit: a new ResourceSet per commit, in which
 * the lists and resources a commit did not touch are the same objects as before, and an edited resource is a new
 * object.
 */
class Repo {
  set: ResourceSet;
  trustDomain = 'example.com';
  /** Resources removed by an earlier commit (what a later one may add back). */
  readonly #gone: Array<{ field: Field; r: Listed; step: number }> = [];
  readonly #sourceNames: string[];
  readonly #templates: Array<{ field: 'bindings' | 'workloadCredentials'; r: Listed }>;
  readonly #history: Commit[] = [];
  #n = 0;
  #step = 0;

  constructor(
    base: ResourceSet,
    private readonly rand: () => number,
  ) {
    this.set = base;
    this.#sourceNames = base.sources.map((s) => s.value.metadata.name);
    this.#templates = [
      ...base.bindings.map((r) => ({ field: 'bindings' as const, r })),
      ...base.workloadCredentials.map((r) => ({ field: 'workloadCredentials' as const, r })),
    ];
  }

  #pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rand() * xs.length)]!;
  }

  /** The first commit: the sample policies as they are. */
  first(revision: string): Commit {
    return this.#commit({ revision, set: this.set, trustDomain: this.trustDomain });
  }

  /** A commit at `revision`, or now and then an earlier one applied again. */
  next(revision: string): Commit {
    this.#step++;
    const set: ResourceSet = { ...this.set };
    const roll = this.rand();
    const last = this.#history.at(-1)!.revision;
    if (roll < 0.06 && this.#history.some((c) => c.revision !== last)) {
      // A rollback: an earlier revision applied again (the one before the last half the time), with its
      // resources as the parse cache kept them (the same objects), and its trust domain.
      const recent = this.#history.slice(-8).filter((c) => c.revision !== last);
      const earlier = this.rand() < 0.5 ? recent.at(-1)! : this.#pick(recent);
      this.set = earlier.set;
      this.trustDomain = earlier.trustDomain;
      return this.#commit({ ...earlier });
    }
    if (roll < 0.08) {
      this.trustDomain = this.trustDomain === 'example.com' ? 'example.org' : 'example.com';
    } else if (roll < 0.13) {
      // Two resources that were in the last set swap places: not git's order, so StatusSync starts over.
      const fields = FIELDS.filter((f) => set[f].length >= 2);
      const field = this.#pick(fields);
      const list = [...(set[field] as Listed[])];
      const i = Math.floor(this.rand() * list.length);
      let j = Math.floor(this.rand() * (list.length - 1));
      if (j >= i) j++;
      [list[i], list[j]] = [list[j]!, list[i]!];
      (set as Loose)[field] = list;
    } else if (roll < 0.17) {
      // A commit that touches no resource.
    } else for (let k = 1 + Math.floor(this.rand() * 3); k > 0; k--) this.#edit(set);
    this.set = set;
    return this.#commit({ revision, set, trustDomain: this.trustDomain });
  }

  #commit(c: Commit): Commit {
    this.#history.push(c);
    return c;
  }

  #insert(set: ResourceSet, field: Field, r: Listed): void {
    const list = [...(set[field] as Listed[])];
    list.splice(Math.floor(this.rand() * (list.length + 1)), 0, r);
    (set as Loose)[field] = list;
  }

  #edit(set: ResourceSet): void {
    const what = this.rand();
    const present = byKey(set);
    if (what < 0.25) {
      // Remove a resource of any kind (CredentialSources twice as often).
      const fields = FIELDS.filter((f) => set[f].length > 0);
      const field = this.#pick([...fields, ...fields.filter((f) => f === 'sources')]);
      const list = [...(set[field] as Listed[])];
      const [r] = list.splice(Math.floor(this.rand() * list.length), 1);
      (set as Loose)[field] = list;
      this.#gone.push({ field, r: r!, step: this.#step });
      return;
    }
    if (what < 0.45) {
      // Add back one removed by an earlier commit: the same object (the file as it was), or a copy.
      const candidates = this.#gone.filter((g) => g.step < this.#step && !present.has(keyOf(g.field, g.r)));
      if (candidates.length === 0) return;
      const g = this.#pick(candidates);
      this.#gone.splice(this.#gone.indexOf(g), 1);
      this.#insert(set, g.field, this.rand() < 0.5 ? g.r : ({ ...g.r } as Listed));
      return;
    }
    if (what < 0.65) {
      // A new CredentialBinding or WorkloadCredential naming a source of the sample (present or not).
      const t = this.#pick(this.#templates);
      const name = `copy-${++this.#n}`;
      const v = t.r.value as Loose;
      const copy = {
        ...t.r,
        key: `${KIND[t.field]}/${namespaceOf(t.r as never)}/${name}`,
        value: {
          ...v,
          metadata: { ...v.metadata, name },
          spec: { ...v.spec, credentialSource: this.#pick(this.#sourceNames) },
        },
      };
      this.#insert(set, t.field, copy as Listed);
      return;
    }
    // Edit a resource: a new object with a field changed (Services and bindings most often).
    const field = this.#pick<Field>([
      'services',
      'services',
      'bindings',
      'bindings',
      'workloadCredentials',
      'identities',
      'sources',
    ]);
    const list = [...(set[field] as Listed[])];
    if (list.length === 0) return;
    const i = Math.floor(this.rand() * list.length);
    const r = list[i]! as Loose;
    const n = ++this.#n;
    const spec = (change: Record<string, unknown>) => ({
      ...r,
      value: { ...r.value, spec: { ...r.value.spec, ...change } },
    });
    let edited: Loose;
    const how = this.rand();
    if (how < 0.2) edited = { ...r, file: `policies/moved/${n}.yaml` };
    else if (field === 'services')
      edited =
        how < 0.45
          ? spec({ external: !r.value.spec.external })
          : how < 0.7
            ? spec({ addresses: [{ address: `10.0.${n % 250}.1`, port: 8000 + n, tags: [`t${n}`] }] })
            : spec({ labels: { ...r.value.spec.labels, edit: `e${n}` } });
    else if (field === 'bindings' || field === 'workloadCredentials')
      edited =
        how < 0.6
          ? spec({ credentialSource: this.#pick(this.#sourceNames) })
          : spec({ workloadID: `edited/app/w${n}` });
    else if (field === 'identities') edited = spec({ workloadID: `edited/w${n}` });
    // A source moved within its file: a new object, the same status.
    else edited = { ...r, doc: r.doc + 100 };
    list[i] = edited;
    (set as Loose)[field] = list;
  }
}

/** What the test set on one entry through the book (runtime fields), as the book must keep it. */
interface Runtime {
  fields: Record<string, unknown>;
  /** The conditions set last (null: none set). */
  conditions: Condition[] | null;
  /**
   * The revision they refer to in the incremental book: it moves with the entry's own revision when they all
   * referred to it and the commit did not remake the entry (a merged entry keeps its conditions as they were).
   */
  revision: string | null;
  /** The revision they were set at (what a book that merges every entry at every commit keeps). */
  setAt: string | null;
}

function runtimeFields(kind: ResourceKind, rand: () => number, step: number): Record<string, unknown> {
  switch (kind) {
    case 'CredentialBinding':
    case 'WorkloadCredential':
      return rand() < 0.5
        ? { state: 'FAILED', message: `denied at step ${step}`, fingerprint: null }
        : {
            state: 'OK',
            message: null,
            fingerprint: `hmac:${step}`,
            version: step,
            expiresAt: at(step + 3600).toISOString(),
          };
    case 'CredentialSource':
      return rand() < 0.5 ? { state: 'ERROR', message: `down at step ${step}` } : { state: 'AVAILABLE' };
    case 'WorkloadIdentity':
      return {
        scheduledNodes: 1 + (step % 5),
        attestedProcesses: step % 7,
        svidExpiry: at(step + 600).toISOString(),
      };
    default:
      return {};
  }
}

const sorted = (keys: Iterable<string>) => [...keys].sort();

/** The conditions' revisions set aside (see where it is used). */
const withoutConditionRevisions = (resources: readonly ResourceStatus[]) =>
  resources.map((r) => ({ ...r, conditions: r.conditions.map((c) => ({ ...c, observedRevision: null })) }));

describe('incremental status sync', () => {
  it('leaves the book as a model of each commit and as a whole sync, through four sequences of 150 random commits, and the store reads back what the book holds', async () => {
    const base = sampleSet();
    /** How often the sequences reach what they are meant to test. */
    const kinds = {
      removed: 0,
      readded: 0,
      merged: 0,
      whole: 0,
      rollbacks: 0,
      revived: 0,
      mixed: 0,
      followed: 0,
      sourcesMoved: 0,
    };
    for (const seed of [1, 2, 3, 4]) {
      const rand = random(seed);
      const repo = new Repo(base, rand);
      let clock = T0;
      const book = new StatusBook({ now: () => clock });
      const sync = new StatusSync();
      // Driven by a new StatusSync at each commit: always syncResources with every skeleton.
      const whole = new StatusBook({ now: () => clock });
      expect(book.takeChanges()).toBeNull(); // everything, as after start; counted from here
      const model = new Map<string, Runtime>();
      const withEvents = new Set<string>();
      const revisions: string[] = [];
      let previous: ResourceSet | null = null;
      let previousTrustDomain = '';
      const stateDir = tempDir(`status-sync-${seed}`);
      let store = await StateStore.open({ stateDir });
      /** Keys changed since the last write (null: the first write compares everything). */
      let pending: Set<string> | null = null;
      const write = async () => {
        await store.status.set(book.view(), pending);
        pending = new Set();
      };
      for (let step = 0; step < 150; step++) {
        const where = `seed ${seed}, step ${step}`;
        clock = at(step);
        const was = book.revision;
        /** Keys changed through the book since the last takeChanges. */
        const touched = new Set<string>();
        if (previous) {
          // Runtime fields and events, set the same way on both books.
          const keys = [...byKey(previous).keys()];
          for (let k = Math.floor(rand() * 4); k > 0; k--) {
            const key = keys[Math.floor(rand() * keys.length)]!;
            const kind = key.split('/')[0] as ResourceKind;
            const fields = rand() < 0.8 ? runtimeFields(kind, rand, step) : {};
            const setConditions = rand() < 0.8;
            // Mostly at the revision in force; now and then at one of the last ones (conditions that do not
            // refer to the entry's own revision do not follow a new one, until a rollback to theirs).
            const condAt =
              rand() < 0.2 ? revisions.at(-1 - Math.floor(rand() * Math.min(8, revisions.length)))! : was;
            const mark = rand();
            const message = `set at step ${step}`;
            const set = (c: Condition[]) =>
              mark < 0.6
                ? markReady(c, condAt, message, clock)
                : mark < 0.8
                  ? markReconciling(c, condAt, message, clock)
                  : markFailed(c, condAt, reconcileError('CredentialUnavailable', message), clock);
            for (const b of [book, whole])
              expect(
                b.updateResource(key, (r) => {
                  Object.assign(r, fields);
                  if (setConditions) r.conditions = set(r.conditions);
                }),
              ).toBe(true);
            const m = model.get(key) ?? { fields: {}, conditions: null, revision: null, setAt: null };
            m.fields = { ...m.fields, ...fields };
            if (setConditions) {
              m.conditions = structuredClone(book.entry(key)!.conditions);
              m.revision = condAt;
              m.setAt = condAt;
            }
            model.set(key, m);
            touched.add(key);
          }
          if (rand() < 0.3) {
            const key = keys[Math.floor(rand() * keys.length)]!;
            for (const b of [book, whole]) b.events.record(key, 'Normal', 'Tested', `event at ${step}`, was);
            withEvents.add(key);
            touched.add(key);
          }
        }

        const fresh = `${seed}-${step}-`.padEnd(40, 'f');
        const { set, trustDomain, revision } = step === 0 ? repo.first(fresh) : repo.next(fresh);
        const wholePath = !previous || trustDomain !== previousTrustDomain || reordered(previous, set);
        sync.sync(book, set, { trustDomain, revision });
        book.setSource(source(revision));
        new StatusSync().sync(whole, set, { trustDomain, revision });
        whole.setSource(source(revision));

        // What the commit should have done to each key.
        const before = previous ? byKey(previous) : new Map<string, { field: Field; r: Listed }>();
        const now = byKey(set);
        const usesBefore = previous ? uses(previous) : new Map<string, number>();
        const usesNow = uses(set);
        const removed = [...before.keys()].filter((k) => !now.has(k));
        const made = new Set<string>(); // new entries and entries merged with the one of their key
        const mixed = new Set<string>(); // entries whose conditions do not all refer to their own revision
        for (const [key, m] of model)
          if (before.has(key) && m.conditions?.length && m.revision !== was) mixed.add(key);
        for (const [key, { field, r }] of now) {
          const old = before.get(key);
          if (!old) {
            made.add(key);
            if (step > 0) kinds.readded++;
            continue;
          }
          const name = r.value.metadata.name;
          const remade =
            wholePath ||
            old.r !== r ||
            (field === 'sources' && (usesBefore.get(name) ?? 0) !== (usesNow.get(name) ?? 0));
          if (field === 'sources' && old.r === r && !wholePath && remade) kinds.sourcesMoved++;
          const m = model.get(key);
          if (remade) {
            made.add(key);
            kinds.merged++;
            // Merged: the runtime fields stay, its conditions keep the revision they referred to.
          } else if (m?.conditions && m.revision === was) {
            m.revision = revision; // followed as a whole
            kinds.followed++;
          }
        }
        for (const key of removed) {
          model.delete(key);
          withEvents.delete(key);
          kinds.removed++;
        }
        if (wholePath) kinds.whole++;
        if (revisions.includes(revision)) kinds.rollbacks++;
        kinds.mixed += mixed.size;
        for (const key of mixed) if (model.get(key)?.revision === revision) kinds.revived++;
        revisions.push(revision);

        // Every removal is counted as a change (the store deletes it), with what was made, merged, set, or
        // moved without its conditions; an entry that only followed the new revision is not.
        const changes = book.takeChanges()!;
        expect(sorted(changes), where).toEqual(sorted(new Set([...touched, ...removed, ...made, ...mixed])));
        whole.takeChanges();
        if (pending) for (const key of changes) pending.add(key);

        expect(book.revision, where).toBe(revision);
        for (const kind of RESOURCE_KINDS)
          expect(sorted(book.keysOf(kind)), where).toEqual(
            sorted([...now.keys()].filter((k) => k.startsWith(`${kind}/`))),
          );

        // Read every entry only at some commits: what an entry shows must not depend on whether anything read
        // it in between (entries follow a new revision when read).
        if (rand() < 0.6 || step === 149) {
          const fresh = statusesFromResources(set, { trustDomain, revision });
          expect(sorted(book.resources().map(resourceKeyOf)), where).toEqual(
            sorted(fresh.map(resourceKeyOf)),
          );
          for (const skeleton of fresh) {
            const key = resourceKeyOf(skeleton);
            const m = model.get(key);
            // What git says (the fresh skeleton's), what was set on it, and its conditions at the revision they
            // refer to (the new one, unless the entry was merged or they referred to another one).
            const expected = (conditionsAt: string | null | undefined) =>
              m
                ? {
                    ...skeleton,
                    ...m.fields,
                    conditions: (m.conditions ?? []).map((c) => ({ ...c, observedRevision: conditionsAt })),
                  }
                : skeleton;
            expect(book.entry(key), `${where}: ${key}`).toEqual(expected(m?.revision));
            // The whole sync merges every entry at every commit: conditions never follow a new revision there.
            expect(whole.entry(key), `${where}: ${key}`).toEqual(expected(m?.setAt));
          }
          const mine = book.snapshot();
          const theirs = whole.snapshot();
          // The same book but for the revisions of conditions: an entry the commit did not touch follows the
          // new revision as a whole in the incremental book (its conditions too), while the whole sync merges
          // every entry and so keeps every condition's revision; both are checked against the model above.
          expect(withoutConditionRevisions(mine.resources), where).toEqual(
            withoutConditionRevisions(theirs.resources),
          );
          expect(mine.events, where).toEqual(theirs.events);
          expect(sorted(Object.keys(mine.events)), where).toEqual(sorted(withEvents));
        }

        if (rand() < 0.3) await write();
        if (step % 25 === 24) {
          // A restart reads back exactly the book: resources removed since a write, and their events, gone.
          await write();
          await store.close();
          store = await StateStore.open({ stateDir });
          const read = store.status.get()!;
          const snapshot = book.snapshot();
          expect(read.resources, where).toEqual(snapshot.resources);
          expect(read.events, where).toEqual(snapshot.events);
        }
        previous = set;
        previousTrustDomain = trustDomain;
      }
      await store.close();
    }
    // The sequences reach what they are meant to test.
    expect(kinds.removed).toBeGreaterThan(100);
    expect(kinds.readded).toBeGreaterThan(100);
    expect(kinds.merged).toBeGreaterThan(100);
    expect(kinds.whole).toBeGreaterThan(20);
    expect(kinds.rollbacks).toBeGreaterThan(10);
    expect(kinds.revived).toBeGreaterThan(5);
    expect(kinds.mixed).toBeGreaterThan(20);
    expect(kinds.followed).toBeGreaterThan(100);
    expect(kinds.sourcesMoved).toBeGreaterThan(20);
  }, 120_000);

  it('an entry edited commits after it was last read keeps the conditions a read would have shown', () => {
    // Found by the sequences above: the merged entry took its conditions as they were when last read, so the
    // same commits gave another status depending on whether anything (an API read) had read it in between.
    const base = sampleSet();
    const [service, ...others] = base.services as Loose[];
    const key = keyOf('services', service);
    const run = (readBetween: boolean) => {
      const book = new StatusBook({ now: () => T0 });
      const sync = new StatusSync();
      sync.sync(book, base, { trustDomain: 'example.com', revision: 'r1' });
      book.updateResource(key, (r) => {
        r.conditions = markReady(r.conditions, 'r1', 'in force', T0);
      });
      sync.sync(book, { ...base }, { trustDomain: 'example.com', revision: 'r2' });
      if (readBetween) book.entry(key);
      const edited = {
        ...service,
        value: { ...service.value, spec: { ...service.value.spec, external: true } },
      };
      sync.sync(
        book,
        { ...base, services: [edited, ...others] },
        { trustDomain: 'example.com', revision: 'r3' },
      );
      return book.entry(key)!;
    };
    expect(run(false)).toEqual(run(true));
    expect(run(false)).toMatchObject({
      observedRevision: 'r3',
      external: true,
      conditions: [{ type: 'Ready', message: 'in force', observedRevision: 'r2' }],
    });
  });
});

function agentStatus(daemonId: string, extra: Partial<AgentStatus>): AgentStatus {
  return {
    daemonId,
    spiffeId: `spiffe://example.com/riptides/daemon/${daemonId}`,
    daemonGroup: null,
    scopes: [],
    connected: true,
    peer: '127.0.0.1:1',
    connectedAt: T0.toISOString(),
    lastContact: T0.toISOString(),
    ackedVersion: 'v1',
    desiredVersion: 'v1',
    nack: null,
    report: null,
    counters: { messagesSent: 0, bytesSent: 0, refused: 0, svidsIssued: 0 },
    ...extra,
  };
}

/** Agents and the programs the desired state gives them: a random fleet over `spiffeIds`. */
function fleet(rand: () => number, spiffeIds: readonly string[], step: number) {
  const some = () => spiffeIds.filter(() => rand() < 0.5);
  const programs = new Map<string, Program>();
  for (const scope of ['daemonGroup:g1', 'daemonGroup:g2'])
    programs.set(scope, {
      trustDomain: 'example.com',
      version: `${scope}-v${step}`,
      scopes: [scope],
      identities: new Map(some().map((id) => [id, {} as never])),
      rules: new Map(),
      credentialRefs: new Map(),
    });
  const desired = {
    programFor: (scopes: readonly string[]) => programs.get(scopes[0]!)!,
  } as unknown as DesiredPrograms;
  const agents: AgentStatus[] = [];
  for (let i = Math.floor(rand() * 5); i > 0; i--) {
    const scope = rand() < 0.5 ? 'daemonGroup:g1' : 'daemonGroup:g2';
    const version = programs.get(scope)!.version;
    const roll = rand();
    agents.push(
      agentStatus(`node-${i}`, {
        scopes: [scope],
        connected: rand() < 0.85,
        desiredVersion: version,
        // In sync, lagging, or refusing the program.
        ackedVersion: roll < 0.6 ? version : 'v-old',
        nack:
          roll > 0.85
            ? {
                version,
                kept: 'v-old',
                error: { code: 'LIMIT', message: 'too many identities', hint: '' },
                at: T0.toISOString(),
              }
            : null,
        report: {
          identities: some().map((spiffeId) => ({
            spiffeId,
            processCount: Math.floor(rand() * 3),
            svidNotAfterUnix: rand() < 0.5 ? 0 : 1_800_000_000 + Math.floor(rand() * 3) * 60,
          })),
        } as never,
      }),
    );
  }
  return { agents, programs: rand() < 0.1 ? null : desired };
}

describe('syncIdentities with its memo', () => {
  it('sets what it sets without one, through three sequences of 150 random commits, agent changes and edits through the book', () => {
    const base = sampleSet();
    let skipped = 0;
    for (const seed of [11, 12, 13]) {
      const rand = random(seed);
      const repo = new Repo(base, rand);
      let clock = T0;
      const memoBook = new StatusBook({ now: () => clock });
      const plainBook = new StatusBook({ now: () => clock });
      const memoSync = new StatusSync();
      const plainSync = new StatusSync();
      const memo = newIdentityMemo();
      // Counts the entries the memo's book reads (an identity it skips is not read).
      let reads = 0;
      const read = memoBook.entry.bind(memoBook);
      memoBook.entry = (key: string) => {
        reads++;
        return read(key);
      };
      let world = fleet(rand, [], 0);
      let was: string | null = null;
      const same = (where: string) => {
        expect(memoBook.snapshot().resources, where).toEqual(plainBook.snapshot().resources);
        expect(sorted(memoBook.takeChanges() ?? []), where).toEqual(sorted(plainBook.takeChanges() ?? []));
      };
      for (let step = 0; step < 150; step++) {
        clock = at(step);
        const where = `seed ${seed}, step ${step}`;
        if (step > 0) {
          // An identity's fields or conditions changed through the book (not by syncIdentities): its stamp moves.
          const keys = [...plainBook.keysOf('WorkloadIdentity')];
          for (let k = Math.floor(rand() * 3); k > 0 && keys.length; k--) {
            const key = keys[Math.floor(rand() * keys.length)]!;
            const fields = rand() < 0.5 ? { scheduledNodes: 40 + step, attestedProcesses: step } : {};
            const conditions = rand() < 0.5;
            for (const b of [memoBook, plainBook])
              b.updateResource(key, (r) => {
                Object.assign(r, fields);
                if (conditions) r.conditions = markReady(r.conditions, was, `by hand at ${step}`, clock);
              });
          }
        }
        const fresh = `${seed}-${step}-`.padEnd(40, 'e');
        const { set, trustDomain, revision } = step === 0 ? repo.first(fresh) : repo.next(fresh);
        memoSync.sync(memoBook, set, { trustDomain, revision });
        plainSync.sync(plainBook, set, { trustDomain, revision });
        if (rand() < 0.5) same(`${where}, after the commit`);
        const spiffeIds = statusesFromResources(set, { trustDomain, revision })
          .filter((r) => r.kind === 'WorkloadIdentity')
          .map((r) => (r as { spiffeId: string }).spiffeId);
        for (let round = 1 + Math.floor(rand() * 3); round > 0; round--) {
          // The fleet changes now and then: in between, identities the commits do not touch are as the memo saw them.
          if (rand() < 0.15) world = fleet(rand, [...spiffeIds, 'spiffe://example.com/gone'], step);
          // Now and then a refresh still showing the previous revision (the book has moved on).
          const shown = rand() < 0.1 && was ? was : revision;
          syncIdentities(memoBook, world.agents, world.programs, shown, memo);
          syncIdentities(plainBook, world.agents, world.programs, shown);
          const again = shown === revision && rand() < 0.2;
          if (again || rand() < 0.3) same(`${where}, round ${round}`);
          if (again) {
            // The same refresh again: every identity is as the memo saw it, none is read or changed.
            reads = 0;
            syncIdentities(memoBook, world.agents, world.programs, shown, memo);
            expect(reads, where).toBe(0);
            expect([...memoBook.takeChanges()!], where).toEqual([]);
            skipped++;
          }
        }
        // Not every step: an identity the memo skips is not read, and what it shows must not depend on that.
        if (rand() < 0.3 || step === 149) same(`${where}, end`);
        was = revision;
      }
    }
    expect(skipped).toBeGreaterThan(50);
  });
});
