/**
 * Drift items of every node: the desired program of the last good revision (as the agent server holds it, one
 * program per scope set) against the live state each agent reports on its Sync stream (agent/protocol
 * StateReport: program version, identities with their hash, SVID serial and expiry, credentials by version and
 * fingerprint, control-interface health and the paths edited by hand).
 *
 * | kind | found when |
 * | --- | --- |
 * | `unreachable` | no open stream, or no message within `unreachableAfterSeconds`; or no report yet. Nothing else is said of that node: its live state is unknown |
 * | `missing` | the node runs no program; a desired identity is absent; an identity with attested processes holds no SVID; a credential the reconciler has a value for is not held |
 * | `extra` | an identity or a credential the node holds that its desired program does not have |
 * | `changed` | the node runs another program version (with the NACK that keeps it there, if any); an identity's hash differs; the kernel side enforces another version than the agent holds; a credential is held at another version |
 * | `stale` | an SVID or a credential expiring within `staleThresholdSeconds` (or expired) |
 * | `out-of-band` | a file of the control interface changed, added, removed or re-moded by something other than the agent |
 *
 * Cost: one pass over each agent's report, with the desired program's maps looked up by key (shared between
 * agents of one scope set); an agent whose program version matches skips the identity comparison, since the
 * version is a hash over every (SPIFFE ID, identity hash) pair. Linear in agents plus reported items, never a
 * comparison of every agent against every other or of every item against every item.
 *
 * Items carry IDs, hashes, versions, serials, keyed fingerprints and expiry: nothing here ever sees a value.
 */
import type { StateReport } from '../../agent/protocol/messages.ts';
import type { Program } from '../../agent/protocol/program.ts';
import type { DriftItem, NodeDrift } from './report.ts';

/** A credential's version, keyed fingerprint and expiry as the reconciler holds it now (never its value). */
export interface DesiredCredential {
  version: number;
  fingerprint: string;
  expiresAt: Date | null;
}

/** What drift reads of one agent: the agent server's AgentStatus has this shape. */
export interface LiveAgent {
  daemonId: string;
  daemonGroup: string | null;
  connected: boolean;
  /** ISO 8601 of the last message from it. */
  lastContact: string | null;
  /** The latest NACK, until a later ACK. */
  nack: { version: string; kept: string; error: { code: string; message: string }; at: string } | null;
  report: StateReport | null;
}

/** Where drift reads the desired and live state: the agent server (reconciler/agents) implements it. */
export interface DriftSource {
  /** The revision whose programs are published (the last good one), or null before any. */
  readonly publishedRevision: string | null;
  agents(): LiveAgent[];
  /** The desired program of one daemon; null before the first publish or for an unknown daemon. */
  desiredProgramOf(daemonId: string): Program | null;
  /** The reconciler's current value behind a credential reference: null gone, undefined not known (yet). */
  credentialFacts(refHash: string): DesiredCredential | null | undefined;
}

export interface DriftThresholds {
  /** SVIDs and credentials expiring within this many seconds are `stale`. */
  staleThresholdSeconds: number;
  /** An agent with no message for this long is `unreachable` even with its stream open. */
  unreachableAfterSeconds: number;
}

/**
 * Default thresholds. Stale: 3 minutes, the earliest point at which any healthy item is still waiting for its
 * renewal (STS credentials refresh when 20% of their lifetime is left, at least 3 minutes for the shortest,
 * 15-minute, lifetime; SVIDs renew at half-life, 30 minutes before a 1-hour SVID expires): an item inside it is
 * one whose renewal is late. Unreachable: 90 s, three of the agents' 30 s heartbeat reports.
 */
export const DEFAULT_THRESHOLDS: DriftThresholds = {
  staleThresholdSeconds: 180,
  unreachableAfterSeconds: 90,
};

const short = (s: string) => s.slice(0, 16);

