/** A rendered policy → the desired state the agent server publishes. */
import { toProviderSpec } from '../credentials/credential-spec.ts';
import type { RenderResult } from '../policy/render.ts';
import type { DesiredState } from './server.ts';

/** null when the render has errors (nothing may be published from it). */
export function desiredStateOf(result: RenderResult, revision?: string): DesiredState | null {
  if (!result.programs) return null;
  return {
    ...(revision ? { revision } : {}),
    programs: result.programs,
    credentialSources: new Map(result.resources.sources.map((s) => [s.key, toProviderSpec(s.value)])),
  };
}
