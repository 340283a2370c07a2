import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseSpiffeId, parseTrustDomain, validatePath } from '../../reconciler/identity/spiffe-id.ts';
import { vectorPath } from '../support/shared.ts';

interface Case {
  kind: 'spiffe_id' | 'trust_domain' | 'path';
  input: string;
  valid: boolean;
  reason: string;
}

const cases = (JSON.parse(readFileSync(vectorPath('spiffe-id-cases.json'), 'utf8')) as { cases: Case[] })
  .cases;

function outcome(c: Case): string {
  if (c.kind === 'spiffe_id') {
    const r = parseSpiffeId(c.input);
    return r.ok ? 'ok' : r.reason;
  }
  if (c.kind === 'trust_domain') {
    const r = parseTrustDomain(c.input);
    return r.ok ? 'ok' : r.reason;
  }
  return validatePath(c.input) ?? 'ok';
}

describe('SPIFFE ID parsing agrees with the go-spiffe / SPIFFE-ID.md vectors', () => {
  it('reads all vector cases in place', () => {
    expect(cases.length).toBeGreaterThan(400);
  });
  it.each(cases.map((c, i) => [i, c] as const))('case %i', (_i, c) => {
    expect({ input: c.input, kind: c.kind, outcome: outcome(c) }).toEqual({
      input: c.input,
      kind: c.kind,
      outcome: c.reason,
    });
  });
  it('rejects IDs beyond the spec length limits', () => {
    expect(parseSpiffeId(`spiffe://${'a'.repeat(256)}/x`)).toMatchObject({ ok: false, reason: 'too_long' });
    expect(parseSpiffeId(`spiffe://td/${'a'.repeat(2048)}`)).toMatchObject({ ok: false, reason: 'too_long' });
  });
});
