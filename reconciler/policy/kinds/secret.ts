import { z } from 'zod';
import { metadata } from './common.ts';

/** v1 Secret: only a reference target. Values are never read into diagnostics or output. */
export const secretSchema = z.strictObject({
  apiVersion: z.literal('v1'),
  kind: z.literal('Secret'),
  metadata,
  type: z.string().optional(),
  immutable: z.boolean().optional(),
  data: z.record(z.string(), z.string()).optional(),
  stringData: z.record(z.string(), z.string()).optional(),
  // SOPS-encrypted Secrets carry their envelope here; their values are ciphertext, not plaintext.
  sops: z.record(z.string(), z.unknown()).optional(),
});

export type Secret = z.output<typeof secretSchema>;
