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
  notes: string[];
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
}): Plan {
  const { baseResult, headResult } = input;
  const notes: string[] = [];
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
  return {
    ...empty,
    resources: diffResources(baseResult.resources, headResult.resources),
    programs: diffPrograms(basePrograms, headPrograms),
    access,
    risks: findRisks(
      { set: baseValid ? baseResult.resources : null, programs: basePrograms },
      { set: headResult.resources, programs: headPrograms },
      access,
    ),
  };
}
