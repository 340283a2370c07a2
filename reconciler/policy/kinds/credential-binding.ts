import { z } from 'zod';
import { envelope, labelSelector, workloadId } from './common.ts';

export const credentialBindingSpec = z.strictObject({
  workloadID: workloadId,
  credentialSource: z.string().min(1),
  propagation: z
    .strictObject({
      injection: z
        .strictObject({
          selectors: z
            .array(labelSelector)
            .min(1, { error: 'injection needs at least one service selector' }),
        })
        .optional(),
      // `sysfs: {}` switches file delivery on; it has no settings of its own.
      sysfs: z.strictObject({}).nullable().optional(),
    })
    .refine((p) => p.injection !== undefined || p.sysfs !== undefined, {
      error: 'propagation needs injection, sysfs, or both',
      params: { rt: 'RT024' },
    }),
});

export const credentialBindingSchema = envelope('CredentialBinding', credentialBindingSpec);
export type CredentialBinding = z.output<typeof credentialBindingSchema>;
