import type { z } from 'zod';
import { API_VERSION } from './common.ts';
import { type CredentialBinding, credentialBindingSchema } from './credential-binding.ts';
import { type CredentialSource, credentialSourceSchema } from './credential-source.ts';
import { type Secret, secretSchema } from './secret.ts';
import { type Service, serviceSchema } from './service.ts';
import { type WorkloadCredential, workloadCredentialSchema } from './workload-credential.ts';
import { type WorkloadIdentity, workloadIdentitySchema } from './workload-identity.ts';

export { API_VERSION, DEFAULT_NAMESPACE } from './common.ts';
export type { CredentialBinding } from './credential-binding.ts';
export type { CredentialSource, CredentialSourceSpec, SourceType } from './credential-source.ts';
export { SUPPORTED_SOURCE_TYPES, sourceType, UNSUPPORTED_SOURCE_TYPES } from './credential-source.ts';
export type { Secret } from './secret.ts';
export { isSopsEncrypted } from './secret.ts';
export type { Service, ServiceAddress } from './service.ts';
export type { WorkloadCredential } from './workload-credential.ts';
export type { EgressRule, WorkloadIdentity, WorkloadIdentitySpec } from './workload-identity.ts';

export interface KindDefinition {
  kind: string;
  apiVersion: string;
  schema: z.ZodType;
}

export const KINDS = {
  WorkloadIdentity: { kind: 'WorkloadIdentity', apiVersion: API_VERSION, schema: workloadIdentitySchema },
  Service: { kind: 'Service', apiVersion: API_VERSION, schema: serviceSchema },
  CredentialSource: { kind: 'CredentialSource', apiVersion: API_VERSION, schema: credentialSourceSchema },
  CredentialBinding: { kind: 'CredentialBinding', apiVersion: API_VERSION, schema: credentialBindingSchema },
  WorkloadCredential: {
    kind: 'WorkloadCredential',
    apiVersion: API_VERSION,
    schema: workloadCredentialSchema,
  },
  Secret: { kind: 'Secret', apiVersion: 'v1', schema: secretSchema },
} as const satisfies Record<string, KindDefinition>;

export type KindName = keyof typeof KINDS;

/** Riptides kinds that live in the control plane but are not reconciled from git: ignored with a warning. */
export const UNMANAGED_KINDS = ['Daemon', 'Verifier', 'JoinToken', 'IdentityProvider', 'Claim'] as const;

export type Resource =
  | WorkloadIdentity
  | Service
  | CredentialSource
  | CredentialBinding
  | WorkloadCredential
  | Secret;
