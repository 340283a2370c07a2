/**
 * The status book and the status store together, as the reconciler writes them (view + takeChanges): what a
 * restart reads back is exactly the book as it was written, while a write serialises only what changed.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { applyCredentialStatus, StatusSync } from '../../reconciler/status/adapters.ts';
import { StatusBook } from '../../reconciler/status/book.ts';
import { markReady } from '../../reconciler/status/conditions.ts';
import type { SourceStatusView } from '../../reconciler/status/model.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { tempDir } from '../support/scratch.ts';
import { appliedSource } from '../support/status-fixture.ts';

const T0 = new Date('2026-03-01T12:00:00Z');
const R1 = '1'.repeat(40);
const R2 = '2'.repeat(40);
const R3 = '3'.repeat(40);
const R0 = '0'.repeat(40);

const source = (revision: string): SourceStatusView => appliedSource(revision, T0);

/** A book of the sample policies, and `commit(revision)`: that revision applied, no file changed (the pass's memo). */
function sampleBook() {
  const tree = loadPolicyDir({ repo: '.', path: 'policies' });
  const rendered = renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics);
  const memo = new StatusSync();
  const book = new StatusBook({ now: () => T0 });
  const commit = (revision: string) => {
    memo.sync(book, rendered.resources, { trustDomain: 'example.com', revision });
    book.setSource(source(revision));
  };
  return { book, commit };
}

