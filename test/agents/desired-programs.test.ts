/**
 * The desired programs the agent server builds per publish (reconciler/agents/programs.ts): a new publish
 * reuses what did not change (scope programs and agents' merged programs), and what it builds is exactly
 * what a build from nothing gives.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { programToJson } from '../../agent/protocol/program.ts';
import { credentialPairsOf, pairKey } from '../../reconciler/agents/credentials.ts';
import { DesiredPrograms, scopesOfDaemon } from '../../reconciler/agents/programs.ts';
import {
  FLEET_TD,
  type FleetSpec,
  renderFleet,
  workloadOf,
  writeFleetPolicy,
} from '../support/fleet-policy.ts';

const dir = mkdtempSync(join(tmpdir(), 'riptides-desired-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GROUPS = { 'fleet/g0': 3, 'fleet/g1': 2, 'fleet/g2': 2 };
const render = (spec: FleetSpec) => {
  writeFleetPolicy(dir, spec);
  return renderFleet(dir).programs;
};

describe('desired programs between publishes', () => {
  it('reuse the scopes and agent programs a commit left alone, and equal a build from nothing', () => {
    const first = new DesiredPrograms(FLEET_TD, render({ groups: GROUPS }), null);
    const agentOf = (group: string) => scopesOfDaemon(`node-${group}`, group);
    const before = Object.fromEntries(Object.keys(GROUPS).map((g) => [g, first.programFor(agentOf(g))]));

    // One identity of g1 changes.
    const programs = render({
      groups: GROUPS,
      tweak: { [workloadOf(1, 0)]: 'spiffe://fleet.example.org/x' },
    });
    const next = new DesiredPrograms(FLEET_TD, programs, first);
    const fresh = new DesiredPrograms(FLEET_TD, programs, null);

    for (const g of Object.keys(GROUPS)) {
      const p = next.programFor(agentOf(g));
      expect(programToJson(p), g).toEqual(programToJson(fresh.programFor(agentOf(g))));
      if (g === 'fleet/g1') expect(p.version).not.toBe(before[g]!.version);
      else {
        expect(p, g).toBe(before[g]);
        expect(next.scopes.get(`daemonGroup:${g}`)).toBe(first.scopes.get(`daemonGroup:${g}`));
      }
    }
    // Another trust domain shares nothing.
    const other = new DesiredPrograms('other.example.org', programs, next);
    expect(other.programFor(agentOf('fleet/g0'))).not.toBe(before['fleet/g0']);
    expect(other.programFor(agentOf('fleet/g0')).trustDomain).toBe('other.example.org');
  });

  it("resolve credential pairs again when a scope stays but its source's spec is another object", () => {
    writeFleetPolicy(dir, { groups: GROUPS, credentials: { [workloadOf(0, 0)]: 'token-a' } });
    const desired = renderFleet(dir);
    const programs = new DesiredPrograms(FLEET_TD, desired.programs, null);
    const sources = desired.credentialSources!;
    const [resource, spec] = [...sources][0]!;
    const key = pairKey(spec.name, workloadOf(0, 0));
    expect([...credentialPairsOf(programs, sources).keys()]).toEqual([key]);
    // The same scope programs; the source re-read (another file of the commit changed): a new spec object.
    const reread = { ...spec };
    const pairs = credentialPairsOf(programs, new Map([[resource, reread]]));
    expect(pairs.get(key)?.spec).toBe(reread);
    expect(pairs.get(key)?.refs.size).toBe(1);
    // The source gone from the map: no pair (the reference names nothing the manager could keep)…
    expect(credentialPairsOf(programs, new Map()).size).toBe(0);
    // …and back: the same scope programs resolve it again.
    expect(credentialPairsOf(programs, sources).get(key)?.spec).toBe(spec);
  });
});
