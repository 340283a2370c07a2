/**
 * A status book seeded from the sample policies (every kind, the seeds' example included) with credential
 * states, agent-reported counts, two daemons and a source whose last fetched commit does not validate: what
 * the status, API and `ctl` tests read. Deterministic given `now`.
 */

import type { CredentialStatus } from '../../reconciler/credentials/types.ts';
import { validationFailure } from '../../reconciler/errors/classify.ts';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { applyCredentialStatus, statusesFromResources } from '../../reconciler/status/adapters.ts';
import { StatusBook } from '../../reconciler/status/book.ts';
import { markFailed, markReady } from '../../reconciler/status/conditions.ts';
import type { SourceStatusView, WorkloadIdentityStatus } from '../../reconciler/status/model.ts';

export const APPLIED = 'a1'.repeat(20);
export const FETCHED = 'f2'.repeat(20);
/** A message a credential backend could send: escapes and a line break must not reach the terminal raw. */
export const HOSTILE_MESSAGE = 'vault said: \u001b[31mdenied\u001b[0m\n::error::forged';

export function seededBook(now: Date): StatusBook {
  let clock = new Date(now.getTime() - 600_000);
  const book = new StatusBook({ now: () => clock });
  const tree = loadPolicyDir({ repo: '.', path: 'policies' });
  const rendered = renderPolicy(tree.files, { trustDomain: 'example.com' }, tree.diagnostics);
  book.syncResources(
    statusesFromResources(rendered.resources, { trustDomain: 'example.com', revision: APPLIED }),
    APPLIED,
  );
  for (const r of book.resources())
    book.updateResource(`${r.kind}/${r.namespace}/${r.name}`, (x) => {
      x.conditions = markReady(x.conditions, APPLIED, `Applied revision: main@sha1:${APPLIED}`, clock);
    });
  book.updateResource('WorkloadIdentity/riptides-system/support-assistant', (x) => {
    const w = x as WorkloadIdentityStatus;
    w.scheduledNodes = 3;
    w.attestedProcesses = 5;
    w.svidExpiry = new Date(now.getTime() + 42 * 60_000).toISOString();
  });
  clock = new Date(now.getTime() - 120_000);
  applyCredentialStatus(book, seededCredentialStatus(now), APPLIED);
  clock = now;
  book.upsertDaemon({
    name: 'node-a',
    workloadID: 'riptides/daemon/node-a',
    group: 'riptides/daemongroup/dev-eu-west-1/on-demand-workers',
    health: 'ok',
    healthMessage: null,
    appliedVersion: 'c0ffee'.repeat(4),
    desiredVersion: 'c0ffee'.repeat(4),
    lastContact: new Date(now.getTime() - 3000).toISOString(),
    processes: 5,
    conditions: markReady([], APPLIED, 'program c0ffeec0ffeec0ff enforced', clock),
  });
  book.upsertDaemon({
    name: 'node-b',
    workloadID: 'riptides/daemon/node-b',
    group: 'riptides/daemongroup/dev-eu-west-1/on-demand-workers',
    health: 'unreachable',
    healthMessage: 'no stream since 5m',
    appliedVersion: 'beef'.repeat(6),
    desiredVersion: 'c0ffee'.repeat(4),
    lastContact: new Date(now.getTime() - 300_000).toISOString(),
    processes: 0,
    conditions: [],
  });
  const failure = validationFailure(
    [
      {
        code: 'RT020',
        severity: 'error',
        message: 'unknown field "spec.conection"',
        file: 'policies/mtls/30-workload-identities.yaml',
        line: 13,
        column: 3,
      },
      {
        code: 'RT045',
        severity: 'warning',
        message: 'selector matches no Service',
        file: 'policies/mtls/30-workload-identities.yaml',
        line: 30,
        column: 9,
      },
    ],
    FETCHED,
  )!;
  book.setSource({
    name: 'policy',
    url: 'https://git.example.com/org/policies.git',
    branch: 'main',
    path: 'policies',
    lastFetchedRevision: FETCHED,
    lastFetchedAt: new Date(now.getTime() - 30_000).toISOString(),
    lastAppliedRevision: APPLIED,
    lastAppliedAt: new Date(now.getTime() - 600_000).toISOString(),
    conditions: markFailed([], FETCHED, failure, clock),
    diagnostics: [],
    omittedDiagnostics: 0,
  });
  book.setSourceDiagnostics([
    {
      code: 'RT020',
      severity: 'error',
      message: 'unknown field "spec.conection"',
      file: 'policies/mtls/30-workload-identities.yaml',
      line: 13,
      column: 3,
    },
  ]);
  book.events.record('Source/policy', 'Warning', 'ValidationFailed', failure.reason, FETCHED);
  return book;
}

/** The credential manager's states the seeded book was given (one binding OK, one FAILED). */
export function seededCredentialStatus(now: Date): CredentialStatus {
  return {
    sources: [
      { name: 'anthropic-bearer', state: 'AVAILABLE' },
      { name: 'vault-openai-apikeys', state: 'ERROR', message: HOSTILE_MESSAGE },
      { name: 'aws-cred-1', state: 'PENDING' },
    ],
    bindings: [
      {
        source: 'anthropic-bearer',
        workloadID: 'support-assistant/app/assistant-api',
        state: 'OK',
        phase: 'available',
        fingerprint: 'hmac:1a2b3c4d',
        version: 2,
        expiresAt: new Date(now.getTime() + 3_600_000).toISOString(),
      },
      {
        source: 'vault-openai-apikeys',
        workloadID: 'support-assistant/app/assistant-api',
        state: 'FAILED',
        phase: 'error',
        message: 'Vault login failed: permission denied',
      },
    ],
  };
}

/** The source status of a repository whose `revision` was fetched and applied at T0 (`at`). */
export const appliedSource = (revision: string, at: Date): SourceStatusView => ({
  name: 'policy',
  url: '/srv/policy',
  branch: 'main',
  path: 'policies',
  lastFetchedRevision: revision,
  lastFetchedAt: at.toISOString(),
  lastAppliedRevision: revision,
  lastAppliedAt: at.toISOString(),
  conditions: [],
  diagnostics: [],
  omittedDiagnostics: 0,
});
