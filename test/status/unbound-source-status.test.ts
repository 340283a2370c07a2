/**
 * Found by review (with `up`): a CredentialSource whose last binding is removed kept the state and the Ready
 * condition it had while bound, its condition at the revision before, for good. Why: the credential manager
 * derives source states from the pairs it holds, so it no longer reports the source and applyCredentialStatus
 * skipped it. `ctl get credsrc` kept saying AVAILABLE (or ERROR) while riptides_credential_sources counted
 * it nowhere. It is now shown as a source never bound is: PENDING, no condition.
 */
import { describe, expect, it } from 'vitest';
import type { CredentialStatus } from '../../reconciler/credentials/types.ts';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import type { ResourceSet } from '../../reconciler/policy/resource-set.ts';
import { applyCredentialStatus, StatusSync } from '../../reconciler/status/adapters.ts';
import { StatusBook } from '../../reconciler/status/book.ts';
import type { CredentialSourceStatus } from '../../reconciler/status/model.ts';

const T0 = new Date('2026-03-01T12:00:00Z');
const R1 = '1'.repeat(40);
const R2 = '2'.repeat(40);
const R3 = '3'.repeat(40);

function sampleSet(): ResourceSet {
  const tree = loadPolicyDir({ repo: '.', path: 'policies' });
  return renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics).resources;
}

/** What the manager reports for `set`: every binding OK, every bound source AVAILABLE. */
function managerStatus(set: ResourceSet): CredentialStatus {
  const all = [...set.bindings, ...set.workloadCredentials];
  return {
    sources: [...new Set(all.map((b) => b.value.spec.credentialSource))].map((name) => ({
      name,
      state: 'AVAILABLE' as const,
    })),
    bindings: all.map((b) => ({
      source: b.value.spec.credentialSource,
      workloadID: b.value.spec.workloadID,
      state: 'OK' as const,
      phase: 'available' as const,
      fingerprint: 'hmac-sha256:0011223344556677',
      version: 1,
    })),
  } as CredentialStatus;
}

describe('a CredentialSource that loses its last binding', () => {
  it('does not keep showing AVAILABLE with a Ready condition of an older revision', () => {
    const book = new StatusBook({ now: () => T0 });
    const sync = new StatusSync();
    const set = sampleSet();
    const src = set.sources.find((s) =>
      [...set.bindings, ...set.workloadCredentials].some(
        (b) => b.value.spec.credentialSource === s.value.metadata.name,
      ),
    )!;
    const name = src.value.metadata.name;
    const key = `CredentialSource/${src.value.metadata.namespace ?? 'riptides-system'}/${name}`;

    sync.sync(book, set, { trustDomain: 'example.com', revision: R1 });
    applyCredentialStatus(book, managerStatus(set), R1);
    expect((book.entry(key) as CredentialSourceStatus).state).toBe('AVAILABLE');

    // R2 removes every binding and WorkloadCredential naming the source; the manager releases their pairs.
    const unbound: ResourceSet = {
      ...set,
      bindings: set.bindings.filter((b) => b.value.spec.credentialSource !== name),
      workloadCredentials: set.workloadCredentials.filter((b) => b.value.spec.credentialSource !== name),
    };
    sync.sync(book, unbound, { trustDomain: 'example.com', revision: R2 });
    applyCredentialStatus(book, managerStatus(unbound), R2);
    // another commit that does not touch it
    sync.sync(
      book,
      { ...unbound, services: unbound.services.slice(1) },
      { trustDomain: 'example.com', revision: R3 },
    );
    applyCredentialStatus(book, managerStatus(unbound), R3, book.resynced());

    const entry = book.entry(key) as CredentialSourceStatus;
    expect(entry.bindings).toBe(0);
    expect(entry.observedRevision).toBe(R3);
    for (const c of entry.conditions) expect(c.observedRevision, `${c.type} condition`).toBe(R3);
    expect(entry.state).toBe('PENDING');
    expect(entry.conditions).toEqual([]);
    expect(book.events.of(key).at(-1)).toMatchObject({ reason: 'CredentialUnbound' });
  });
});
