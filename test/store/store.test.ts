import { spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeCredential } from '../../reconciler/credentials/types.ts';
import { Journal } from '../../reconciler/store/journal.ts';
import { StateDirLockedError } from '../../reconciler/store/lock.ts';
import {
  assertNoSecretFields,
  SecretInStoreError,
  stringifyWithoutSecrets,
} from '../../reconciler/store/secret-guard.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { holdLock } from '../support/hold-lock.ts';
import { tempDir } from '../support/scratch.ts';

describe('journal', () => {
  it('keeps puts and deletes across reopen, and compacts into a snapshot without losing any', async () => {
    const dir = tempDir('journal');
    const j = await Journal.open<{ n: number }>(dir, 'serials', { compactSlack: 10 });
    await Promise.all(Array.from({ length: 100 }, (_, i) => j.put(`k${i}`, { n: i })));
    for (let i = 0; i < 100; i += 2) await j.delete(`k${i}`);
    await j.put('k1', { n: 1001 });
    await j.close();
    // Compaction ran (the log would hold 151 records otherwise) and left one generation behind.
    const files = readdirSync(dir).sort();
    expect(files.filter((f) => f.endsWith('.log'))).toHaveLength(1);
    expect(files).toContain('serials.snap');
    const again = await Journal.open<{ n: number }>(dir, 'serials');
    expect(again.size).toBe(50);
    expect(again.get('k1')).toEqual({ n: 1001 });
    expect(again.get('k2')).toBeUndefined();
    expect(again.get('k99')).toEqual({ n: 99 });
    await again.close();
  });

  it('drops a torn last record (power cut mid-append) and keeps later appends readable', async () => {
    const dir = tempDir('journal-torn');
    const j = await Journal.open<{ n: number }>(dir, 'leases');
    await j.put('a', { n: 1 });
    await j.put('b', { n: 2 });
    await j.close();
    const log = join(dir, 'leases.0.log');
    const whole = readFileSync(log, 'utf8');
    appendFileSync(log, whole.split('\n')[1]!.slice(0, 20)); // half of a record, no newline
    const reopened = await Journal.open<{ n: number }>(dir, 'leases');
    expect([...reopened.entries()]).toEqual([
      ['a', { n: 1 }],
      ['b', { n: 2 }],
    ]);
    expect(readFileSync(log, 'utf8')).toBe(whole); // truncated back to the last whole record
    await reopened.put('c', { n: 3 });
    await reopened.close();
    const third = await Journal.open<{ n: number }>(dir, 'leases');
    expect(third.get('c')).toEqual({ n: 3 });
    await third.close();
  });

  it('a record whose checksum does not match ends the replay there', async () => {
    const dir = tempDir('journal-crc');
    const j = await Journal.open<{ n: number }>(dir, 'drift');
    await j.put('a', { n: 1 });
    await j.put('b', { n: 2 });
    await j.close();
    const log = join(dir, 'drift.0.log');
    writeFileSync(log, readFileSync(log, 'utf8').replace('"n":2', '"n":3'));
    const reopened = await Journal.open<{ n: number }>(dir, 'drift');
    expect(reopened.get('a')).toEqual({ n: 1 });
    expect(reopened.get('b')).toBeUndefined();
    await reopened.close();
  });
  it('keeping references, a compaction writes what was written and checked, never what the objects became after', async () => {
    const dir = tempDir('journal-refs');
    const j = await Journal.open<Record<string, unknown>>(dir, 'status', {
      compactSlack: 0,
      keepReferences: true,
    });
    const live: Record<string, unknown> = { a: 1 };
    await j.put('k', live);
    live.a = 2;
    live.token = 'S3CRET-VALUE';
    // Rewrites of another key grow the log past twice the live entries: a compaction.
    for (let i = 0; i < 20; i++) await j.put('other', { i });
    await j.close();
    const files = readdirSync(dir);
    expect(files).toContain('status.snap');
    const bytes = files.map((f) => readFileSync(join(dir, f), 'utf8')).join('');
    expect(bytes).not.toContain('S3CRET-VALUE');
    const again = await Journal.open<Record<string, unknown>>(dir, 'status');
    expect(again.get('k')).toEqual({ a: 1 });
    await again.close();
  });
});

