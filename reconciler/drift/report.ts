/**
 * The drift report: what git says (the last good revision) against what each node runs, per node. This file is
 * the report's shape and its summary; computing the items (desired node programs against the live state the
 * agents report) is the drift step of the loop, wired once the agent protocol's live-state types exist.
 *
 * Kinds of drift, as the issue names them:
 * | kind | meaning |
 * | --- | --- |
 * | `missing` | desired but absent on the node (an identity, a rule, a credential reference, the program) |
 * | `extra` | on the node but not desired (a leftover identity or credential) |
 * | `changed` | present on both sides with a different content hash or version |
 * | `stale` | an SVID or a credential that expires within the threshold and has not been renewed |
 * | `unreachable` | the node's agent does not answer; its live state is unknown |
 * | `out-of-band` | the control interface was edited by hand (the writer's manifest disagrees with the file) |
 *
 * Items carry hashes, versions, serials, fingerprints and expiry, never a value.
 */

export const DRIFT_KINDS = ['missing', 'extra', 'changed', 'stale', 'unreachable', 'out-of-band'] as const;
export type DriftKind = (typeof DRIFT_KINDS)[number];

export interface DriftItem {
  kind: DriftKind;
  /** What sort of thing drifted. */
  what: 'program' | 'identity' | 'svid' | 'rule' | 'credential' | 'file' | 'agent';
  /** Its name: a SPIFFE ID, a binding `Kind/namespace/name`, a control-interface path, the program scope. */
  subject: string;
  /** One line for a person. */
  detail: string;
  /** Desired and live content hash, version, serial or fingerprint, when the kind has them. */
  desired?: string | null;
  live?: string | null;
  /** ISO 8601, for `stale`. */
  expiresAt?: string;
}

export interface NodeDrift {
  /** Daemon id. */
  node: string;
  group: string | null;
  reachable: boolean;
  /** ISO 8601 of the agent's last message. */
  lastContact: string | null;
  desiredVersion: string | null;
  liveVersion: string | null;
  items: DriftItem[];
}

export interface DriftReport {
  format: 1;
  /** ISO 8601. */
  generatedAt: string;
  /** The last good revision, whose programs are the desired state; null before any was applied. */
  revision: string | null;
  /** SVIDs and credentials expiring within this many seconds are `stale`. */
  staleThresholdSeconds: number;
  /** True when any node has any item. */
  drifted: boolean;
  summary: {
    nodes: number;
    nodesDrifted: number;
    counts: Record<DriftKind, number>;
  };
  /** Nodes with drift first (most items first), then the rest by name. */
  nodes: NodeDrift[];
}

/** The report of `nodes` (their items already computed), with its summary and verdict. */
export function buildDriftReport(
  nodes: readonly NodeDrift[],
  meta: { revision: string | null; staleThresholdSeconds: number; now: Date },
): DriftReport {
  const counts = Object.fromEntries(DRIFT_KINDS.map((k) => [k, 0])) as Record<DriftKind, number>;
  for (const n of nodes) for (const i of n.items) counts[i.kind]++;
  const ordered = [...nodes].sort(
    (a, b) => b.items.length - a.items.length || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0),
  );
  const nodesDrifted = nodes.filter((n) => n.items.length > 0).length;
  return {
    format: 1,
    generatedAt: meta.now.toISOString(),
    revision: meta.revision,
    staleThresholdSeconds: meta.staleThresholdSeconds,
    drifted: nodesDrifted > 0,
    summary: { nodes: nodes.length, nodesDrifted, counts },
    nodes: ordered,
  };
}

/** `riptides-cli drift` exit status: 0 no drift, 1 drift (2, could not run, is the caller's). */
export function driftExitCode(report: DriftReport): 0 | 1 {
  return report.drifted ? 1 : 0;
}
