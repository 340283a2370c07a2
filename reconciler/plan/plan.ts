/** A plan: what merging head into base would change, from resources down to effective access. */
import type { NodeProgram } from '../policy/compile.ts';
import type { Diagnostic } from '../policy/diagnostics.ts';
import type { RenderResult } from '../policy/render.ts';
import { type AccessDiff, diffAccess } from './access.ts';
import { diffPrograms, type ProgramChange } from './program-diff.ts';
import { diffResources, type ResourceChange } from './resource-diff.ts';
import { findRisks, type Risk } from './risks.ts';

export interface Revision {
  ref: string;
  commit: string;
}

export interface Plan {
  base: Revision & { valid: boolean };
  head: Revision & { valid: boolean };
  path: string;
  /** Head's diagnostics; a plan whose head has errors stops there. */
  diagnostics: Diagnostic[];
  resources: ResourceChange[];
  programs: ProgramChange[];
  access: AccessDiff;
  risks: Risk[];
  /** From the access-removed risks: which workloads lose access, and to what (sorted). */
  accessLost: AccessLost;
  notes: string[];
}

export interface AccessLost {
  workloads: string[];
  destinations: string[];
}

/** "2 workload(s) lose access to 3 destination(s)", or null when nobody loses anything. */
export function accessLostSummary(lost: AccessLost): string | null {
  if (lost.workloads.length === 0) return null;
  return `${lost.workloads.length} workload(s) lose access to ${lost.destinations.length} destination(s)`;
}

export function hasChanges(plan: Plan): boolean {
  return plan.resources.length > 0 || plan.programs.length > 0;
}

export function headHasErrors(plan: Plan): boolean {
  return plan.diagnostics.some((d) => d.severity === 'error');
}

export function buildPlan(input: {
  base: Revision;
  head: Revision;
  path: string;
  baseResult: RenderResult;
  headResult: RenderResult;
  /** The trust domain each side compiled in (each from its own riptides.config.yaml, or --trust-domain). */
  trustDomains?: { base: string | undefined; head: string | undefined };
}): Plan {
  const { baseResult, headResult } = input;
  const notes: string[] = [];
  const td = input.trustDomains;
  if (td?.base && td.head && td.base !== td.head)
    notes.push(
      `the trust domain changes from ${td.base} to ${td.head}: every SPIFFE ID changes, so every workload gets a new identity and every peer that pins an old one refuses it`,
    );
  const baseValid = baseResult.programs !== null;
  const headValid = headResult.programs !== null;
  const empty: Plan = {
    base: { ...input.base, valid: baseValid },
    head: { ...input.head, valid: headValid },
    path: input.path,
    diagnostics: headResult.diagnostics,
    resources: [],
    programs: [],
    access: { added: [], removed: [], changed: [] },
    risks: [],
    accessLost: { workloads: [], destinations: [] },
    notes,
  };
  if (!headValid) return empty;
  if (!baseValid)
    notes.push(
      `base ${input.base.ref} does not validate itself; node programs and access are compared against an empty base`,
    );
  const basePrograms: NodeProgram[] = baseResult.programs ?? [];
  const headPrograms = headResult.programs!;
  const access = diffAccess(basePrograms, headPrograms);
  const risks = findRisks(
    { set: baseValid ? baseResult.resources : null, programs: basePrograms },
    { set: headResult.resources, programs: headPrograms },
    access,
  );
  const lost = risks.flatMap((r) => (r.lost ? [r.lost] : []));
  const sortedSet = (values: string[]) => [...new Set(values)].sort();
  return {
    ...empty,
    resources: diffResources(baseResult.resources, headResult.resources),
    programs: diffPrograms(basePrograms, headPrograms),
    access,
    risks,
    accessLost: {
      workloads: sortedSet(lost.map((l) => l.workload)),
      destinations: sortedSet(lost.map((l) => l.to)),
    },
  };
}
