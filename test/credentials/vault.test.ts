import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CredentialManager, fetchOnce } from '../../reconciler/credentials/manager.ts';
import type { VaultSourceSpec } from '../../reconciler/credentials/types.ts';
import { type CredEnv, dynamicKey, seedSources, startCredEnv, WORKLOAD } from '../support/cred-env.ts';
import { bindingStatus, failThenRecover, waitFor, waitForSource } from '../support/cred-wait.ts';

let env: CredEnv;
let manager: CredentialManager | undefined;

beforeAll(async () => {
  env = await startCredEnv();
});
afterAll(async () => {
  await env.close();
});
afterEach(async () => {
  await manager?.close();
  manager = undefined;
  env.vault.mode = 'none';
  env.vault.rateLimited = 0;
  if (!env.vault.port) await env.vault.up();
  env.vault.resetCounters();
});

function source(path: string, extra: Partial<VaultSourceSpec['vault']> = {}): VaultSourceSpec {
  const base = seedSources(env).vault;
  return { name: `vault-${path.replace(/\W/g, '-')}`, vault: { ...base.vault, path, ...extra } };
}

function start(): CredentialManager {
  manager = new CredentialManager(env.managerOptions());
  return manager;
}

describe('vault provider', () => {
  it('logs in with the workload JWT-SVID, reads the secret and serves its field (seed 000)', async () => {
    const m = start();
    const spec = seedSources(env).vault;
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const cred = m.get(spec.name, WORKLOAD)!;
    expect(cred.kind).toBe('bearer');
    expect(cred.token).toMatch(/^sk-[0-9a-f]{32}$/);
    expect(env.vault.issuedValues).toContain(cred.token);
    expect(cred.fingerprint).toMatch(/^hmac-sha256:[0-9a-f]{16}$/);
    expect(cred.version).toBe(1);
    // The lease lasts 3600 s and the token as long: expiry about an hour out.
    expect(cred.expiresAt!.getTime() - Date.now()).toBeGreaterThan(3500_000);
    expect(env.vault.count('login')).toBe(1);
    expect(env.vault.count('read')).toBe(1);
  });

  it('renews the lease before it runs out and keeps the same value', async () => {
    env.vaultSecrets['renew/me'] = { leaseDuration: 2, maxTtl: 600, renewable: true, generate: dynamicKey() };
    const m = start();
    const spec = source('renew/me');
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const first = m.get(spec.name, WORKLOAD)!;
    await waitFor('two renewals', () => env.vault.count('renew') >= 2);
    const now = m.get(spec.name, WORKLOAD)!;
    expect(now.fingerprint).toBe(first.fingerprint);
    expect(now.version).toBe(1);
    expect(env.vault.count('login')).toBe(1);
    expect(now.expiresAt!.getTime()).toBeGreaterThan(first.expiresAt!.getTime());
  });

  it('logs in and reads again once renewals stop extending the lease (max TTL), revoking the old lease', async () => {
    env.vaultSecrets.capped = { leaseDuration: 2, maxTtl: 3, renewable: true, generate: dynamicKey() };
    const m = start();
    const spec = source('capped');
    const versions: number[] = [];
    m.on('update', (_s, _w, c) => c && versions.push(c.version));
    m.ensure(spec, WORKLOAD);
    await waitFor('a second value', () => versions.includes(2), 8000);
    expect(env.vault.count('renew')).toBeGreaterThanOrEqual(1);
    expect(env.vault.count('login')).toBeGreaterThanOrEqual(2);
    expect(env.vault.revokedLeases().length).toBeGreaterThanOrEqual(1);
    expect(bindingStatus(m, spec.name, WORKLOAD)?.state).toBe('OK');
  });

  it('reads a KV version 1 secret once for its 768-hour TTL, however far past what a timer holds', async () => {
    // KV v1 answers without a lease, its lease_duration the mount's default TTL: a re-read 32 days out is
    // past setTimeout's 24.8-day limit, which must not turn into a re-read every millisecond.
    env.vaultSecrets['kv/static'] = {
      leaseDuration: 768 * 3600,
      kvV1: true,
      maxTtl: 768 * 3600,
      renewable: false,
      generate: dynamicKey(),
    };
    env.vaultSecrets['renew/alongside'] = {
      leaseDuration: 2,
      maxTtl: 600,
      renewable: true,
      generate: dynamicKey(),
    };
    const m = start();
    const kv = source('kv/static');
    m.ensure(kv, WORKLOAD);
    await waitForSource(m, kv.name, 'AVAILABLE');
    // Another source's two renewals mark the passing of a few seconds of refresh scheduling.
    const other = source('renew/alongside');
    m.ensure(other, WORKLOAD);
    await waitFor('two renewals of the other lease', () => env.vault.count('renew') >= 2, 8000);
    expect(env.vault.count('login')).toBe(2);
    expect(env.vault.count('read')).toBe(2);
    expect(m.get(kv.name, WORKLOAD)!.version).toBe(1);
  });

  it('does not try to renew a lease that is not renewable, and fetches anew before it ends', async () => {
    env.vaultSecrets.fixed = { leaseDuration: 2, maxTtl: 2, renewable: false, generate: dynamicKey() };
    const m = start();
    const spec = source('fixed');
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    await waitFor('a second value', () => (m.get(spec.name, WORKLOAD)?.version ?? 0) >= 2, 8000);
    expect(env.vault.count('renew')).toBe(0);
  });

  it('logs in again before the Vault token expires (its expiry would revoke the lease)', async () => {
    env.vaultRoles['short-token'] = {
      boundAudiences: ['example-audience'],
      tokenTtl: 2,
      tokenPolicies: ['riptides-credentials'],
    };
    env.vaultSecrets['long/lease'] = {
      leaseDuration: 600,
      maxTtl: 600,
      renewable: true,
      generate: dynamicKey(),
    };
    const m = start();
    const spec = source('long/lease', { role: 'short-token' });
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const first = m.get(spec.name, WORKLOAD)!;
    // Bounded by the token, not by the 600 s lease.
    expect(first.expiresAt!.getTime() - Date.now()).toBeLessThanOrEqual(2000);
    await waitFor('a new login', () => env.vault.count('login') >= 2, 8000);
    await waitFor('the new value', () => (m.get(spec.name, WORKLOAD)?.version ?? 0) >= 2);
    expect(env.vault.count('renew')).toBe(0);
  });

  it('reports Vault down at start, retries with backoff, and becomes AVAILABLE when it is back', async () => {
    await env.vault.down();
    const m = start();
    const spec = seedSources(env).vault;
    m.ensure(spec, WORKLOAD);
    const err = await waitForSource(m, spec.name, 'ERROR');
    expect(err.message).toContain(`Vault ${env.vault.url}: login at auth/jwt_production/login`);
    expect(err.message).toContain('connection refused');
    expect(bindingStatus(m, spec.name, WORKLOAD)?.state).toBe('FAILED');
    expect(m.get(spec.name, WORKLOAD)).toBeUndefined();
    await env.vault.up();
    await waitForSource(m, spec.name, 'AVAILABLE');
    expect(m.get(spec.name, WORKLOAD)?.kind).toBe('bearer');
  });

  it('serves the last good value while Vault is down mid-lease, drops it at expiry, recovers after', async () => {
    env.vaultSecrets.mid = { leaseDuration: 2, maxTtl: 600, renewable: true, generate: dynamicKey() };
    const m = start();
    const spec = source('mid');
    const updates: Array<string | undefined> = [];
    m.on('update', (_s, _w, c) => updates.push(c?.fingerprint));
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const held = m.get(spec.name, WORKLOAD)!;
    await env.vault.down();
    const expiring = await waitFor('the expiring phase', () => {
      const b = bindingStatus(m, spec.name, WORKLOAD);
      return b?.phase === 'expiring' ? b : undefined;
    });
    expect(expiring.state).toBe('OK');
    expect(expiring.message).toMatch(
      /^refresh failing, serving the last good credential until .*renewing lease/,
    );
    expect(m.get(spec.name, WORKLOAD)?.fingerprint).toBe(held.fingerprint);
    expect((await waitForSource(m, spec.name, 'ERROR')).message).toContain('connection refused');
    // Retries failing as before answer with the same status object (the status refresh skips on it).
    const failingAsBefore = m.status();
    const expired = await waitFor('the expired phase', () => {
      const b = bindingStatus(m, spec.name, WORKLOAD);
      return b?.phase === 'expired' ? b : undefined;
    });
    expect(expired.state).toBe('FAILED');
    expect(m.status()).not.toBe(failingAsBefore);
    expect(m.get(spec.name, WORKLOAD)).toBeUndefined();
    expect(updates).toEqual([held.fingerprint, undefined]);
    await env.vault.up();
    await waitForSource(m, spec.name, 'AVAILABLE');
    expect(m.get(spec.name, WORKLOAD)?.version).toBe(2);
  });

  it('reports a refused login with Vault’s reason and what to check, and logs in again with a new token', async () => {
    env.vault.jwtsPresented.length = 0;
    const m = start();
    const spec = seedSources(env).vault; // role openai-apikeys is bound to the assistant's SPIFFE ID only
    m.ensure(spec, 'other-team/app/intruder');
    const err = await waitForSource(m, spec.name, 'ERROR');
    expect(err.message).toContain(
      'HTTP 400 (error validating claims: sub claim does not match bound subject)',
    );
    expect(err.message).toContain('bound_subject is spiffe://example.org/other-team/app/intruder');
    await waitFor('a retry', () => env.vault.count('login') >= 2);
    // Vault judged the token: the retry does not present it again.
    expect(new Set(env.vault.jwtsPresented).size).toBe(env.vault.jwtsPresented.length);
  });

  it('presents the same JWT-SVID while a rate limit quota refuses the login, then logs in', async () => {
    env.vault.rateLimited = 3;
    env.vault.jwtsPresented.length = 0;
    const message = await failThenRecover(start(), seedSources(env).vault, WORKLOAD);
    expect(message).toContain('HTTP 429');
    expect(message).toContain('rate limit quota refused the request; retrying with backoff');
    expect(message).not.toContain('bound_subject');
    // Refused three times, then logged in: four presentations of one token, signed once.
    expect(env.vault.jwtsPresented).toHaveLength(4);
    expect(new Set(env.vault.jwtsPresented).size).toBe(1);
  });

  it('reports a sealed Vault (503) as Vault’s own trouble, not the role’s', async () => {
    env.vault.mode = 'unavailable';
    const r = await fetchOnce(seedSources(env).vault, WORKLOAD, env.managerOptions());
    expect(r.message).toContain(
      'failed: HTTP 503 (Vault is sealed); Vault is not serving requests; retrying with backoff',
    );
  });

  it('names the missing field and the fields there are', async () => {
    const m = start();
    const spec = source('openai/creds/riptides-role', { type: { token: { source: 'apikey' } } });
    m.ensure(spec, WORKLOAD);
    const err = await waitForSource(m, spec.name, 'ERROR');
    expect(err.message).toContain('has no non-empty string field "apikey" (fields: api_key, org)');
  });

  it('reads a KV version 2 field named like a property every object has', async () => {
    // KV v2 nests the fields under data.data; the answer's top level has no such field of its own.
    for (const field of ['constructor', 'toString']) {
      env.vaultSecrets[`kv2/${field}`] = {
        leaseDuration: 0,
        maxTtl: 0,
        renewable: false,
        generate: () => ({ data: { [field]: `sk-${field}`, org: 'acme' }, metadata: { version: 1 } }),
      };
      const m = start();
      const spec = source(`kv2/${field}`, { type: { token: { source: field } } });
      m.ensure(spec, WORKLOAD);
      await waitForSource(m, spec.name, 'AVAILABLE');
      expect(m.get(spec.name, WORKLOAD)!.token).toBe(`sk-${field}`);
      await m.close();
    }
  });

  it('times out on a slow Vault and on a hanging one, then recovers', async () => {
    env.vault.mode = 'slow';
    env.vault.delayMs = 4000;
    const m = start();
    const spec = seedSources(env).vault;
    m.ensure(spec, WORKLOAD);
    expect((await waitForSource(m, spec.name, 'ERROR')).message).toMatch(/timed out|no answer within/);
    env.vault.mode = 'hang';
    const before = env.vault.count('login');
    await waitFor('another attempt', () => env.vault.count('login') > before);
    expect(sourceState(m, spec.name)).toBe('ERROR');
    env.vault.mode = 'none';
    await waitForSource(m, spec.name, 'AVAILABLE');
  });

  it('revokes the lease when a binding is released', async () => {
    const m = start();
    const spec = seedSources(env).vault;
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const live = env.vault.liveLeases().length;
    await m.release(spec.name, WORKLOAD);
    expect(env.vault.liveLeases().length).toBe(live - 1);
    expect(m.get(spec.name, WORKLOAD)).toBeUndefined();
    expect(m.status().bindings).toEqual([]);
  });

  it('a new value with a line break is refused without revoking the lease of the value still served', async () => {
    // Not renewable: the session logs in and reads again at two thirds of the lease, and that read is unsafe.
    let reads = 0;
    const good = dynamicKey();
    env.vaultSecrets['split/me'] = {
      leaseDuration: 4,
      maxTtl: 4,
      renewable: false,
      generate: () => (++reads === 1 ? good() : { api_key: 'sk-first\r\nX-Injected: yes', org: 'acme' }),
    };
    const m = start();
    const spec = source('split/me');
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const served = m.get(spec.name, WORKLOAD)!;
    const servedLease = env.vault.liveLeases().find((id) => id.startsWith('split/me/'))!;
    await waitFor(
      'the unsafe value refused',
      () => /line break/.test(bindingStatus(m, spec.name, WORKLOAD)?.message ?? ''),
      8000,
    );
    // Still served, as the manager says ("serving the last good credential"): so its lease must still be live.
    expect(m.get(spec.name, WORKLOAD)?.fingerprint).toBe(served.fingerprint);
    expect(env.vault.revokedLeases()).not.toContain(servedLease);
    // The refused value's lease is the one given back.
    expect(env.vault.revokedLeases().filter((id) => id.startsWith('split/me/'))).toHaveLength(1);
  });

  it('fetchOnce obtains through the same code path and revokes what it obtained', async () => {
    const spec = seedSources(env).vault;
    const live = env.vault.liveLeases().length;
    const r = await fetchOnce(spec, WORKLOAD, env.managerOptions());
    expect(r).toMatchObject({ source: spec.name, workload: WORKLOAD, state: 'AVAILABLE' });
    expect(r.fingerprint).toMatch(/^hmac-sha256:[0-9a-f]{16}$/);
    expect(Date.parse(r.expiresAt!)).toBeGreaterThan(Date.now());
    expect(env.vault.liveLeases().length).toBe(live);
    const bad = await fetchOnce(spec, 'other-team/app/intruder', env.managerOptions());
    expect(bad.state).toBe('ERROR');
    expect(bad.message).toContain('sub claim does not match bound subject');
  });
});

function sourceState(m: CredentialManager, name: string): string | undefined {
  return m.status().sources.find((s) => s.name === name)?.state;
}
