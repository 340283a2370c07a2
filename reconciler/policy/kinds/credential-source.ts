import { z } from 'zod';
import { ROLE_ARN, STS_LIFETIME_PATTERN } from '../field-rules.ts';
import { duration, envelope, withExactlyOne } from './common.ts';

const kubernetes = z.strictObject({
  secretRef: z.strictObject({ name: z.string().min(1), key: z.string().min(1) }),
  type: z.literal('BearerToken', { error: 'the only kubernetes credential type is "BearerToken"' }),
});

/** One audience or a list of them; both spellings appear in the wild. */
const audiences = z.union([z.string(), z.array(z.string())], {
  error: 'must be a string or a list of strings',
});

const vault = z.strictObject({
  address: z.string(),
  audience: audiences.optional(),
  jwtAuthMethodPath: z.string().min(1).optional(),
  path: z.string().min(1),
  role: z.string().min(1),
  type: z.strictObject({ token: z.strictObject({ source: z.string().min(1) }) }),
});

/** `idTokenClaims: []` appears in published examples to mean "none"; accept it as an empty map. */
const claims = z.union([z.record(z.string(), z.unknown()), z.array(z.never()).max(0)], {
  error: 'must be a map of claim names to values',
});

// The ARN and lifetime rules are checked in validation (RT033, RT032: resource-checks.ts); their patterns carry
// the same rules into the JSON Schema for editors.
const aws = z.strictObject({
  roleArn: z.string().meta({ pattern: ROLE_ARN.source }),
  audience: audiences.optional(),
  lifetime: duration.meta({ pattern: STS_LIFETIME_PATTERN }).nullable().optional(),
  idTokenClaims: claims.nullable().optional(),
  idTokenLifetime: duration.meta({ pattern: '^0*[1-9]\\d*s$' }).nullable().optional(),
});

const gcp = z.strictObject({
  oidcProviderId: z.string().min(1),
  serviceAccount: z.string().optional(),
  scopes: z.array(z.string()).optional(),
  lifetime: duration.nullable().optional(),
  audience: audiences.optional(),
  idTokenLifetime: duration.nullable().optional(),
  idTokenClaims: claims.nullable().optional(),
});

/** Providers whose field tables are not public: parsed loosely, reported as not yet supported. */
const opaqueProvider = z.record(z.string(), z.unknown());

export const SUPPORTED_SOURCE_TYPES = ['kubernetes', 'vault', 'aws'] as const;
export const UNSUPPORTED_SOURCE_TYPES = ['gcp', 'azure', 'oauth2', 'oci', 'rfc7523', 'rfc8693'] as const;
/** The unsupported providers parsed as opaque maps: any of their values may be a secret (secret-fields.ts). */
export const OPAQUE_SOURCE_TYPES = ['azure', 'oauth2', 'oci', 'rfc7523', 'rfc8693'] as const;
export const SOURCE_TYPES = [...SUPPORTED_SOURCE_TYPES, ...UNSUPPORTED_SOURCE_TYPES] as const;
export type SourceType = (typeof SOURCE_TYPES)[number];

export const credentialSourceSpec = withExactlyOne(
  z.strictObject({
    kubernetes: kubernetes.optional(),
    vault: vault.optional(),
    aws: aws.optional(),
    gcp: gcp.optional(),
    ...(Object.fromEntries(OPAQUE_SOURCE_TYPES.map((t) => [t, opaqueProvider.optional()])) as Record<
      (typeof OPAQUE_SOURCE_TYPES)[number],
      z.ZodOptional<typeof opaqueProvider>
    >),
  }),
  SOURCE_TYPES,
  'a CredentialSource',
);

export const credentialSourceSchema = envelope('CredentialSource', credentialSourceSpec);
export type CredentialSource = z.output<typeof credentialSourceSchema>;
export type CredentialSourceSpec = z.output<typeof credentialSourceSpec>;

export function sourceType(spec: CredentialSourceSpec): SourceType {
  return SOURCE_TYPES.find((t) => spec[t] !== undefined)!;
}
