/**
 * Programs and incremental updates (agent/protocol/program.ts): what diffProgram sends between two versions,
 * and what applyUpdate accepts, refuses, and never changes when it refuses.
 */
import { describe, expect, it } from 'vitest';
import type { CredentialRef, EgressRule, Identity, ProgramUpdate } from '../../agent/protocol/messages.ts';
import {
  applyUpdate,
  diffProgram,
  makeProgram,
  NOTHING_HELD,
  type Program,
  programFromJson,
  programToJson,
  summaryOf,
} from '../../agent/protocol/program.ts';

const TD = 'example.org';

function identity(name: string, extra: Partial<Identity> = {}): Identity {
  return {
    spiffeId: `spiffe://${TD}/${name}`,
    workloadId: name,
    resource: `WorkloadIdentity/riptides-system/${name}`,
    hash: `h-${name}`,
    selectors: [{ match: { 'process:name': { values: [name] } } }],
    inboundMode: 'TLS_MODE_MUTUAL',
    intercept: false,
    allowedInbound: [],
    allowedOutbound: [],
    x509TtlSeconds: 0,
    dnsNames: [],
    egressRuleHashes: [],
    credentialRefHashes: [],
    scope: 'daemonGroup:g',
    ...extra,
  };
}

function rule(hash: string): EgressRule {
  return {
    hash,
    index: 0,
    selectors: [{ labels: { app: 'x' } }],
    destinations: [],
    mode: 'TLS_MODE_UNSPECIFIED',
    intercept: false,
    allowedSpiffeIds: [],
    workloadId: '',
    credentialName: '',
  };
}

function ref(hash: string): CredentialRef {
  return {
    hash,
    via: 'CredentialBinding',
    resource: `CredentialBinding/riptides-system/${hash}`,
    source: {
      resource: 'CredentialSource/riptides-system/s',
      type: 'kubernetes',
      supported: true,
      specHash: 's',
    },
    injection: null,
    sysfs: null,
  };
}

function program(ids: Identity[], rules: EgressRule[] = [], refs: CredentialRef[] = []): Program {
  return makeProgram(
    TD,
    ['daemonGroup:g'],
    ids,
    new Map(rules.map((r) => [r.hash, r])),
    new Map(refs.map((c) => [c.hash, c])),
  );
}

/** The update as the agent receives it (every field present). */
function received(u: ReturnType<typeof diffProgram>): ProgramUpdate {
  return { nonce: 'n', ...u } as ProgramUpdate;
}

describe('programs and incremental updates', () => {
  const a = identity('a', { egressRuleHashes: ['r1'], credentialRefHashes: ['c1'] });
  const b = identity('b', { egressRuleHashes: ['r1'] });
  const c = identity('c');
  const v1 = program([a, b, c], [rule('r1')], [ref('c1')]);

  it('sends everything to an agent that holds nothing', () => {
    const u = diffProgram(NOTHING_HELD, v1);
    expect(u.full).toBe(true);
    expect(u.identities).toHaveLength(3);
    expect(u.rules).toHaveLength(1);
    const r = applyUpdate(null, received(u), TD);
    expect(r.ok && r.program.version).toBe(v1.version);
  });

  it('sends one identity, and no rule it already holds, when one identity changed', () => {
    const b2 = { ...b, hash: 'h-b-2', allowedInbound: ['spiffe://example.org/new'] };
    const v2 = program([a, b2, c], [rule('r1')], [ref('c1')]);
    const u = diffProgram(summaryOf(v1), v2);
    expect(u.full).toBe(false);
    expect(u.baseVersion).toBe(v1.version);
    expect(u.identities?.map((i) => i?.spiffeId)).toEqual([b2.spiffeId]);
    expect(u.rules).toEqual([]);
    expect(u.credentialRefs).toEqual([]);
    expect(u.removedIdentities).toEqual([]);
    const r = applyUpdate(v1, received(u), TD);
    expect(r.ok && r.program.identities.get(b.spiffeId)?.allowedInbound).toEqual([
      'spiffe://example.org/new',
    ]);
    expect(r.ok && r.program.version).toBe(v2.version);
  });

  it('names removed identities and drops what only they used', () => {
    const v2 = program([b, c], [rule('r1')]);
    const u = diffProgram(summaryOf(v1), v2);
    expect(u.identities).toEqual([]);
    expect(u.removedIdentities).toEqual([a.spiffeId]);
    const r = applyUpdate(v1, received(u), TD);
    expect(r.ok).toBe(true);
    if (r.ok) {
      expect([...r.program.identities.keys()]).toEqual([b.spiffeId, c.spiffeId]);
      expect(r.program.credentialRefs.size).toBe(0);
      expect(r.program.rules.has('r1')).toBe(true);
    }
  });

  it('refuses an update built on another version (BASE_MISMATCH) and changes nothing', () => {
    const v2 = program([a, b], [rule('r1')], [ref('c1')]);
    const u = received(diffProgram(summaryOf(v1), v2));
    const other = program([c]);
    const before = programToJson(other);
    const r = applyUpdate(other, u, TD);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error.code).toBe('BASE_MISMATCH');
    expect(programToJson(other)).toBe(before);
  });

  it('refuses an identity whose rule was neither sent nor held (MISSING_REFERENCE)', () => {
    const d = identity('d', { egressRuleHashes: ['r-missing'] });
    const u = received({ ...diffProgram(NOTHING_HELD, program([c])), identities: [c, d] });
    const r = applyUpdate(null, u, TD);
    expect(!r.ok && r.error.code).toBe('MISSING_REFERENCE');
    expect(!r.ok && r.error.message).toContain('r-missing');
  });

  it('refuses a result that is not the announced version (VERSION_MISMATCH)', () => {
    const u = received({ ...diffProgram(NOTHING_HELD, v1), versionInfo: '0000000000000000' });
    const r = applyUpdate(null, u, TD);
    expect(!r.ok && r.error.code).toBe('VERSION_MISMATCH');
  });

  it("refuses identities of another trust domain and programs over the agent's limit", () => {
    const foreign = received(diffProgram(NOTHING_HELD, v1));
    expect(applyUpdate(null, foreign, 'other.org').ok).toBe(false);
    const outside = { ...identity('x'), spiffeId: 'spiffe://other.org/x' };
    const bad = received({ ...diffProgram(NOTHING_HELD, program([c])), identities: [outside] });
    const r = applyUpdate(null, bad, TD);
    expect(!r.ok && r.error.code).toBe('INVALID');
    const limited = applyUpdate(null, received(diffProgram(NOTHING_HELD, v1)), TD, { maxIdentities: 2 });
    expect(!limited.ok && limited.error.code).toBe('LIMIT');
    expect(!limited.ok && limited.error.message).toContain('3 identities');
  });

  it('saves and restores a program, and rejects a file whose content does not match its version', () => {
    const text = programToJson(v1);
    expect(programFromJson(text)?.version).toBe(v1.version);
    expect(programFromJson(text.replace('h-a', 'h-z'))).toBeNull();
  });
});
