/** What each node would have to add, change and remove: node programs compared by scope and content hash. */
import type { CompiledIdentity, NodeProgram } from '../policy/compile.ts';

export interface IdentityChange {
  spiffeId: string;
  change: 'added' | 'removed' | 'changed';
  /** For changed identities: which parts differ. */
  parts?: string[];
}

export interface ProgramChange {
  scope: string;
  change: 'added' | 'removed' | 'changed';
  baseHash: string | null;
  headHash: string | null;
  identities: IdentityChange[];
}

const scopeName = (p: NodeProgram) => `${p.scope.kind}/${p.scope.id}`;

function changedParts(a: CompiledIdentity, b: CompiledIdentity): string[] {
  const parts: string[] = [];
  const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y);
  if (!same(a.selectors, b.selectors)) parts.push('selectors');
  if (!same(a.tls, b.tls)) parts.push('tls');
  if (!same(a.allowedSpiffeIds, b.allowedSpiffeIds)) parts.push('allowed peers');
  if (!same(a.x509, b.x509)) parts.push('x509');
  if (
    !same(
      a.egress.map((e) => e.hash),
      b.egress.map((e) => e.hash),
    )
  )
    parts.push('egress rules');
  if (
    !same(
      a.credentials.map((c) => c.hash),
      b.credentials.map((c) => c.hash),
    )
  )
    parts.push('credentials');
  return parts;
}

export function diffPrograms(base: readonly NodeProgram[], head: readonly NodeProgram[]): ProgramChange[] {
  const before = new Map(base.map((p) => [scopeName(p), p]));
  const after = new Map(head.map((p) => [scopeName(p), p]));
  const out: ProgramChange[] = [];
  for (const scope of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const b = before.get(scope);
    const a = after.get(scope);
    if (b && a && b.hash === a.hash) continue;
    const bIds = new Map((b?.identities ?? []).map((i) => [i.spiffeId, i]));
    const aIds = new Map((a?.identities ?? []).map((i) => [i.spiffeId, i]));
    const identities: IdentityChange[] = [];
    for (const id of [...new Set([...bIds.keys(), ...aIds.keys()])].sort()) {
      const x = bIds.get(id);
      const y = aIds.get(id);
      if (!x) identities.push({ spiffeId: id, change: 'added' });
      else if (!y) identities.push({ spiffeId: id, change: 'removed' });
      else if (x.hash !== y.hash)
        identities.push({ spiffeId: id, change: 'changed', parts: changedParts(x, y) });
    }
    out.push({
      scope,
      change: !b ? 'added' : !a ? 'removed' : 'changed',
      baseHash: b?.hash ?? null,
      headHash: a?.hash ?? null,
      identities,
    });
  }
  return out;
}
