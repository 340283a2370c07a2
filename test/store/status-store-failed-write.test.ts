/**
 * A status write that fails (found by review): the reconciler hands each write the keys StatusBook.takeChanges()
 * names, once. What a failed write carried must reach the store with the next write that succeeds: an entry
 * updated then, and a resource removed then with its events. Before, a failed write cleared what the store knew
 * of the journal, and the next write (told only the keys changed since) stored neither. The failure here is the
 * secret guard refusing a field; a label named like one (`token`) is not such a field any more (last test), so
 * the failing write is made with a binding field named `token`.
 */
import { describe, expect, it } from 'vitest';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import type { ResourceSet } from '../../reconciler/policy/resource-set.ts';
import { StatusSync } from '../../reconciler/status/adapters.ts';
import { StatusBook } from '../../reconciler/status/book.ts';
import type {
  CredentialBindingStatus,
  ServiceStatus,
  SourceStatusView,
} from '../../reconciler/status/model.ts';
import { SecretInStoreError } from '../../reconciler/store/secret-guard.ts';
import { StatusStore } from '../../reconciler/store/status-store.ts';
import { tempDir } from '../support/scratch.ts';
import { appliedSource } from '../support/status-fixture.ts';

const T0 = new Date('2026-03-01T12:00:00Z');
const R1 = '1'.repeat(40);
const R2 = '2'.repeat(40);

const source = (revision: string): SourceStatusView => appliedSource(revision, T0);

function sampleSet(): ResourceSet {
  const tree = loadPolicyDir({ repo: '.', path: 'policies' });
  return renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics).resources;
}

async function started(dir: string) {
  const book = new StatusBook({ now: () => T0 });
  const sync = new StatusSync();
  const set = sampleSet();
  sync.sync(book, set, { trustDomain: 'example.com', revision: R1 });
  book.setSource(source(R1));
  const store = await StatusStore.open(dir);
  // As the reconciler writes: the book's view and its keyed changes (the first write compares everything).
  await store.set(book.view(), book.takeChanges());
  await store.set(book.view(), book.takeChanges());
  const service = [...book.keysOf('Service')][0]!;
  return { book, sync, set, store, service };
}

/** A Service label named like a credential field (`token`): a label, which the store keeps. */
function labelToken(book: StatusBook, key: string, on: boolean) {
  book.updateResource(key, (x) => {
    const s = x as ServiceStatus;
    const labels = { ...s.labels };
    if (on) labels.token = 'none';
    else delete labels.token;
    s.labels = labels;
  });
}

/** A field the secret guard refuses (a value where none may be): every write fails while it is there. */
function refusedField(book: StatusBook, key: string, on: boolean) {
  book.updateResource(key, (x) => {
    const s = x as unknown as Record<string, unknown>;
    if (on) s.token = 'a-value';
    else delete s.token;
  });
}

describe('status store after a failed write', () => {
  it('an update carried by a failed write reaches the store once writes succeed again', async () => {
    const dir = tempDir('review-failed-write-update');
    const { book, store, service } = await started(dir);
    const binding = [...book.keysOf('CredentialBinding')][0]!;

    refusedField(book, service, true);
    book.updateResource(binding, (x) => {
      const b = x as CredentialBindingStatus;
      b.state = 'FAILED';
      b.message = 'Vault login failed: permission denied';
    });
    book.events.record(binding, 'Warning', 'BindingFailed', 'Vault login failed', R1);
    await expect(store.set(book.view(), book.takeChanges())).rejects.toThrow(SecretInStoreError);

    refusedField(book, service, false); // gone again: writes succeed
    await store.set(book.view(), book.takeChanges());
    await store.close();

    const reopened = await StatusStore.open(dir);
    const read = reopened.get()!;
    const snap = book.snapshot();
    const stored = read.resources.find((r) => `${r.kind}/${r.namespace}/${r.name}` === binding) as
      | CredentialBindingStatus
      | undefined;
    expect(stored?.state).toBe('FAILED');
    expect(read.events[binding]).toEqual(snap.events[binding]);
    expect(read.resources).toEqual(snap.resources);
    await reopened.close();
  });

  it('a resource removed while writes fail is removed from the store once they succeed', async () => {
    const dir = tempDir('review-failed-write-removal');
    const { book, sync, set, store, service } = await started(dir);
    const gone = set.bindings[0]!;
    const goneKey = `CredentialBinding/${gone.value.metadata.namespace ?? 'riptides-system'}/${gone.value.metadata.name}`;
    expect(book.entry(goneKey)).toBeDefined();
    book.events.record(goneKey, 'Normal', 'BindingOk', 'OK', R1);
    await store.set(book.view(), book.takeChanges());

    // Commit R2 removes the binding while the label makes writes fail.
    sync.sync(
      book,
      { ...set, bindings: set.bindings.slice(1) },
      { trustDomain: 'example.com', revision: R2 },
    );
    book.setSource(source(R2));
    refusedField(book, service, true);
    expect(book.entry(goneKey)).toBeUndefined();
    await expect(store.set(book.view(), book.takeChanges())).rejects.toThrow(SecretInStoreError);

    refusedField(book, service, false);
    await store.set(book.view(), book.takeChanges());
    await store.close();

    const reopened = await StatusStore.open(dir);
    const read = reopened.get()!;
    const keys = read.resources.map((r) => `${r.kind}/${r.namespace}/${r.name}`);
    expect(keys).not.toContain(goneKey);
    expect(read.events[goneKey]).toBeUndefined();
    await reopened.close();
  });

  it('a Service label named like a credential field (token, secret, password) does not stop status writes', async () => {
    // validate accepts such labels; the status copies spec.labels, and the secret guard refuses the write
    const dir = tempDir('review-label-token');
    const { book, store, service } = await started(dir);
    labelToken(book, service, true);
    await expect(store.set(book.view(), book.takeChanges())).resolves.toBeUndefined();
    await store.close();
  });
});
