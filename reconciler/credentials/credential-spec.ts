/** A validated CredentialSource resource → the plain spec the credential providers take. */

import type { CredentialSource } from '../policy/kinds/index.ts';
import type { CredentialSourceSpec } from './types.ts';

const list = (v: string | string[] | undefined) => (v === undefined ? undefined : Array.isArray(v) ? v : [v]);

export function toProviderSpec(source: CredentialSource): CredentialSourceSpec {
  const name = source.metadata.name;
  const spec = source.spec;
  if (spec.kubernetes)
    return { name, kubernetes: { secretRef: spec.kubernetes.secretRef, type: spec.kubernetes.type } };
  if (spec.vault) {
    const v = spec.vault;
    return {
      name,
      vault: {
        address: v.address,
        audience: list(v.audience) ?? [],
        ...(v.jwtAuthMethodPath ? { jwtAuthMethodPath: v.jwtAuthMethodPath } : {}),
        path: v.path,
        role: v.role,
        type: v.type,
      },
    };
  }
  if (spec.aws) {
    const a = spec.aws;
    const audience = list(a.audience);
    const claims = a.idTokenClaims && !Array.isArray(a.idTokenClaims) ? a.idTokenClaims : undefined;
    return {
      name,
      aws: {
        roleArn: a.roleArn,
        // `audience: []` in published examples means "the default".
        ...(audience?.length ? { audience } : {}),
        ...(a.lifetime ? { lifetime: a.lifetime } : {}),
        ...(claims && Object.keys(claims).length ? { idTokenClaims: claims } : {}),
        ...(a.idTokenLifetime ? { idTokenLifetime: a.idTokenLifetime } : {}),
      },
    };
  }
  const [type, body] = Object.entries(spec).find(([, v]) => v !== undefined)!;
  return { name, [type]: body } as CredentialSourceSpec;
}
