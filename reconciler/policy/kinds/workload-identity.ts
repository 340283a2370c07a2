import { z } from 'zod';
import {
  connection,
  duration,
  envelope,
  labelSelector,
  processSelector,
  withExactlyOne,
  workloadId,
} from './common.ts';

const scopeTarget = z.strictObject({ id: z.string().min(1, { error: 'must not be empty' }) });

/** Which nodes serve the identity: a daemon group, one daemon, or (older manifests) one agent. */
const scope = withExactlyOne(
  z.strictObject({
    daemonGroup: scopeTarget.optional(),
    daemon: scopeTarget.optional(),
    agent: scopeTarget.optional(),
  }),
  ['daemonGroup', 'daemon', 'agent'],
  'scope',
);

const egressRule = z.strictObject({
  selectors: z.array(labelSelector).min(1, { error: 'an egress rule needs at least one service selector' }),
  workloadID: workloadId.optional(),
  credentialName: z.string().optional(),
  connection: connection.optional(),
  allowedSPIFFEIDs: z.array(z.string()).optional(),
});

const dnsName = z
  .string()
  .regex(/^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i, {
    error: 'must be a DNS name',
  });

export const workloadIdentitySpec = z.strictObject({
  workloadID: workloadId,
  scope,
  selectors: z.array(processSelector).min(1, { error: 'an identity needs at least one selector' }),
  connection: connection.optional(),
  allowedSPIFFEIDs: z
    .strictObject({
      inbound: z.array(z.string()).optional(),
      outbound: z.array(z.string()).optional(),
    })
    .optional(),
  egress: z.array(egressRule).optional(),
  svid: z
    .strictObject({
      x509: z.strictObject({ dnsNames: z.array(dnsName).optional(), ttl: duration.optional() }).optional(),
    })
    .optional(),
});

export const workloadIdentitySchema = envelope('WorkloadIdentity', workloadIdentitySpec);
export type WorkloadIdentity = z.output<typeof workloadIdentitySchema>;
export type WorkloadIdentitySpec = z.output<typeof workloadIdentitySpec>;
export type EgressRule = z.output<typeof egressRule>;
