/**
 * The Vault lease ledger over the store (reconciler/loop/lease-ledger.ts): a lease given back while its record
 * is still being written leaves no record behind, so the next run has no already-revoked orphan to chase.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { StoreLeaseLedger } from '../../reconciler/loop/lease-ledger.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { createLogger } from '../../reconciler/telemetry/logger.ts';
import { scratch } from '../support/scratch.ts';

const dirs: Array<{ cleanup: () => void }> = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d.cleanup();
});

const lease = (id: string) => ({
  id,
  source: 'vault-openai',
  workloadID: 'riptides/assistant',
  obtainedAt: Date.now(),
  expiresAt: Date.now() + 3_600_000,
  renewable: true,
  fingerprint: 'hmac-sha256:0123456789abcdef',
});

describe('StoreLeaseLedger', () => {
  it('a lease gone right after it is held (its put not yet durable) leaves no record; one still held stays', async () => {
    const tmp = scratch('lease-ledger');
    dirs.push(tmp);
    const store = await StateStore.open({ stateDir: tmp.dir });
    const ledger = await StoreLeaseLedger.open(store, createLogger({ level: 'silent' }));
    ledger.held(lease('auth/jwt/login/gone'));
    ledger.gone('auth/jwt/login/gone');
    ledger.held(lease('auth/jwt/login/kept'));
    await store.close();

    const reopened = await StateStore.open({ stateDir: tmp.dir });
    try {
      expect([...reopened.leases.entries()].map(([id]) => id)).toEqual(['auth/jwt/login/kept']);
      const next = await StoreLeaseLedger.open(reopened, createLogger({ level: 'silent' }));
      expect(next.orphans('vault-openai', 'riptides/assistant')).toEqual(['auth/jwt/login/kept']);
    } finally {
      await reopened.close();
    }
  });
});
