import { z } from 'zod';
import { envelope, workloadId } from './common.ts';

/** The older form of a binding, referenced from `egress[].credentialName`. */
export const workloadCredentialSpec = z.strictObject({
  workloadID: workloadId,
  credentialSource: z.string().min(1),
});

export const workloadCredentialSchema = envelope('WorkloadCredential', workloadCredentialSpec);
export type WorkloadCredential = z.output<typeof workloadCredentialSchema>;
