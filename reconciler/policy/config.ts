/**
 * Repository configuration: `riptides.config.yaml` at the root of the policy path. It is configuration, not a
 * resource, so the loader skips files of that name at any depth and reads only the one at the root.
 */
import { z } from 'zod';
import { parseTrustDomain } from '../identity/spiffe-id.ts';
import { type PendingDiagnostic, pending } from './diagnostics.ts';
import { readYaml, YamlReadError } from './yaml-events.ts';

export const CONFIG_FILE = 'riptides.config.yaml';

const configSchema = z.strictObject({
  trustDomain: z.string().optional(),
  federatesWith: z.array(z.string()).optional(),
});

export interface RepoConfig {
  trustDomain?: string;
  /**
   * Trust domains this one federates with (SPIRE's `federates_with`): SPIFFE IDs of theirs may appear in
   * allow lists. An ID in any other foreign trust domain is a warning (RT055): no peer could present it.
   */
  federatesWith?: string[];
}

export function readRepoConfig(
  path: string,
  text: string,
): { config: RepoConfig; diagnostics: PendingDiagnostic[] } {
  const fail = (message: string, hint?: string) => ({
    config: {},
    diagnostics: [pending('RT060', message, { file: path, doc: 0, path: [], ...(hint ? { hint } : {}) })],
  });
  let doc: unknown;
  try {
    doc = readYaml(text, path).documents[0] ?? {};
  } catch (err) {
    if (err instanceof YamlReadError) return fail(`configuration is not readable YAML: ${err.message}`);
    throw err;
  }
  const parsed = configSchema.safeParse(doc ?? {});
  if (!parsed.success) {
    return fail(
      `configuration is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'root'}: ${i.message}`).join('; ')}`,
      'the file holds "trustDomain: <name>" and, optionally, "federatesWith: [<trust domain>, ...]"',
    );
  }
  if (parsed.data.trustDomain !== undefined) {
    const td = parseTrustDomain(parsed.data.trustDomain);
    if (!td.ok || parsed.data.trustDomain.includes(':')) {
      return fail(
        `trustDomain "${parsed.data.trustDomain}" is not a valid trust domain name${td.ok ? '' : `: ${td.message}`}`,
        'write the bare name, e.g. example.com',
      );
    }
  }
  for (const name of parsed.data.federatesWith ?? []) {
    const td = parseTrustDomain(name);
    if (!td.ok || name.includes(':'))
      return fail(
        `federatesWith: "${name}" is not a valid trust domain name${td.ok ? '' : `: ${td.message}`}`,
        'list bare trust domain names, e.g. partner.example.org',
      );
  }
  const config: RepoConfig = {};
  if (parsed.data.trustDomain) config.trustDomain = parsed.data.trustDomain;
  if (parsed.data.federatesWith?.length) config.federatesWith = parsed.data.federatesWith;
  return { config, diagnostics: [] };
}
