/**
 * Drift items from a desired program and an agent's live state, as a user reads them: each kind of drift is
 * found when it is there and only then, an unreachable node says so and nothing else, and no value ever
 * reaches an item.
 */
import { describe, expect, it } from 'vitest';
import type { CredentialRef, Identity, StateReport } from '../../agent/protocol/messages.ts';
import { makeProgram, type Program } from '../../agent/protocol/program.ts';
import {
  computeDrift,
  DEFAULT_THRESHOLDS,
  type DesiredCredential,
  type LiveAgent,
  nodeDrift,
} from '../../reconciler/drift/compute.ts';
import type { DriftItem } from '../../reconciler/drift/report.ts';

const TD = 'example.org';
const NOW = new Date('2026-03-01T12:00:00Z');
const unix = (offsetS: number) => Math.floor(NOW.getTime() / 1000) + offsetS;
const opts = { ...DEFAULT_THRESHOLDS, now: NOW };

function identity(path: string, hash: string, refs: string[] = []): Identity {
  return {
    spiffeId: `spiffe://${TD}/${path}`,
    workloadId: path,
    resource: `WorkloadIdentity/riptides-system/${path.replaceAll('/', '-')}`,
    hash,
    selectors: [],
    inboundMode: 'TLS_MODE_MUTUAL',
    intercept: false,
    allowedInbound: [],
    allowedOutbound: [],
    x509TtlSeconds: 0,
    dnsNames: [],
    egressRuleHashes: [],
    credentialRefHashes: refs,
    scope: 'daemonGroup:g',
  };
}

function ref(hash: string, name: string): CredentialRef {
  return {
    hash,
    via: 'CredentialBinding',
    resource: `CredentialBinding/riptides-system/${name}`,
    source: {
      resource: 'CredentialSource/riptides-system/s',
      type: 'kubernetes',
      supported: true,
      specHash: 'x',
    },
    injection: null,
    sysfs: null,
  };
}

function program(identities: Identity[], refs: CredentialRef[] = []): Program {
  return makeProgram(TD, ['daemonGroup:g'], identities, new Map(), new Map(refs.map((r) => [r.hash, r])));
}

const API = identity('app/api', 'aaaa', ['r1']);
const DB = identity('app/db', 'bbbb');
const DESIRED = program([API, DB], [ref('r1', 'api-token')]);
const CURRENT: DesiredCredential = {
  version: 3,
  fingerprint: 'hmac-sha256:1111222233334444',
  expiresAt: null,
};

function report(over: Partial<StateReport> = {}): StateReport {
  return {
    programVersion: DESIRED.version,
    identities: [
      {
        spiffeId: API.spiffeId,
        svidSerial: '0a',
        svidNotAfterUnix: unix(1800),
        processCount: 1,
        hash: 'aaaa',
      },
      { spiffeId: DB.spiffeId, svidSerial: '', svidNotAfterUnix: 0, processCount: 0, hash: 'bbbb' },
    ],
    credentials: [{ refHash: 'r1', version: 3, fingerprint: CURRENT.fingerprint, expiresAtUnix: 0 }],
    processes: [],
    control: { health: 'OK', enforcedVersion: DESIRED.version, enforcedGeneration: 4, error: '', drift: [] },
    atUnixMs: NOW.getTime(),
    bundleVersion: 'b',
    rejectedVersion: '',
    rejectedError: null,
    repairedId: '',
    dataPlane: null,
    ...over,
  };
}

function agent(over: Partial<LiveAgent> = {}): LiveAgent {
  return {
    daemonId: 'node-1',
    daemonGroup: 'g',
    connected: true,
    lastContact: new Date(NOW.getTime() - 5000).toISOString(),
    nack: null,
    report: report(),
    ...over,
  };
}

const items = (a: LiveAgent, desired: Program | null = DESIRED, cred = CURRENT as DesiredCredential | null) =>
  nodeDrift(a, desired, () => cred, opts).items;
const brief = (xs: DriftItem[]) => xs.map((i) => `${i.kind} ${i.what} ${i.subject}`);