describe('status persisted from the book', () => {
  it('a restart reads back the book as written: a new commit, a changed resource, an event', async () => {
    const stateDir = tempDir('status-persist');
    const tree = loadPolicyDir({ repo: '.', path: 'policies' });
    const rendered = renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics);
    const memo = new StatusSync();
    const book = new StatusBook({ now: () => T0 });
    book.setSource(source(R1));
    memo.sync(book, rendered.resources, { trustDomain: 'example.com', revision: R1 });
    // An event about an identity before the first write, and another after: its ring is written again.
    const identity = book.resources('WorkloadIdentity')[0]!;
    const identityKey = `WorkloadIdentity/${identity.namespace}/${identity.name}`;
    book.events.record(identityKey, 'Normal', 'Applied', 'in force', R1);
    // And one about another identity that nothing touches again: history, which keeps its revision.
    const quiet = book.resources('WorkloadIdentity')[1]!;
    const quietKey = `WorkloadIdentity/${quiet.namespace}/${quiet.name}`;
    book.events.record(quietKey, 'Normal', 'Applied', `in force at ${R1}`, R1);
    const store = await StateStore.open({ stateDir });
    await store.status.set(book.view(), book.takeChanges());
    const log = () => statSync(join(stateDir, 'store', 'status.0.log')).size;
    const first = log();

    // Commit R2 changes one Service; every resource now names R2.
    const [service, ...others] = rendered.resources.services;
    const moved = {
      ...service!,
      value: {
        ...service!.value,
        spec: { ...service!.value.spec, addresses: [{ address: '10.9.9.9', port: 443 }] },
      },
    };
    book.setSource(source(R2));
    memo.sync(
      book,
      { ...rendered.resources, services: [moved, ...others] },
      { trustDomain: 'example.com', revision: R2 },
    );
    // A binding fails (through the book), and the identity gets an event.
    const binding = book.resources('CredentialBinding')[0]!;
    const bindingKey = `CredentialBinding/${binding.namespace}/${binding.name}`;
    book.updateResource(bindingKey, (r) => {
      (r as { state: string }).state = 'FAILED';
    });
    book.events.record(identityKey, 'Warning', 'ProgramRejected', 'refused by daemon node-1', R2);
    await store.status.set(book.view(), book.takeChanges());
    // Three entries and the source, not the whole status again.
    expect(log() - first).toBeLessThan(first / 5);
    await store.close();

    const again = await StateStore.open({ stateDir });
    const read = again.status.get()!;
    const written = book.snapshot();
    expect(read.resources).toEqual(written.resources);
    expect(read.events).toEqual(written.events);
    expect(read.events[identityKey]).toHaveLength(2);
    expect(read.events[quietKey]).toMatchObject([{ revision: R1, message: `in force at ${R1}` }]);
    expect(read.source?.lastAppliedRevision).toBe(R2);
    expect(read.resources.every((r) => r.observedRevision === R2)).toBe(true);
    expect(
      read.resources.find((r) => r.name === binding.name && r.kind === 'CredentialBinding'),
    ).toMatchObject({ state: 'FAILED' });
    await again.close();
  });
  it('a commit that changes no resource writes almost nothing, and a restart still reads the book as it is', async () => {
    const stateDir = tempDir('status-rebase');
    const { book, commit } = sampleBook();
    commit(R1);
    // Every resource Ready at R1, as the refresh leaves them; one binding's condition still names an earlier
    // commit (R0), which a new commit must not move by itself.
    for (const [key] of book.entries())
      book.updateResource(key, (r) => {
        r.conditions = markReady(r.conditions, R1, 'in force', T0);
      });
    const binding = book.resources('CredentialBinding')[0]!;
    const bindingKey = `CredentialBinding/${binding.namespace}/${binding.name}`;
    book.updateResource(bindingKey, (r) => {
      r.conditions = markReady([], R0, 'fetched', T0);
    });
    const store = await StateStore.open({ stateDir });
    await store.status.set(book.view(), book.takeChanges());
    const log = () => statSync(join(stateDir, 'store', 'status.0.log')).size;
    const first = log();

    // R2 touches no file: only the meta and the binding whose condition names R0 are written again.
    commit(R2);
    expect([...book.takeChanges()!]).toEqual([bindingKey]);
    await store.status.set(book.view(), new Set([bindingKey]));
    expect(log() - first).toBeLessThan(first / 20);
    for (const r of book.resources())
      if (r.name !== binding.name || r.kind !== 'CredentialBinding')
        expect(r.conditions.map((c) => c.observedRevision)).toEqual([R2]);
    expect(book.resource('CredentialBinding', binding.namespace, binding.name)!.conditions).toMatchObject([
      { observedRevision: R0 },
    ]);

    // R3 the same, written while a refresh has moved one identity's condition but not yet the others'.
    commit(R3);
    const identity = book.resources('WorkloadIdentity')[0]!;
    book.updateResource(`WorkloadIdentity/${identity.namespace}/${identity.name}`, (r) => {
      r.conditions = markReady(r.conditions, R3, 'in force on 2 daemon(s)', T0);
    });
    await store.status.set(book.view(), book.takeChanges());
    await store.close();

    const again = await StateStore.open({ stateDir });
    const read = again.status.get()!;
    expect(read.resources).toEqual(book.snapshot().resources);
    expect(read.resources.every((r) => r.observedRevision === R3)).toBe(true);
    await again.close();
  });
  it('a message that spells the applied commit id is read back as it was, not moved with the revision', async () => {
    const stateDir = tempDir('status-message');
    const { book, commit } = sampleBook();
    commit(R1);
    const src = book.resources('CredentialSource')[0]!;
    // Text a provider chose, which happens to hold the commit id in force.
    const message = `vault: path policies/${R1} denied`;
    applyCredentialStatus(
      book,
      { sources: [{ name: src.name, state: 'ERROR', message }], bindings: [] } as never,
      R1,
    );
    const store = await StateStore.open({ stateDir });
    await store.status.set(book.view(), book.takeChanges());
    commit(R2);
    await store.status.set(book.view(), book.takeChanges());
    await store.close();

    const again = await StateStore.open({ stateDir });
    const read = again.status.get()!;
    expect(read.resources).toEqual(book.snapshot().resources);
    expect(read.resources.find((r) => r.kind === 'CredentialSource' && r.name === src.name)).toMatchObject({
      message,
      observedRevision: R2,
    });
    await again.close();
  });
});
