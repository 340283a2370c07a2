/** Waiting on conditions instead of sleeping for fixed times: tests stay fast and do not assert on timing. */
import type { CredentialManager } from '../../reconciler/credentials/manager.ts';
import type {
  BindingStatus,
  CredentialSourceSpec,
  SourceStatus,
} from '../../reconciler/credentials/types.ts';

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function sourceStatus(m: CredentialManager, name: string): SourceStatus | undefined {
  return m.status().sources.find((s) => s.name === name);
}

export function bindingStatus(
  m: CredentialManager,
  source: string,
  workloadID: string,
): BindingStatus | undefined {
  return m.status().bindings.find((b) => b.source === source && b.workloadID === workloadID);
}

/** Waits until the source reaches `state` and returns its status. */
export function waitForSource(
  m: CredentialManager,
  name: string,
  state: SourceStatus['state'],
  timeoutMs?: number,
): Promise<SourceStatus> {
  return waitFor(
    `${name} to be ${state} (now ${JSON.stringify(sourceStatus(m, name))})`,
    () => {
      const s = sourceStatus(m, name);
      return s?.state === state ? s : undefined;
    },
    timeoutMs,
  );
}

/**
 * Keeps `spec` fresh for `workloadID` on `m` against a server set to refuse the first attempts: waits for the
 * source to fail, then to become AVAILABLE, and returns the failure's message.
 */
export async function failThenRecover(
  m: CredentialManager,
  spec: CredentialSourceSpec,
  workloadID: string,
): Promise<string> {
  m.ensure(spec, workloadID);
  const failed = await waitForSource(m, spec.name, 'ERROR');
  await waitForSource(m, spec.name, 'AVAILABLE');
  return failed.message ?? '';
}