describe('drift of one node', () => {
  it('finds nothing when the node runs what git says', () => {
    const n = nodeDrift(agent(), DESIRED, () => CURRENT, opts);
    expect(n).toMatchObject({
      reachable: true,
      liveVersion: DESIRED.version,
      desiredVersion: DESIRED.version,
    });
    expect(n.items).toEqual([]);
  });

  it('names the missing, extra and changed identities of another program, and the NACK keeping it', () => {
    const live = program(
      [identity('app/api', 'old'), identity('app/legacy', 'cccc')],
      [ref('r1', 'api-token')],
    );
    const a = agent({
      nack: {
        version: DESIRED.version,
        kept: live.version,
        error: { code: 'CONTROL_REFUSED', message: 'rule table refused' },
        at: NOW.toISOString(),
      },
      report: report({
        programVersion: live.version,
        identities: [
          {
            spiffeId: API.spiffeId,
            svidSerial: '0a',
            svidNotAfterUnix: unix(1800),
            processCount: 1,
            hash: 'old',
          },
          {
            spiffeId: `spiffe://${TD}/app/legacy`,
            svidSerial: '',
            svidNotAfterUnix: 0,
            processCount: 0,
            hash: 'cccc',
          },
        ],
        control: { health: 'OK', enforcedVersion: live.version, enforcedGeneration: 2, error: '', drift: [] },
      }),
    });
    const found = items(a);
    expect(brief(found)).toEqual([
      'changed program daemonGroup:g',
      `changed identity ${API.spiffeId}`,
      `missing identity ${DB.spiffeId}`,
      `extra identity spiffe://${TD}/app/legacy`,
    ]);
    expect(found[0]!.detail).toContain('NACK CONTROL_REFUSED: rule table refused');
    expect(found[1]).toMatchObject({ desired: 'aaaa', live: 'old' });
  });

  it('says the node runs no program when it holds none', () => {
    const found = items(agent({ report: report({ programVersion: '', identities: [] }) }));
    expect(found[0]).toMatchObject({ kind: 'missing', what: 'program', live: null });
    expect(brief(found)).toContain(`missing identity ${API.spiffeId}`);
  });

  it('reports SVIDs and credentials expiring within the threshold, or expired, as stale', () => {
    const a = agent({
      report: report({
        identities: [
          {
            spiffeId: API.spiffeId,
            svidSerial: '0a',
            svidNotAfterUnix: unix(120),
            processCount: 1,
            hash: 'aaaa',
          },
          {
            spiffeId: DB.spiffeId,
            svidSerial: '0b',
            svidNotAfterUnix: unix(-30),
            processCount: 1,
            hash: 'bbbb',
          },
        ],
        credentials: [
          { refHash: 'r1', version: 3, fingerprint: CURRENT.fingerprint, expiresAtUnix: unix(60) },
        ],
      }),
    });
    const found = items(a);
    expect(brief(found)).toEqual([
      `stale svid ${API.spiffeId}`,
      `stale svid ${DB.spiffeId}`,
      'stale credential CredentialBinding/riptides-system/api-token',
    ]);
    expect(found[0]).toMatchObject({ live: '0a', expiresAt: new Date(unix(120) * 1000).toISOString() });
    expect(found[0]!.detail).toBe('SVID expires in 2m and was not renewed');
    expect(found[1]!.detail).toBe('SVID expired 30s ago and was not renewed');
    // Outside the threshold: nothing; the threshold is the caller's.
    expect(nodeDrift(a, DESIRED, () => CURRENT, { ...opts, staleThresholdSeconds: 10 }).items).toHaveLength(
      1,
    );
  });

  it('reports attested processes without an SVID as a missing SVID', () => {
    const a = agent({
      report: report({
        identities: [
          { spiffeId: API.spiffeId, svidSerial: '', svidNotAfterUnix: 0, processCount: 2, hash: 'aaaa' },
          { spiffeId: DB.spiffeId, svidSerial: '', svidNotAfterUnix: 0, processCount: 0, hash: 'bbbb' },
        ],
      }),
    });
    expect(items(a)).toEqual([
      {
        kind: 'missing',
        what: 'svid',
        subject: API.spiffeId,
        detail: '2 attested process(es) but no SVID on the node',
      },
    ]);
  });

  it('compares credentials by keyed fingerprint: missing, older version, extra reference', () => {
    const missing = items(agent({ report: report({ credentials: [] }) }));
    expect(missing).toEqual([
      expect.objectContaining({
        kind: 'missing',
        what: 'credential',
        ref: 'r1',
        desired: CURRENT.fingerprint,
      }),
    ]);
    const older = items(
      agent({
        report: report({
          credentials: [
            { refHash: 'r1', version: 2, fingerprint: 'hmac-sha256:9999888877776666', expiresAtUnix: 0 },
            { refHash: 'r9', version: 1, fingerprint: 'hmac-sha256:aaaabbbbccccdddd', expiresAtUnix: 0 },
          ],
        }),
      }),
    );
    expect(brief(older)).toEqual([
      'changed credential CredentialBinding/riptides-system/api-token',
      'extra credential reference r9',
    ]);
    expect(older[0]!.detail).toBe('the node holds version 2, the reconciler version 3');
    // A credential the reconciler has no value for is the credential status's business, not drift.
    expect(items(agent({ report: report({ credentials: [] }) }), DESIRED, null)).toEqual([]);
  });

  it('reports each hand edit of the control interface, and an enforced version behind the agent', () => {
    const a = agent({
      report: report({
        control: {
          health: 'DEGRADED: rules edited',
          enforcedVersion: 'ffffffffffffffff',
          enforcedGeneration: 3,
          error: 'same generation with other content',
          drift: [
            'changed rules',
            'added certs/extra.pem',
            'removed identities/abcd/svid.crt',
            'mode identities/abcd/svid.key 0644 (expected 0600)',
          ],
        },
      }),
    });
    const found = items(a);
    expect(brief(found)).toEqual([
      'changed rule rules.enforced',
      'out-of-band file rules',
      'out-of-band file certs/extra.pem',
      'out-of-band file identities/abcd/svid.crt',
      'out-of-band file identities/abcd/svid.key',
    ]);
    expect(found[0]!.detail).toContain('same generation with other content');
    expect(found[4]!.detail).toBe('permissions changed by hand: 0644 (expected 0600)');
  });

  it('reports an agent without a stream, silent too long, or without a report as unreachable, and only that', () => {
    const gone = nodeDrift(
      agent({ connected: false, lastContact: new Date(NOW.getTime() - 600_000).toISOString() }),
      DESIRED,
      () => CURRENT,
      opts,
    );
    expect(gone).toMatchObject({ reachable: false, liveVersion: null });
    expect(gone.items).toEqual([
      expect.objectContaining({ kind: 'unreachable', what: 'agent', subject: 'node-1' }),
    ]);
    expect(gone.items[0]!.detail).toContain('(10m ago)');
    const silent = items(agent({ lastContact: new Date(NOW.getTime() - 91_000).toISOString() }));
    expect(silent.map((i) => i.kind)).toEqual(['unreachable']);
    expect(silent[0]!.detail).toContain('no message from the agent for 91s');
    expect(items(agent({ lastContact: new Date(NOW.getTime() - 89_000).toISOString() }))).toEqual([]);
    expect(items(agent({ connected: false, lastContact: null }))[0]!.detail).toContain('never connected');
    expect(items(agent({ report: null }))[0]!.detail).toContain('has not reported');
  });

  it('without a published program judges only reachability, SVIDs and hand edits', () => {
    const a = agent({
      report: report({ control: { ...report().control!, drift: ['changed config'] } }),
    });
    expect(brief(items(a, null))).toEqual(['out-of-band file config']);
  });
});

describe('drift of a fleet', () => {
  it('asks the source once per credential reference, however many nodes hold it', () => {
    const asked: string[] = [];
    const agents = Array.from({ length: 50 }, (_, i) => agent({ daemonId: `n${i}` }));
    const nodes = computeDrift(
      {
        publishedRevision: 'rev',
        agents: () => agents,
        desiredProgramOf: () => DESIRED,
        credentialFacts: (h) => {
          asked.push(h);
          return CURRENT;
        },
      },
      opts,
    );
    expect(nodes).toHaveLength(50);
    expect(nodes.every((n) => n.items.length === 0)).toBe(true);
    expect(asked).toEqual(['r1']);
  });
});
