/**
 * The drift report: what git says (the last good revision) against what each node runs, per node. This file is
 * the report's shape and its summary; compute.ts finds the items, runner.ts makes, heals, keeps and sends reports.
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
  /** The credential reference hash of a `credential` item (what a heal resends); never a value. */
  ref?: string;
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
  /** Agents silent for longer are `unreachable`. */
  unreachableAfterSeconds?: number;
  /** True when any node has any item (before a heal, when there was one). */
  drifted: boolean;
  summary: {
    nodes: number;
    nodesDrifted: number;
    counts: Record<DriftKind, number>;
  };
  /** Nodes with drift first (most items first), then the rest by name. */
  nodes: NodeDrift[];
  /** Present when the report healed: what was sent to which node, and the drift found afterwards. */
  heal?: HealSummary;
}

export interface HealSummary {
  /** ISO 8601 of the heal requests. */
  at: string;
  /** Per node: what was sent (`program`, `credentials`, `repair`), or why nothing could be. */
  actions: Array<{ node: string; sent: string[]; note?: string }>;
  /** The drift found once the healed nodes reported again (or the wait ended). */
  after: { drifted: boolean; nodesDrifted: number; counts: Record<DriftKind, number> };
  /** The nodes drift still shows after the heal, with their items. */
  remaining: NodeDrift[];
}

/** Counts per kind and the number of drifted nodes. */
export function summarise(nodes: readonly NodeDrift[]): {
  nodesDrifted: number;
  counts: Record<DriftKind, number>;
} {
  const counts = Object.fromEntries(DRIFT_KINDS.map((k) => [k, 0])) as Record<DriftKind, number>;
  for (const n of nodes) for (const i of n.items) counts[i.kind]++;
  return { nodesDrifted: nodes.filter((n) => n.items.length > 0).length, counts };
}

/** The report of `nodes` (their items already computed), with its summary and verdict. */
export function buildDriftReport(
  nodes: readonly NodeDrift[],
  meta: {
    revision: string | null;
    staleThresholdSeconds: number;
    unreachableAfterSeconds?: number;
    now: Date;
  },
): DriftReport {
  const { counts, nodesDrifted } = summarise(nodes);
  return {
    format: 1,
    generatedAt: meta.now.toISOString(),
    revision: meta.revision,
    staleThresholdSeconds: meta.staleThresholdSeconds,
    ...(meta.unreachableAfterSeconds !== undefined
      ? { unreachableAfterSeconds: meta.unreachableAfterSeconds }
      : {}),
    drifted: nodesDrifted > 0,
    summary: { nodes: nodes.length, nodesDrifted, counts },
    nodes: orderNodes(nodes),
  };
}

/** Nodes with drift first (most items first), then by name. */
export function orderNodes(nodes: readonly NodeDrift[]): NodeDrift[] {
  return [...nodes].sort(
    (a, b) => b.items.length - a.items.length || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0),
  );
}

/** `riptides-cli drift` exit status: 0 no drift, 1 drift (2, could not run, is the caller's). */
export function driftExitCode(report: DriftReport): 0 | 1 {
  return report.drifted ? 1 : 0;
}
