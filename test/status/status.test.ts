import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { reconcileError } from '../../reconciler/errors/reconcile-error.ts';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { namespaceOf } from '../../reconciler/policy/resource-set.ts';
import {
  applyCredentialStatus,
  StatusSync,
  statusesFromResources,
} from '../../reconciler/status/adapters.ts';
import { StatusBook } from '../../reconciler/status/book.ts';
import {
  findCondition,
  markFailed,
  markReady,
  markReconciling,
  setCondition,
} from '../../reconciler/status/conditions.ts';
import { EventLog } from '../../reconciler/status/events.ts';
import {
  formatDescribe,
  formatDescribeSource,
  formatGet,
  formatSource,
  resolveKind,
  select,
} from '../../reconciler/status/format.ts';
import type { CredentialBindingStatus, CredentialSourceStatus } from '../../reconciler/status/model.ts';
import {
  APPLIED,
  FETCHED,
  HOSTILE_MESSAGE,
  seededBook,
  seededCredentialStatus,
} from '../support/status-fixture.ts';

const T0 = new Date('2026-03-01T12:00:00Z');
const later = (s: number) => new Date(T0.getTime() + s * 1000);

describe('conditions (Flux kstatus rules)', () => {
  it('in progress, ready, transient failure and terminal failure keep a consistent set', () => {
    let c = markReconciling([], 'r1', 'fetching', T0);
    expect(c.map((x) => [x.type, x.status])).toEqual([
      ['Ready', 'Unknown'],
      ['Reconciling', 'True'],
    ]);
    c = markReady(c, 'r1', 'applied r1', later(1));
    expect(c.map((x) => [x.type, x.status, x.reason])).toEqual([['Ready', 'True', 'Succeeded']]);

    const down = reconcileError('SourceUnreachable', 'git.example.com: ECONNREFUSED');
    c = markFailed(c, 'r1', down, later(2));
    expect(c.map((x) => [x.type, x.status, x.reason])).toEqual([
      ['Ready', 'False', 'SourceUnreachable'],
      ['Reconciling', 'True', 'ProgressingWithRetry'],
    ]);

    const invalid = reconcileError('ValidationFailed', 'commit r2 does not validate');
    c = markFailed(c, 'r2', invalid, later(3));
    expect(c.map((x) => [x.type, x.status, x.reason, x.observedRevision])).toEqual([
      ['Ready', 'False', 'ValidationFailed', 'r2'],
      ['Stalled', 'True', 'ValidationFailed', 'r2'],
    ]);
    expect(findCondition(c, 'Stalled')!.message).toContain(invalid.hint);
  });

  it('lastTransitionTime moves only when the status changes', () => {
    let c = markReady([], 'r1', 'a', T0);
    c = markReady(c, 'r2', 'b', later(60));
    expect(findCondition(c, 'Ready')!.lastTransitionTime).toBe(T0.toISOString());
    expect(findCondition(c, 'Ready')!.observedRevision).toBe('r2');
    c = markFailed(c, 'r3', reconcileError('ValidationFailed', 'x'), later(120));
    expect(findCondition(c, 'Ready')!.lastTransitionTime).toBe(later(120).toISOString());
  });

  it('a failure for another reason or message is shown, keeping the transition time; the same one changes nothing', () => {
    const first = markFailed([], 'r1', reconcileError('SourceUnreachable', 'git: ECONNREFUSED'), T0);
    const same = markFailed(first, 'r1', reconcileError('SourceUnreachable', 'git: ECONNREFUSED'), later(5));
    expect(same).toBe(first);
    const other = markFailed(same, 'r1', reconcileError('SourceUnreachable', 'git: ETIMEDOUT'), later(10));
    expect(findCondition(other, 'Ready')!.message).toContain('ETIMEDOUT');
    const reason = markFailed(
      other,
      'r1',
      reconcileError('CredentialUnavailable', 'git: ETIMEDOUT'),
      later(20),
    );
    expect(findCondition(reason, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'CredentialUnavailable',
      lastTransitionTime: T0.toISOString(),
    });
    // Only the reason changes, the message is the same: still shown.
    const ready = findCondition(reason, 'Ready')!;
    const renamed = setCondition(reason, { ...ready, reason: 'SourceUnreachable' }, later(30));
    expect(findCondition(renamed, 'Ready')!.reason).toBe('SourceUnreachable');
  });
  it('markReady gives back the same conditions only when Ready is already exactly that, whatever came before', () => {
    // Every shape one Ready condition can have, against a model of the rule: Reconciling and Stalled removed,
    // Ready set, its transition time kept when its status was already True.
    const shapes = [
      ...['True', 'False', 'Unknown'].flatMap((status) =>
        ['Applied', 'Succeeded'].flatMap((reason) =>
          ['in force on 2 daemon(s)', 'in force on 3 daemon(s)'].flatMap((message) =>
            ['r1', 'r2', null].map((observedRevision) => [
              {
                type: 'Ready' as const,
                status: status as 'True' | 'False' | 'Unknown',
                reason,
                message,
                lastTransitionTime: T0.toISOString(),
                observedRevision,
              },
            ]),
          ),
        ),
      ),
      markReconciling([], 'r2', 'in force on 2 daemon(s)', T0),
      markFailed([], 'r2', reconcileError('ValidationFailed', 'in force on 2 daemon(s)'), T0),
      [],
    ];
    for (const before of shapes) {
      const after = markReady(before, 'r2', 'in force on 2 daemon(s)', later(9), 'Applied');
      const was = before.find((c) => c.type === 'Ready');
      expect(after).toEqual([
        {
          type: 'Ready',
          status: 'True',
          reason: 'Applied',
          message: 'in force on 2 daemon(s)',
          observedRevision: 'r2',
          lastTransitionTime: (was?.status === 'True' ? T0 : later(9)).toISOString(),
        },
      ]);
      const unchanged =
        before.length === 1 &&
        was?.status === 'True' &&
        was.reason === 'Applied' &&
        was.message === 'in force on 2 daemon(s)' &&
        was.observedRevision === 'r2';
      expect(after === before).toBe(unchanged);
    }
  });
});

