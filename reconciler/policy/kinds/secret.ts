import { z } from 'zod';
import { decodeSecretData, SECRET_DATA_PATTERN } from '../../encoding/base64.ts';
import { metadata } from './common.ts';

/**
 * A value as SOPS writes it once encrypted (getsops/sops aes/cipher.go: `ENC[AES256_GCM,data:…,iv:…,tag:…,
 * type:…]`), the whole value and nothing else, so a plaintext that merely starts with "ENC[" is not taken for
 * ciphertext.
 */
const SOPS_VALUE =
  /^ENC\[AES256_GCM,data:[A-Za-z0-9+/]*={0,2},iv:[A-Za-z0-9+/]+={0,2},tag:[A-Za-z0-9+/]+={0,2},type:(str|int|float|bool|bytes|comment)\]$/;

export function isSopsEncrypted(value: unknown): boolean {
  return typeof value === 'string' && SOPS_VALUE.test(value);
}

/**
 * v1 Secret: only a reference target. Values are never read into diagnostics or output. A `data` value must be
 * base64 as the Kubernetes API server decodes it (standard alphabet, padded), or SOPS ciphertext when the
 * Secret carries a `sops` envelope.
 */
export const secretSchema = z
  .strictObject({
    apiVersion: z.literal('v1'),
    kind: z.literal('Secret'),
    metadata,
    type: z.string().optional(),
    immutable: z.boolean().optional(),
    // Checked in full below; the pattern says the same to editors (base64, or SOPS ciphertext).
    data: z
      .record(
        z.string(),
        z.string().meta({ anyOf: [{ pattern: SECRET_DATA_PATTERN }, { pattern: SOPS_VALUE.source }] }),
      )
      .optional(),
    stringData: z.record(z.string(), z.string()).optional(),
    // SOPS-encrypted Secrets carry their envelope here; their values are ciphertext (checked in validation).
    sops: z.record(z.string(), z.unknown()).optional(),
  })
  .superRefine((secret, ctx) => {
    for (const [key, value] of Object.entries(secret.data ?? {})) {
      if (secret.sops && isSopsEncrypted(value)) continue;
      const decoded = decodeSecretData(value);
      if (decoded.ok) continue;
      ctx.addIssue({
        code: 'custom',
        path: ['data', key],
        message: `is not valid base64 (${decoded.message}), and the Kubernetes API server refuses such a Secret`,
        params: {
          rt: 'RT023',
          hint: isSopsEncrypted(value)
            ? 'the value is SOPS ciphertext but the Secret has no sops envelope: commit the file sops wrote, whole'
            : 'data values are base64 (standard alphabet, padded with "="); put plain text under stringData instead',
        },
      });
    }
  });

export type Secret = z.output<typeof secretSchema>;