function inHuman(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

function expiry(
  what: 'svid' | 'credential',
  subject: string,
  notAfter: Date,
  now: Date,
  threshold: number,
): DriftItem | null {
  const left = (notAfter.getTime() - now.getTime()) / 1000;
  if (left > threshold) return null;
  return {
    kind: 'stale',
    what,
    subject,
    detail:
      left <= 0
        ? `${what === 'svid' ? 'SVID' : 'credential'} expired ${inHuman(-left)} ago and was not renewed`
        : `${what === 'svid' ? 'SVID' : 'credential'} expires in ${inHuman(left)} and was not renewed`,
    expiresAt: notAfter.toISOString(),
  };
}

/**
 * The drift of one node. `desired` is its desired program (null: nothing published, so only reachability and
 * hand edits are judged).
 */
export function nodeDrift(
  agent: LiveAgent,
  desired: Program | null,
  credential: (refHash: string) => DesiredCredential | null | undefined,
  opts: DriftThresholds & { now: Date },
): NodeDrift {
  const node: NodeDrift = {
    node: agent.daemonId,
    group: agent.daemonGroup,
    reachable: true,
    lastContact: agent.lastContact,
    desiredVersion: desired?.version ?? null,
    liveVersion: agent.report ? agent.report.programVersion || null : null,
    items: [],
  };
  const items = node.items;
  const silentFor = agent.lastContact
    ? (opts.now.getTime() - Date.parse(agent.lastContact)) / 1000
    : Number.POSITIVE_INFINITY;
  const unreachable = !agent.connected
    ? agent.lastContact
      ? `no stream from the agent since ${agent.lastContact} (${inHuman(silentFor)} ago): its live state is unknown`
      : 'the agent joined but never connected: its live state is unknown'
    : silentFor > opts.unreachableAfterSeconds
      ? `no message from the agent for ${inHuman(silentFor)} (over ${inHuman(opts.unreachableAfterSeconds)}): its live state is unknown`
      : !agent.report
        ? 'connected, but the agent has not reported its state yet'
        : null;
  if (unreachable) {
    node.reachable = false;
    node.liveVersion = null;
    items.push({ kind: 'unreachable', what: 'agent', subject: agent.daemonId, detail: unreachable });
    return node;
  }
  const report = agent.report!;
  const threshold = opts.staleThresholdSeconds;

  // The program as a whole, then identity by identity when the versions differ.
  const liveById = new Map(report.identities.map((i) => [i.spiffeId, i]));
  if (desired && report.programVersion !== desired.version) {
    const refused =
      agent.nack && agent.nack.version === desired.version
        ? `; the agent refuses it (NACK ${agent.nack.error.code}: ${agent.nack.error.message})`
        : '';
    items.push({
      kind: report.programVersion ? 'changed' : 'missing',
      what: 'program',
      subject: desired.scopes.join(' + ') || agent.daemonId,
      detail: report.programVersion
        ? `the node runs program ${short(report.programVersion)}, git says ${short(desired.version)}${refused}`
        : `the node runs no program, git says ${short(desired.version)}${refused}`,
      desired: desired.version,
      live: report.programVersion || null,
    });
    for (const [id, want] of desired.identities) {
      const have = liveById.get(id);
      if (!have)
        items.push({
          kind: 'missing',
          what: 'identity',
          subject: id,
          detail: 'in the desired program, not on the node',
          desired: want.hash,
          live: null,
        });
      else if (have.hash && have.hash !== want.hash)
        items.push({
          kind: 'changed',
          what: 'identity',
          subject: id,
          detail: 'the node holds another version of this identity',
          desired: want.hash,
          live: have.hash,
        });
    }
    for (const have of report.identities)
      if (!desired.identities.has(have.spiffeId))
        items.push({
          kind: 'extra',
          what: 'identity',
          subject: have.spiffeId,
          detail: 'on the node, not in the desired program',
          desired: null,
          live: have.hash || null,
        });
  }
  if (
    report.control?.enforcedVersion &&
    report.programVersion &&
    report.control.enforcedVersion !== report.programVersion
  )
    items.push({
      kind: 'changed',
      what: 'rule',
      subject: 'rules.enforced',
      detail: `the kernel side enforces ${short(report.control.enforcedVersion)}, the agent holds ${short(report.programVersion)}${report.control.error ? ` (${report.control.error})` : ''}`,
      desired: report.programVersion,
      live: report.control.enforcedVersion,
    });

  // SVIDs: expiring, or absent while processes are attested to the identity.
  for (const i of report.identities) {
    if (i.svidSerial && i.svidNotAfterUnix) {
      const item = expiry('svid', i.spiffeId, new Date(i.svidNotAfterUnix * 1000), opts.now, threshold);
      if (item) items.push({ ...item, live: i.svidSerial });
    } else if (i.processCount > 0 && (!desired || desired.identities.has(i.spiffeId)))
      items.push({
        kind: 'missing',
        what: 'svid',
        subject: i.spiffeId,
        detail: `${i.processCount} attested process(es) but no SVID on the node`,
      });
  }

  // Credentials: by reference hash, against the reconciler's current value of each.
  const liveCreds = new Map(report.credentials.map((c) => [c.refHash, c]));
  if (desired) {
    for (const [h, ref] of desired.credentialRefs) {
      const want = credential(h);
      const have = liveCreds.get(h);
      if (!want) continue; // not obtained (or gone) at the source: the credential's status says why
      if (!have)
        items.push({
          kind: 'missing',
          what: 'credential',
          subject: ref.resource,
          detail: `the reconciler holds version ${want.version}; the node holds none`,
          desired: want.fingerprint,
          live: null,
          ref: h,
        });
      else if (have.fingerprint !== want.fingerprint)
        items.push({
          kind: 'changed',
          what: 'credential',
          subject: ref.resource,
          detail: `the node holds version ${have.version}, the reconciler version ${want.version}`,
          desired: want.fingerprint,
          live: have.fingerprint,
          ref: h,
        });
    }
    for (const c of report.credentials)
      if (!desired.credentialRefs.has(c.refHash))
        items.push({
          kind: 'extra',
          what: 'credential',
          subject: `reference ${short(c.refHash)}`,
          detail: 'held on the node for a reference not in its desired program',
          desired: null,
          live: c.fingerprint,
        });
  }
  for (const c of report.credentials) {
    if (!c.expiresAtUnix) continue;
    const item = expiry(
      'credential',
      desired?.credentialRefs.get(c.refHash)?.resource ?? `reference ${short(c.refHash)}`,
      new Date(c.expiresAtUnix * 1000),
      opts.now,
      threshold,
    );
    if (item) items.push({ ...item, live: c.fingerprint });
  }

  // Hand edits of the control interface, as the agent's writer found them against its manifest.
  for (const line of report.control?.drift ?? []) items.push(outOfBand(line));
  return node;
}

/** One line of ControlHealth.drift (`changed P`, `added P`, `removed P`, `mode P 0644 (expected 0600)`). */
function outOfBand(line: string): DriftItem {
  const m = /^(changed|added|removed|mode) (\S+)(?: (.*))?$/.exec(line);
  if (!m) return { kind: 'out-of-band', what: 'file', subject: line.slice(0, 256), detail: 'edited by hand' };
  const [, how, path, rest] = m;
  const detail =
    how === 'changed'
      ? 'edited by hand: its content differs from what the agent wrote'
      : how === 'added'
        ? 'added by hand: the agent did not write it'
        : how === 'removed'
          ? 'removed by hand: the agent wrote it'
          : `permissions changed by hand: ${rest ?? ''}`.trim();
  return { kind: 'out-of-band', what: 'file', subject: path!, detail };
}

/** The drift of every node the source knows. */
export function computeDrift(source: DriftSource, opts: DriftThresholds & { now: Date }): NodeDrift[] {
  const facts = new Map<string, DesiredCredential | null | undefined>();
  const credential = (h: string) => {
    if (!facts.has(h)) facts.set(h, source.credentialFacts(h));
    return facts.get(h);
  };
  return source.agents().map((a) => nodeDrift(a, source.desiredProgramOf(a.daemonId), credential, opts));
}