describe('recent events', () => {
  it('a repeated event bumps its count; the ring and the number of resources are bounded', () => {
    let now = T0;
    const log = new EventLog({ perResource: 3, maxResources: 2, now: () => now });
    for (let i = 0; i < 5; i++) {
      now = later(i);
      log.record('CredentialBinding/ns/b', 'Warning', 'BindingFailed', 'Vault down', 'r1');
    }
    expect(log.of('CredentialBinding/ns/b')).toEqual([
      expect.objectContaining({
        count: 5,
        firstTimestamp: T0.toISOString(),
        lastTimestamp: later(4).toISOString(),
      }),
    ]);
    for (let i = 0; i < 10; i++) log.record('CredentialBinding/ns/b', 'Normal', `R${i}`, 'm', 'r1');
    expect(log.of('CredentialBinding/ns/b').map((e) => e.reason)).toEqual(['R7', 'R8', 'R9']);
    log.record('A/ns/a', 'Normal', 'x', 'm', null);
    log.record('B/ns/b', 'Normal', 'x', 'm', null);
    expect(log.of('CredentialBinding/ns/b')).toEqual([]); // least recently written dropped
    expect(Object.keys(log.toJSON())).toEqual(['A/ns/a', 'B/ns/b']);
  });
});

describe('StatusBook', () => {
  it('a new revision keeps the runtime state of resources that stay and drops those removed', () => {
    const book = seededBook(T0);
    const before = book.resource(
      'CredentialBinding',
      'riptides-system',
      'support-assistant-claude-binding',
    ) as CredentialBindingStatus;
    expect(before).toMatchObject({ state: 'OK', fingerprint: 'hmac:1a2b3c4d', version: 2 });
    const kept = book
      .resources()
      .filter((r) => r.name !== 'anthropic-bearer')
      .map((r) => ({ ...r, observedRevision: 'r-next', conditions: [] }));
    // The skeleton of a new revision has no runtime fields.
    for (const r of kept)
      if (r.kind === 'CredentialBinding') Object.assign(r, { state: undefined, fingerprint: undefined });
    book.syncResources(kept as never, 'r-next');
    const after = book.resource(
      'CredentialBinding',
      'riptides-system',
      'support-assistant-claude-binding',
    ) as CredentialBindingStatus;
    expect(after).toMatchObject({ state: 'OK', fingerprint: 'hmac:1a2b3c4d', observedRevision: 'r-next' });
    expect(after.conditions.length).toBeGreaterThan(0);
    expect(book.resource('CredentialSource', 'riptides-system', 'anthropic-bearer')).toBeUndefined();
    expect(book.events.of('CredentialSource/riptides-system/anthropic-bearer')).toEqual([]);
  });

  it('a new revision that does not touch a binding leaves its state, conditions and events as they were', () => {
    const book = seededBook(T0);
    const key = 'CredentialBinding/riptides-system/support-assistant-claude-binding';
    const events = book.events.of(key).length;
    const tree = loadPolicyDir({ repo: '.', path: 'policies' });
    const rendered = renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics);
    // The pass's own skeleton of the next revision: runtime fields at their defaults (PENDING, no fingerprint).
    book.syncResources(
      statusesFromResources(rendered.resources, { trustDomain: 'example.com', revision: 'r-next' }),
      'r-next',
    );
    const after = book.resource(
      'CredentialBinding',
      'riptides-system',
      'support-assistant-claude-binding',
    ) as CredentialBindingStatus;
    expect(after).toMatchObject({
      state: 'OK',
      fingerprint: 'hmac:1a2b3c4d',
      version: 2,
      observedRevision: 'r-next',
    });
    expect(findCondition(after.conditions, 'Ready')).toMatchObject({ status: 'True' });
    expect(
      (book.resource('CredentialSource', 'riptides-system', 'vault-openai-apikeys') as CredentialSourceStatus)
        .state,
    ).toBe('ERROR');
    expect(book.events.of(key)).toHaveLength(events);

    // The credential manager says the same at the new revision: the conditions now refer to it, and nothing
    // else changes (status, reason, message, transition time), for the OK binding and for the failing one.
    const failing = 'CredentialBinding/riptides-system/support-assistant-openai-binding';
    const failingEvents = book.events.of(failing).length;
    const ready = (name: string) =>
      findCondition(book.resource('CredentialBinding', 'riptides-system', name)!.conditions, 'Ready')!;
    const was = {
      ok: ready('support-assistant-claude-binding'),
      failed: ready('support-assistant-openai-binding'),
    };
    applyCredentialStatus(book, seededCredentialStatus(T0), 'r-next');
    expect(ready('support-assistant-claude-binding')).toEqual({ ...was.ok, observedRevision: 'r-next' });
    expect(ready('support-assistant-openai-binding')).toEqual({ ...was.failed, observedRevision: 'r-next' });
    expect(
      findCondition(
        book.resource('CredentialSource', 'riptides-system', 'vault-openai-apikeys')!.conditions,
        'Ready',
      ),
    ).toMatchObject({ status: 'False', observedRevision: 'r-next' });
    expect(book.events.of(key)).toHaveLength(events);
    expect(book.events.of(failing)).toHaveLength(failingEvents);
  });

  it('resources a commit leaves as they were keep their entry; a changed one gets its new fields', () => {
    const tree = loadPolicyDir({ repo: '.', path: 'policies' });
    const rendered = renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics);
    const memo = new StatusSync();
    const book = new StatusBook({ now: () => T0 });
    memo.sync(book, rendered.resources, { trustDomain: 'example.com', revision: 'r1' });
    const key = (r: { kind: string; namespace: string; name: string }) =>
      `${r.kind}/${r.namespace}/${r.name}`;
    const first = new Map(book.resources().map((r) => [key(r), r]));

    // The next commit changes one Service's addresses: its parse is a new object, the others are reused.
    const [service, ...otherServices] = rendered.resources.services;
    const changed = {
      ...service!,
      value: {
        ...service!.value,
        spec: { ...service!.value.spec, addresses: [{ address: '10.9.9.9', port: 443 }] },
      },
    };
    const next = { ...rendered.resources, services: [changed, ...otherServices] };
    memo.sync(book, next, { trustDomain: 'example.com', revision: 'r2' });

    const all = book.resources();
    expect(all).toHaveLength(first.size);
    for (const r of all) expect(r.observedRevision).toBe('r2');
    const moved = all.find(
      (r) =>
        key(r) ===
        key({ kind: 'Service', namespace: namespaceOf(service!), name: service!.value.metadata.name }),
    );
    expect(moved).toMatchObject({ addresses: ['10.9.9.9:443'] });
    expect(all.filter((r) => r !== first.get(key(r))).map(key)).toEqual([key(moved!)]);
    // And a book that never saw the memo gets the same result, merged (what a restart builds).
    const fresh = new StatusBook({ now: () => T0 });
    fresh.syncResources(statusesFromResources(next, { trustDomain: 'example.com', revision: 'r2' }), 'r2');
    expect(fresh.resources()).toEqual(all);
  });

  it('a new commit with the same credential states: looking only at what the sync made, merged or could not move shows what looking at every entry does', () => {
    const tree = loadPolicyDir({ repo: '.', path: 'policies' });
    const rendered = renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics);
    const status = seededCredentialStatus(T0);
    // Two books fed the same: one looks at every entry after the second commit, the other only at those the
    // sync reports (the reconciler's refresh when only the revision and the resources moved).
    const books = [0, 1].map(() => {
      const memo = new StatusSync();
      const book = new StatusBook({ now: () => T0 });
      memo.sync(book, rendered.resources, { trustDomain: 'example.com', revision: 'r1' });
      applyCredentialStatus(book, status, 'r1');
      // One binding whose conditions no longer all refer to r1 (the sync cannot move it as a whole)…
      book.updateResource('CredentialBinding/riptides-system/support-assistant-claude-binding', (x) => {
        x.conditions = markReconciling(x.conditions, 'r0', 'an older revision', T0);
      });
      // …and a second commit that changes one binding (a new parsed object) and removes a source.
      const [changed, ...bindings] = rendered.resources.bindings;
      const next = {
        ...rendered.resources,
        bindings: [{ ...changed! }, ...bindings],
        sources: rendered.resources.sources.slice(1),
      };
      memo.sync(book, next, { trustDomain: 'example.com', revision: 'r2' });
      return book;
    });
    const [everyEntry, resyncedOnly] = books as [StatusBook, StatusBook];
    expect([...resyncedOnly.resynced()].sort()).toEqual(
      [
        `CredentialBinding/riptides-system/${rendered.resources.bindings[0]!.value.metadata.name}`,
        'CredentialBinding/riptides-system/support-assistant-claude-binding',
      ].sort(),
    );
    applyCredentialStatus(everyEntry, status, 'r2');
    applyCredentialStatus(resyncedOnly, status, 'r2', resyncedOnly.resynced());
    expect(resyncedOnly.snapshot()).toEqual(everyEntry.snapshot());
    // And it did move the one that could not follow: it is at r2 like the others.
    const claude = resyncedOnly.resource(
      'CredentialBinding',
      'riptides-system',
      'support-assistant-claude-binding',
    )!;
    expect(findCondition(claude.conditions, 'Ready')?.observedRevision).toBe('r2');
  });

  it('a resource a commit removes is dropped with its events, also from a book read from a snapshot', () => {
    const tree = loadPolicyDir({ repo: '.', path: 'policies' });
    const rendered = renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics);
    const memo = new StatusSync();
    const book = new StatusBook({ now: () => T0 });
    memo.sync(book, rendered.resources, { trustDomain: 'example.com', revision: 'r1' });
    const [gone, ...stay] = rendered.resources.services;
    const goneKey = `Service/${namespaceOf(gone!)}/${gone!.value.metadata.name}`;
    book.events.record(goneKey, 'Normal', 'Applied', 'in force', 'r1');
    const snapshot = JSON.parse(JSON.stringify(book.snapshot()));
    const next = { ...rendered.resources, services: stay };
    memo.sync(book, next, { trustDomain: 'example.com', revision: 'r2' });
    const count = Object.values(next).reduce((n, list) => n + (list === next.secrets ? 0 : list.length), 0);
    expect(book.resources()).toHaveLength(count);
    expect(book.resource('Service', namespaceOf(gone!), gone!.value.metadata.name)).toBeUndefined();
    expect(book.events.of(goneKey)).toEqual([]);

    // A restarted reconciler's book knows no skeleton: the first commit it applies names what stays.
    const restarted = new StatusBook({ now: () => T0 }, snapshot);
    expect(restarted.resource('Service', namespaceOf(gone!), gone!.value.metadata.name)).toBeDefined();
    restarted.syncResources(
      statusesFromResources(next, { trustDomain: 'example.com', revision: 'r2' }),
      'r2',
    );
    expect(restarted.resources().map((r) => `${r.kind}/${r.namespace}/${r.name}`)).toEqual(
      book.resources().map((r) => `${r.kind}/${r.namespace}/${r.name}`),
    );
    expect(restarted.events.of(goneKey)).toEqual([]);
  });

  it('a snapshot survives JSON and rebuilds the same book', () => {
    const book = seededBook(T0);
    const snap = JSON.parse(JSON.stringify(book.snapshot()));
    expect(new StatusBook({ now: () => T0 }, snap).snapshot()).toEqual(book.snapshot());
  });
});

