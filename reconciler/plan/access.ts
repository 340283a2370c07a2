/**
 * Effective access: who may reach whom, and where each credential flows, derived from node programs.
 * - reach edges: identity → Service address (egress rules, with TLS mode and pinned peer IDs), and
 *   identity → identity where an allow list names the peer (inbound on the server, outbound on the client);
 * - credential edges: source → workload → destination (injection) or → sysfs.
 */
import { canonicalJson } from '../policy/canonical.ts';
import type { NodeProgram } from '../policy/compile.ts';

export interface AccessEdge {
  kind: 'reach' | 'credential';
  from: string;
  to: string;
  /** What the edge carries: TLS mode, allowed peers, the credential source… (compared for "changed"). */
  attributes: Record<string, unknown>;
  external?: boolean;
}

export function edgeKey(e: AccessEdge): string {
  return `${e.kind} ${e.from} -> ${e.to}`;
}

export function accessEdges(programs: readonly NodeProgram[]): AccessEdge[] {
  const edges = new Map<string, AccessEdge>();
  const put = (e: AccessEdge) => {
    const key = edgeKey(e);
    const existing = edges.get(key);
    if (existing) Object.assign(existing.attributes, e.attributes);
    else edges.set(key, e);
  };
  for (const p of programs) {
    for (const i of p.identities) {
      for (const rule of i.egress) {
        for (const d of rule.destinations) {
          put({
            kind: 'reach',
            from: i.spiffeId,
            to: `${d.service} (${d.address}${d.port ? `:${d.port}` : ''})`,
            attributes: {
              tls: rule.tls.mode ?? 'implicit',
              intercept: rule.tls.intercept,
              allowedPeers: rule.allowedSpiffeIds,
            },
            external: d.external,
          });
        }
      }
      for (const peer of i.allowedSpiffeIds.inbound) {
        put({
          kind: 'reach',
          from: peer,
          to: i.spiffeId,
          attributes: { inboundAllowed: true, serverTls: i.tls.mode },
        });
      }
      for (const peer of i.allowedSpiffeIds.outbound) {
        put({ kind: 'reach', from: i.spiffeId, to: peer, attributes: { outboundAllowed: true } });
      }
      for (const c of i.credentials) {
        const via = {
          source: c.source.resource,
          type: c.source.type,
          binding: c.resource,
          sourceSpec: c.source.specHash,
        };
        for (const d of c.injection?.destinations ?? []) {
          put({
            kind: 'credential',
            from: `${c.source.resource} → ${i.spiffeId}`,
            to: `${d.service} (${d.address}${d.port ? `:${d.port}` : ''})`,
            attributes: via,
            external: d.external,
          });
        }
        if (c.sysfs)
          put({
            kind: 'credential',
            from: `${c.source.resource} → ${i.spiffeId}`,
            to: `sysfs ${c.sysfs.dir}`,
            attributes: via,
          });
      }
    }
  }
  return [...edges.values()].sort((a, b) => (edgeKey(a) < edgeKey(b) ? -1 : 1));
}

/** One attribute of a changed edge: `serverTls MUTUAL → PERMISSIVE`. */
export interface AttributeChange {
  attribute: string;
  /** Absent when the attribute is new on the edge. */
  before?: unknown;
  /** Absent when the attribute left the edge. */
  after?: unknown;
}

export interface AccessDiff {
  added: AccessEdge[];
  removed: AccessEdge[];
  /** Edges on both sides whose attributes differ; `fields` holds only the attributes that changed. */
  changed: Array<{ key: string; before: AccessEdge; after: AccessEdge; fields: AttributeChange[] }>;
}

/** The attributes that differ between two versions of an edge, in a stable order. */
export function changedAttributes(
  before: Record<string, unknown>,
  after: Record<string, unknown>,
): AttributeChange[] {
  const out: AttributeChange[] = [];
  for (const attribute of [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()) {
    const b = before[attribute];
    const a = after[attribute];
    if (canonicalJson(b ?? null) === canonicalJson(a ?? null)) continue;
    out.push({
      attribute,
      ...(b !== undefined ? { before: b } : {}),
      ...(a !== undefined ? { after: a } : {}),
    });
  }
  return out;
}

/** The programs reduced to the identities named in `ids`. */
function only(programs: readonly NodeProgram[], ids: ReadonlySet<string>): NodeProgram[] {
  return programs.map((p) => ({ ...p, identities: p.identities.filter((i) => ids.has(i.spiffeId)) }));
}

/**
 * Edges come from identities' compiled content: an edge A → B from A's egress rules, outbound list or
 * credentials, and from B's inbound list. Identities whose content hash is the same on both sides contribute
 * the same edges, so only the edges that changed identities touch are compared, built from the changed
 * identities and their peers. A one-file change on a large repository stays cheap.
 */
export function diffAccess(base: readonly NodeProgram[], head: readonly NodeProgram[]): AccessDiff {
  const hashes = (ps: readonly NodeProgram[]) =>
    new Map(ps.flatMap((p) => p.identities.map((i) => [i.spiffeId, i.hash] as const)));
  const baseHashes = hashes(base);
  const headHashes = hashes(head);
  const changed = new Set<string>();
  for (const [id, h] of baseHashes) if (headHashes.get(id) !== h) changed.add(id);
  for (const [id, h] of headHashes) if (baseHashes.get(id) !== h) changed.add(id);
  const touched = [...accessEdges(only(base, changed)), ...accessEdges(only(head, changed))];
  const keys = new Set(touched.map(edgeKey));
  const involved = new Set(changed);
  for (const e of touched) {
    if (e.kind === 'reach') {
      involved.add(e.from);
      involved.add(e.to);
    }
  }
  const side = (ps: readonly NodeProgram[]) =>
    new Map(
      accessEdges(only(ps, involved))
        .filter((e) => keys.has(edgeKey(e)))
        .map((e) => [edgeKey(e), e]),
    );
  const before = side(base);
  const after = side(head);
  const diff: AccessDiff = { added: [], removed: [], changed: [] };
  for (const [key, e] of after) {
    const b = before.get(key);
    if (!b) diff.added.push(e);
    else {
      const fields = changedAttributes(b.attributes, e.attributes);
      if (fields.length) diff.changed.push({ key, before: b, after: e, fields });
    }
  }
  for (const [key, e] of before) if (!after.has(key)) diff.removed.push(e);
  return diff;
}
