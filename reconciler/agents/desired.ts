/** A rendered policy → the desired state the agent server publishes. */
import { toProviderSpec } from '../credentials/credential-spec.ts';
import type { CredentialSourceSpec } from '../credentials/types.ts';
import type { CredentialSource } from '../policy/kinds/index.ts';
import type { RenderResult } from '../policy/render.ts';
import type { DesiredState } from './server.ts';

/**
 * Provider specs by the parsed resource they come from: a render that reuses a cached file hands out the same
 * resource objects, so an unchanged CredentialSource keeps the same spec object (and its pairs need no
 * ensure() again).
 */
const specs = new WeakMap<CredentialSource, CredentialSourceSpec>();

function specOf(source: CredentialSource): CredentialSourceSpec {
  let spec = specs.get(source);
  if (!spec) {
    spec = toProviderSpec(source);
    specs.set(source, spec);
  }
  return spec;
}

/** null when the render has errors (nothing may be published from it). */
export function desiredStateOf(result: RenderResult, revision?: string): DesiredState | null {
  if (!result.programs) return null;
  return {
    ...(revision ? { revision } : {}),
    programs: result.programs,
    credentialSources: new Map(result.resources.sources.map((s) => [s.key, specOf(s.value)])),
  };
}