describe('status from the sample policies and the credential manager', () => {
  it('lists every resource of every kind in policies/', () => {
    const book = seededBook(T0);
    // Count kinds from the YAML text itself, independently of the policy loader.
    const counts: Record<string, number> = {};
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.yaml') && e.name !== 'riptides.config.yaml')
          for (const m of readFileSync(p, 'utf8').matchAll(/^kind: (\w+)$/gm))
            counts[m[1]!] = (counts[m[1]!] ?? 0) + 1;
      }
    };
    walk('policies');
    for (const kind of [
      'WorkloadIdentity',
      'Service',
      'CredentialSource',
      'CredentialBinding',
      'WorkloadCredential',
    ] as const) {
      expect(book.resources(kind).length, kind).toBe(counts[kind]);
      expect(counts[kind]).toBeGreaterThan(0);
    }
  });

  it('credential states become STATE and conditions, with an event when a state changes', () => {
    const book = seededBook(T0);
    const ok = book.resource(
      'CredentialSource',
      'riptides-system',
      'anthropic-bearer',
    ) as CredentialSourceStatus;
    const bad = book.resource(
      'CredentialSource',
      'riptides-system',
      'vault-openai-apikeys',
    ) as CredentialSourceStatus;
    expect(ok.state).toBe('AVAILABLE');
    expect(findCondition(ok.conditions, 'Ready')).toMatchObject({
      status: 'True',
      reason: 'CredentialAvailable',
    });
    expect(bad.state).toBe('ERROR');
    expect(findCondition(bad.conditions, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'CredentialUnavailable',
    });
    expect(book.events.of('CredentialSource/riptides-system/vault-openai-apikeys')).toEqual([
      expect.objectContaining({ type: 'Warning', reason: 'CredentialError', message: HOSTILE_MESSAGE }),
    ]);
    const failed = book.resource(
      'CredentialBinding',
      'riptides-system',
      'support-assistant-openai-binding',
    ) as CredentialBindingStatus;
    expect(failed.state).toBe('FAILED');
    expect(failed.propagation).toBe('injection+sysfs');
  });
});