describe('state store', () => {
  it('creates the store 0700 with files 0600, and reopens to what was written', async () => {
    const stateDir = tempDir('store');
    const store = await StateStore.open({ stateDir });
    await store.applied.set({
      revision: 'a'.repeat(40),
      appliedAt: '2026-03-01T00:00:00.000Z',
      programVersions: { 'daemonGroup:g': 'v1' },
    });
    await store.leases.put('openai/creds/role/abc', {
      source: 'vault-openai-apikeys',
      workloadID: 'support-assistant/app/assistant-api',
      obtainedAt: '2026-03-01T00:00:00.000Z',
      expiresAt: '2026-03-01T01:00:00.000Z',
      renewable: true,
      fingerprint: 'hmac:00112233',
    });
    await store.close();
    expect(statSync(join(stateDir, 'store')).mode & 0o777).toBe(0o700);
    for (const f of readdirSync(join(stateDir, 'store')))
      expect(statSync(join(stateDir, 'store', f)).mode & 0o777, f).toBe(0o600);
    const again = await StateStore.open({ stateDir });
    expect(again.applied.get()?.programVersions).toEqual({ 'daemonGroup:g': 'v1' });
    // A read after a write sees that write, detached from the object written.
    const next = {
      revision: 'b'.repeat(40),
      appliedAt: '2026-03-02T00:00:00.000Z',
      programVersions: { g: 'v2' },
    };
    await again.applied.set(next);
    next.programVersions.g = 'changed after the write';
    expect(again.applied.get()).toEqual({ ...next, programVersions: { g: 'v2' } });
    expect(again.leases.get('openai/creds/role/abc')?.renewable).toBe(true);
    await again.close();
  });

  it('refuses a secret-named field in any spelling and at any depth, but not a value that imitates one', () => {
    const refused = (v: unknown) => {
      try {
        stringifyWithoutSecrets(v);
        return null;
      } catch (err) {
        return err instanceof SecretInStoreError ? err.message : `other: ${String(err)}`;
      }
    };
    expect(refused({ a: [{ b: { 'Access-Token': 'x' } }] })).toMatch(
      /record\.a\[0\]\.b\.Access-Token looks like/,
    );
    expect(refused({ client_secret: 0 })).toMatch(/record\.client_secret/);
    expect(refused({ privateKey: { kty: 'EC' } })).toMatch(/record\.privateKey/);
    expect(refused({ list: [{ PASSWORD: false }] })).toMatch(/record\.list\[0\]\.PASSWORD/);
    // The Kelvin sign lower-cases to k: "TO\u212AEN" is a token field.
    expect(refused({ 'TO\u212AEN': 'x' })).toMatch(/looks like a credential value/);
    // Empty and null values hold nothing; other names merely start or end like one; a string can hold any text.
    expect(refused({ token: null, password: '', tokens: 'x', tokenizer: 'y', secretRef: 'z' })).toBeNull();
    expect(refused({ message: '{"token":"abc"},"password":"p"', m2: ',"secret":1' })).toBeNull();
    expect(JSON.parse(stringifyWithoutSecrets({ a: [1, { b: 'c' }] }) as string)).toEqual({
      a: [1, { b: 'c' }],
    });
  });

  it("reads a Service status's labels as the author's words, and nothing else so", () => {
    const walk = (v: unknown) => {
      try {
        assertNoSecretFields(v);
        return null;
      } catch (err) {
        return err instanceof SecretInStoreError ? err.message : `other: ${String(err)}`;
      }
    };
    // A Service's labels may be called anything (`token: none` names no credential).
    expect(walk({ v: { kind: 'Service', name: 's', labels: { token: 'none', Password: 'x' } } })).toBeNull();
    // The same key anywhere else, or a label map holding more than strings, is read as fields.
    expect(walk({ lease: { labels: { token: 'hvs.x' } } })).toMatch(/record\.lease\.labels\.token/);
    expect(walk({ kind: 'Service', labels: { a: { token: 'x' } } })).toMatch(/labels\.a\.token/);
    expect(walk({ kind: 'CredentialSource', labels: { secret: 'x' } })).toMatch(/labels\.secret/);
    // The text scan is never turned off by a label map: what the walk cannot see (toJSON, past 32 levels) is refused.
    const services = [{ kind: 'Service', labels: { app: 'web' } }];
    expect(() =>
      stringifyWithoutSecrets({ services, lease: { toJSON: () => ({ token: 'hvs.real' }) } }),
    ).toThrow(SecretInStoreError);
    let deep: Record<string, unknown> = { token: 'real-secret-value' };
    for (let i = 0; i < 34; i++) deep = { n: deep };
    expect(() => stringifyWithoutSecrets({ services, deep })).toThrow(SecretInStoreError);
  });

  it('never stores a credential value: a field named like one is refused, a Credential object leaves only metadata', async () => {
    const store = await StateStore.open({ stateDir: tempDir('store-secret') });
    try {
      await expect(
        store.leases.put('x', {
          source: 's',
          workloadID: 'w',
          obtainedAt: '',
          expiresAt: '',
          renewable: false,
          token: 'hvs.SECRET',
        } as never),
      ).rejects.toThrow(SecretInStoreError);
      await expect(
        store.status.set({
          format: 1,
          generatedAt: '',
          source: null,
          daemons: [],
          events: {},
          resources: [{ aws: { secretAccessKey: 'AKIA/secret' } }],
        } as never),
      ).rejects.toThrow(/secretAccessKey looks like a credential value/);
      const cred = makeCredential(
        { kind: 'bearer', token: 'sk-live-abcdef123456' },
        { version: 1, obtainedAt: new Date(0), fingerprint: 'hmac-sha256:0123456789abcdef' },
      );
      await store.drift.put('r1', {
        at: '',
        revision: null,
        drifted: false,
        counts: {},
        files: [],
        cred,
      } as never);
    } finally {
      await store.close();
    }
    const bytes = readdirSync(join(store.dir))
      .map((f) => readFileSync(join(store.dir, f), 'utf8'))
      .join('');
    expect(bytes).not.toContain('sk-live-abcdef123456');
    expect(bytes).not.toContain('hvs.SECRET');
    expect(bytes).toContain(`"fingerprint"`);
  });

  it('one reconciler per state directory: a live holder is refused, a dead one taken over', async () => {
    const stateDir = tempDir('store-lock');
    const first = await StateStore.open({ stateDir });
    await expect(StateStore.open({ stateDir })).rejects.toThrow(StateDirLockedError);
    await first.close();

    // A lock held by another live process, then left by it killed with SIGKILL.
    const live = await holdLock(join(stateDir, 'store', 'LOCK'));
    try {
      await expect(StateStore.open({ stateDir })).rejects.toThrow(new RegExp(`pid ${live.pid}\\b`));
    } finally {
      live.kill('SIGKILL');
    }
    await new Promise((r) => live.once('exit', r));
    const second = await StateStore.open({ stateDir });
    await second.close();
  });

  it('an upgrade while an earlier version runs: neither takes a state directory the other holds', async () => {
    // Earlier versions took no flock: LOCK held {"pid","start"} and a start was refused while that process lived.
    const stateDir = tempDir('store-lock-upgrade');
    const lockPath = join(stateDir, 'store', 'LOCK');
    const startOf = (pid: number) => {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    };
    const earlier = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      await (await StateStore.open({ stateDir })).close();
      writeFileSync(lockPath, `${JSON.stringify({ pid: earlier.pid, start: startOf(earlier.pid!) })}\n`);
      await expect(StateStore.open({ stateDir })).rejects.toThrow(new RegExp(`pid ${earlier.pid}\\b`));
    } finally {
      earlier.kill('SIGKILL');
    }
    await new Promise((r) => earlier.once('exit', r));
    // Its holder gone, the directory is taken; and what this version writes, an earlier one reads as held.
    const store = await StateStore.open({ stateDir });
    expect(JSON.parse(readFileSync(lockPath, 'utf8'))).toEqual({
      pid: process.pid,
      start: startOf(process.pid),
    });
    await store.close();
  });

  it('prunes serials that expired', async () => {
    const store = await StateStore.open({ stateDir: tempDir('store-prune') });
    const serial = (notAfter: string) => ({
      spiffeId: 'spiffe://td/a',
      daemonId: 'n',
      notBefore: '2026-01-01T00:00:00Z',
      notAfter,
      publicKeyHash: 'h',
    });
    await store.serials.put('01', serial('2026-01-01T01:00:00Z'));
    await store.serials.put('02', serial('2026-01-02T01:00:00Z'));
    expect(await store.pruneSerials(new Date('2026-01-01T12:00:00Z'))).toBe(1);
    expect([...store.serials.entries()].map(([k]) => k)).toEqual(['02']);
    await store.close();
  });

  it('writes the status as the entries that changed, all or none, and reads back the whole of it', async () => {
    const stateDir = tempDir('store-status');
    const resource = (i: number, state = 'PENDING') => ({
      kind: 'CredentialBinding' as const,
      namespace: 'riptides-system',
      name: `b-${String(i).padStart(4, '0')}`,
      file: `policies/b-${i}.yaml`,
      observedRevision: 'r1',
      conditions: [],
      state,
    });
    const snapshot = (resources: ReturnType<typeof resource>[], events = {}) =>
      ({
        format: 1,
        generatedAt: '2026-03-01T00:00:00.000Z',
        source: null,
        daemons: [],
        events,
        resources,
      }) as never;
    const logBytes = () => statSync(join(stateDir, 'store', 'status.0.log')).size;
    const store = await StateStore.open({ stateDir });
    expect(store.status.get()).toBeNull();
    const all = Array.from({ length: 1000 }, (_, i) => resource(i));
    await store.status.set(snapshot(all));
    const first = logBytes();
    // The same status again: nothing is appended.
    await store.status.set(snapshot(all));
    expect(logBytes()).toBe(first);
    // One resource changes, one goes, events appear: a few hundred bytes, not the whole status again.
    all[7] = resource(7, 'FAILED');
    const events = {
      'CredentialBinding/riptides-system/b-0007': [
        {
          type: 'Warning',
          reason: 'BindingFailed',
          message: 'no answer',
          firstTimestamp: '',
          lastTimestamp: '',
          count: 1,
          revision: 'r1',
        },
      ],
    };
    await store.status.set(
      snapshot(
        all.filter((_, i) => i !== 500),
        events,
      ),
    );
    expect(logBytes() - first).toBeGreaterThan(0);
    expect(logBytes() - first).toBeLessThan(first / 50);
    await store.close();
    const again = await StateStore.open({ stateDir });
    const read = again.status.get()!;
    expect(read.resources).toHaveLength(999);
    expect(read.resources.find((r) => r.name === 'b-0007')).toMatchObject({ state: 'FAILED' });
    expect(read.resources.some((r) => r.name === 'b-0500')).toBe(false);
    expect(read.resources.map((r) => r.name)).toEqual(all.filter((_, i) => i !== 500).map((r) => r.name));
    expect(read.events).toEqual(events);
    await again.close();
  });

  it('moves a status.json of an earlier version into the journal, and removes it', async () => {
    const stateDir = tempDir('store-status-legacy');
    const store = await StateStore.open({ stateDir });
    await store.close();
    const legacy = {
      format: 1,
      generatedAt: '2026-03-01T00:00:00.000Z',
      source: null,
      daemons: [],
      events: {},
      resources: [
        {
          kind: 'Service',
          namespace: 'riptides-system',
          name: 'api',
          file: 'policies/api.yaml',
          observedRevision: 'r1',
          conditions: [],
        },
      ],
    };
    writeFileSync(join(stateDir, 'store', 'status.json'), JSON.stringify(legacy), { mode: 0o600 });
    const again = await StateStore.open({ stateDir });
    expect(again.status.get()).toEqual(legacy);
    expect(readdirSync(join(stateDir, 'store'))).not.toContain('status.json');
    await again.close();
    const third = await StateStore.open({ stateDir });
    expect(third.status.get()).toEqual(legacy);
    await third.close();
  });

  it('a new revision that changes only the revision each resource names is not written again, and reads back exactly', async () => {
    const stateDir = tempDir('store-status-revision');
    const r1 = 'a'.repeat(40);
    const r2 = 'b'.repeat(40);
    const status = (revision: string, i: number) => ({
      kind: 'WorkloadIdentity' as const,
      namespace: 'riptides-system',
      name: `w-${String(i).padStart(4, '0')}`,
      file: `policies/w-${i}.yaml`,
      observedRevision: revision,
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Applied',
          message: `in force on ${i % 3} daemon(s)`,
          observedRevision: revision,
          lastTransitionTime: '2026-03-01T00:00:00.000Z',
        },
      ],
    });
    const snapshot = (revision: string, resources: unknown[]) =>
      ({
        format: 1,
        generatedAt: `2026-03-01T00:00:0${revision === r1 ? 1 : 2}.000Z`,
        source: { name: 'policy', lastAppliedRevision: revision, conditions: [], diagnostics: [] },
        daemons: [],
        events: {},
        resources,
      }) as never;
    const logBytes = () => statSync(join(stateDir, 'store', 'status.0.log')).size;
    const store = await StateStore.open({ stateDir });
    await store.status.set(
      snapshot(
        r1,
        Array.from({ length: 1000 }, (_, i) => status(r1, i)),
      ),
    );
    const first = logBytes();
    // Commit r2 touches one resource's content; the other 999 only name the new revision.
    const next = Array.from({ length: 1000 }, (_, i) => status(r2, i));
    next[3]!.file = 'policies/moved.yaml';
    await store.status.set(snapshot(r2, next));
    expect(logBytes() - first).toBeLessThan(first / 50);
    await store.close();
    const again = await StateStore.open({ stateDir });
    expect(again.status.get()!.resources).toEqual(next);
    await again.close();
  });

  it('a status.json of an earlier version that is not a status is refused by name; one newer than the journal is read', async () => {
    const stateDir = tempDir('store-status-legacy-bad');
    await (await StateStore.open({ stateDir })).close();
    const legacy = join(stateDir, 'store', 'status.json');
    for (const text of ['null', '{}', '[]', '{"format":1}']) {
      writeFileSync(legacy, text, { mode: 0o600 });
      await expect(StateStore.open({ stateDir }), text).rejects.toThrow(
        /status\.json is not a status snapshot/,
      );
    }
    // A journal with a status, then an earlier version writes status.json after it: the file wins.
    writeFileSync(
      legacy,
      JSON.stringify({ format: 1, generatedAt: 'g1', source: null, daemons: [], events: {}, resources: [] }),
    );
    const store = await StateStore.open({ stateDir });
    expect(store.status.get()?.generatedAt).toBe('g1');
    await store.close();
    await new Promise((r) => setTimeout(r, 20));
    writeFileSync(
      legacy,
      JSON.stringify({ format: 1, generatedAt: 'g2', source: null, daemons: [], events: {}, resources: [] }),
    );
    const again = await StateStore.open({ stateDir });
    expect(again.status.get()?.generatedAt).toBe('g2');
    expect(readdirSync(join(stateDir, 'store'))).not.toContain('status.json');
    await again.close();
  });
});
