/**
 * A program whose rule table cannot be written (every identity lists every destination of its rules, so 3,000
 * identities sharing one rule toward 2,000 Services list 6 million) is refused by the node before anything is
 * built, with the size and the cap in the reason, and the table in force stays; it used to be built whole and
 * then serialised, which failed with V8's "Invalid string length" after the process had grown by gigabytes.
 */

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NodeSide } from '../../agent/node.ts';
import type { Destination, EgressRule, Identity } from '../../agent/protocol/messages.ts';
import { makeProgram } from '../../agent/protocol/program.ts';

const TD = 'example.org';
/** Content hashes as the compiler writes them: lowercase hex. */
const hex = (s: string) => createHash('sha256').update(s).digest('hex');
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function identity(n: number, rules: string[]): Identity {
  return {
    spiffeId: `spiffe://${TD}/app/w${n}`,
    workloadId: `app/w${n}`,
    resource: `WorkloadIdentity/riptides-system/w${n}`,
    hash: hex(`w${n}`),
    selectors: [{ match: { 'process:name': { values: [`w${n}`] } } }],
    inboundMode: 'TLS_MODE_MUTUAL',
    intercept: false,
    allowedInbound: [],
    allowedOutbound: [],
    x509TtlSeconds: 0,
    dnsNames: [],
    egressRuleHashes: rules,
    credentialRefHashes: [],
    scope: 'daemonGroup:g',
  };
}

function ruleTo(services: number): EgressRule {
  const destinations: Destination[] = Array.from({ length: services }, (_, i) => ({
    service: `Service/riptides-system/s${i}`,
    external: false,
    address: `s${i}.apps.internal`,
    port: 443,
    aliases: [],
    networkPrefixes: [],
  }));
  return {
    hash: hex(`rule-${services}`),
    index: 0,
    selectors: [{ labels: { tier: 'a' } }],
    destinations,
    mode: 'TLS_MODE_MUTUAL',
    intercept: false,
    allowedSpiffeIds: [],
    workloadId: '',
    credentialName: '',
  };
}

function program(identities: number, services: number) {
  const rule = ruleTo(services);
  return makeProgram(
    TD,
    ['daemonGroup:g'],
    Array.from({ length: identities }, (_, n) => identity(n, [rule.hash])),
    new Map([[rule.hash, rule]]),
    new Map(),
  );
}

describe('rule tables too large to write', () => {
  it('are refused before they are built, naming the size and the cap; the table in force stays', async () => {
    const root = mkdtempSync(join(tmpdir(), 'riptides-rule-bounds-'));
    dirs.push(root);
    const node = await NodeSide.open({ controlRoot: root, kernelSide: false, enforceTimeoutMs: 50 });
    const small = program(3, 2);
    expect(await node.enforce(small, new Map())).toMatchObject({ ok: true });
    const inForce = readFileSync(join(root, 'rules'), 'utf8');

    const heapBefore = process.memoryUsage().heapUsed;
    const refused = await node.enforce(program(3_000, 2_000), new Map());
    expect(refused).toEqual({
      ok: false,
      reason: expect.stringMatching(
        /^rule table refused: its egress and injection destinations alone come to \d+ bytes, over the 33554432-byte cap/,
      ),
    });
    // Nothing of the 6 million destinations was built (the program itself holds 2,000).
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(200 * 1024 * 1024);
    expect(readFileSync(join(root, 'rules'), 'utf8')).toBe(inForce);
  });

  it('lets a table just under the cap through', async () => {
    const root = mkdtempSync(join(tmpdir(), 'riptides-rule-bounds-'));
    dirs.push(root);
    const node = await NodeSide.open({ controlRoot: root, kernelSide: false, enforceTimeoutMs: 50 });
    // About 130 bytes per destination: 100 identities × 2,000 destinations is some 26 MB, under 32 MiB.
    expect(await node.enforce(program(100, 2_000), new Map())).toMatchObject({ ok: true });
  });
});