describe('ctl output formats', () => {
  const book = seededBook(T0);
  const snap = book.snapshot();

  it('resolves the real CLI short names, plurals and the API group', () => {
    expect(
      [
        'wid',
        'svc',
        'credsrc',
        'cb',
        'daemons',
        'workloadidentity.core.riptides.io',
        'CredentialSources',
        'source',
      ].map(resolveKind),
    ).toEqual([
      'WorkloadIdentity',
      'Service',
      'CredentialSource',
      'CredentialBinding',
      'Daemon',
      'WorkloadIdentity',
      'CredentialSource',
      'Source',
    ]);
    expect(resolveKind('widget')).toBeNull();
  });

  it('credsrc shows the seeds STATE words, escaped', () => {
    const out = formatGet('CredentialSource', select(snap, 'CredentialSource'), 'table', T0);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+TYPE\s+STATE\s+MESSAGE$/);
    expect(lines.find((l) => l.startsWith('anthropic-bearer'))).toMatch(
      /^anthropic-bearer\s+kubernetes\s+AVAILABLE\s+-$/,
    );
    expect(lines.find((l) => l.startsWith('vault-openai-apikeys'))).toMatch(
      /^vault-openai-apikeys\s+vault\s+ERROR\s+vault said: \\x1b\[31mdenied\\x1b\[0m\\n::error::forged$/,
    );
    expect(out).not.toMatch(/\u001b/);
    expect(out.split('\n').some((l) => l.startsWith('::'))).toBe(false);
  });

  it('cb, wid, daemons: columns, relative times, -o wide', () => {
    const cb = formatGet(
      'CredentialBinding',
      select(snap, 'CredentialBinding', { name: 'support-assistant-claude-binding' }),
      'table',
      T0,
    );
    expect(cb).toBe(
      'NAME                               WORKLOAD ID                           SOURCE             STATE   EXPIRES\n' +
        'support-assistant-claude-binding   support-assistant/app/assistant-api   anthropic-bearer   OK      in 60m\n',
    );
    const wid = formatGet(
      'WorkloadIdentity',
      select(snap, 'WorkloadIdentity', { name: 'support-assistant' }),
      'wide',
      T0,
    );
    expect(wid.split('\n')[0]).toMatch(
      /^NAME\s+WORKLOAD ID\s+SCOPE\s+NODES\s+PROCESSES\s+SVID EXPIRY\s+READY\s+SPIFFE ID\s+REVISION\s+MESSAGE$/,
    );
    expect(wid.split('\n')[1]).toMatch(
      /\s3\s+5\s+in 42m\s+True\s+spiffe:\/\/example\.com\/support-assistant\/app\/assistant-api\s+a1a1a1a1a1a1\s/,
    );
    const daemons = formatGet('Daemon', select(snap, 'Daemon'), 'table', T0).split('\n');
    expect(daemons[1]).toMatch(/^node-a\s+riptides\/daemon\/node-a\s+\S+\s+ok\s+c0ffeec0ffeec0ff\s+3s ago$/);
    expect(daemons[2]).toMatch(/^node-b\s+.*\s+unreachable\s+beefbeefbeefbeef\s+5m ago$/);
  });

  it('-o name and -o json', () => {
    expect(formatGet('Service', select(snap, 'Service', { name: 'openai-svc' }), 'name', T0)).toBe(
      'service.core.riptides.io/openai-svc\n',
    );
    const one = JSON.parse(
      formatGet(
        'CredentialBinding',
        select(snap, 'CredentialBinding', { name: 'support-assistant-claude-binding' }),
        'json',
        T0,
      ),
    );
    expect(one).toMatchObject({
      kind: 'CredentialBinding',
      apiVersion: 'core.riptides.io/v1alpha1',
      state: 'OK',
      fingerprint: 'hmac:1a2b3c4d',
    });
    const list = JSON.parse(formatGet('Daemon', select(snap, 'Daemon'), 'json', T0));
    expect(list.kind).toBe('DaemonList');
    expect(list.items.map((d: { name: string }) => d.name)).toEqual(['node-a', 'node-b']);
  });

  it('source: fetched and applied revisions, Ready, and the diagnostics of the commit that does not validate', () => {
    const out = formatSource(snap.source, 'table', T0);
    const [header, row] = out.split('\n');
    expect(header).toMatch(/^NAME\s+BRANCH\s+FETCHED\s+APPLIED\s+READY\s+MESSAGE$/);
    expect(row).toMatch(
      /^policy\s+main\s+f2f2f2f2f2f2 \(30s ago\)\s+a1a1a1a1a1a1 \(10m ago\)\s+False\s+commit f2f2f2f2f2f2 does not validate/,
    );
    expect(out).toContain('Diagnostics of f2f2f2f2f2f2 (not applied; a1a1a1a1a1a1 stays in force):\n');
    // Before any revision was applied, the note says so (it said "- stays in force").
    const first = formatSource(
      { ...snap.source!, lastAppliedRevision: null, lastAppliedAt: null },
      'table',
      T0,
    );
    expect(first).toContain('Diagnostics of f2f2f2f2f2f2 (not applied; no revision was applied yet):\n');
    expect(out).toContain(
      '  policies/mtls/30-workload-identities.yaml:13:3: error RT020: unknown field "spec.conection"\n',
    );
    const json = JSON.parse(formatSource(snap.source, 'json', T0));
    expect(json).toMatchObject({ lastFetchedRevision: FETCHED, lastAppliedRevision: APPLIED });
  });

  it('describe shows fields, conditions and recent events', () => {
    const row = select(snap, 'CredentialSource', { name: 'vault-openai-apikeys' })[0]!;
    const out = formatDescribe(
      'CredentialSource',
      row,
      snap.events['CredentialSource/riptides-system/vault-openai-apikeys']!,
      T0,
    );
    expect(out).toMatch(
      /^Name: {2,}vault-openai-apikeys\nKind: {2,}CredentialSource\nNamespace: {2,}riptides-system\n/,
    );
    expect(out).toMatch(
      /\nConditions:\n {2}Type\s+Status\s+Reason\s+Last Transition\s+Revision\s+Message\n {2}Ready\s+False\s+CredentialUnavailable\s+2m ago\s+a1a1a1a1a1a1\s/,
    );
    expect(out).toMatch(
      /\nEvents:\n {2}Type\s+Reason\s+Age\s+Revision\s+Message\n {2}Warning\s+CredentialError\s+2m ago\s/,
    );
    expect(out).not.toMatch(/\u001b/);
    const daemon = formatDescribe('Daemon', select(snap, 'Daemon', { name: 'node-b' })[0]!, [], T0);
    expect(daemon).toContain('Events:  <none>\n');
    expect(daemon).toMatch(/Health: +unreachable \(no stream since 5m\)/);
    const src = formatDescribeSource(snap.source!, snap.events['Source/policy']!, T0);
    expect(src).toMatch(/Stalled\s+True\s+ValidationFailed/);
    expect(src).toContain('Diagnostics:\n  policies/mtls/30-workload-identities.yaml:13:3: error RT020');
  });
});

describe('Service tags', () => {
  it("are the Service's and its addresses', each once (the quickstart tags its addresses)", () => {
    const tree = loadPolicyDir({ repo: '.', path: 'policies/quickstart' });
    const rendered = renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics);
    const services = statusesFromResources(rendered.resources, {
      trustDomain: 'example.com',
      revision: APPLIED,
    })
      .filter((r) => r.kind === 'Service')
      .map((r) => [r.name, (r as { tags: string[] }).tags]);
    expect(Object.fromEntries(services)).toEqual({
      'quickstart-orders-api': ['orders'],
      'quickstart-echo': ['echo'],
    });
  });
});
