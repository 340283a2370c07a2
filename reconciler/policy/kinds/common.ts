import { z } from 'zod';
import { DURATION_FORMS, DURATION_PATTERN } from '../../common/duration.ts';

export const API_VERSION = 'core.riptides.io/v1alpha1';
export const DEFAULT_NAMESPACE = 'riptides-system';

/** Kubernetes object names (DNS-1123 subdomain), as the control plane's API server enforces. */
export const objectName = z
  .string()
  .max(253, { error: 'must be at most 253 characters' })
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, {
    error:
      'must be a lowercase DNS-1123 name: letters, digits, "-" and ".", starting and ending alphanumeric',
  });

const namespaceName = z
  .string()
  .max(63, { error: 'must be at most 63 characters' })
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, { error: 'must be a lowercase DNS-1123 label' });

const stringMap = z.record(z.string(), z.string());

export const metadata = z.strictObject({
  name: objectName,
  namespace: namespaceName.optional(),
  labels: stringMap.optional(),
  annotations: stringMap.optional(),
});

/**
 * Durations in the one grammar (common/duration.ts): the resources' documented "3600s" form, and "15m",
 * "1h30m", "7d" as everywhere else in the product.
 */
export const duration = z
  .string()
  .regex(new RegExp(DURATION_PATTERN), { error: `must be ${DURATION_FORMS}` });

export const tlsMode = z.enum(['MUTUAL', 'PERMISSIVE', 'SIMPLE']);

export const tls = z.strictObject({
  mode: tlsMode.optional(),
  intercept: z.boolean().optional(),
});

export const connection = z.strictObject({ tls: tls.optional() });

/** Service label selectors: a map of label → value that must all match (AND). */
export const labelSelector = z
  .record(z.string(), z.string({ error: 'label values are strings; quote numbers and booleans' }))
  .refine((m) => Object.keys(m).length > 0, { error: 'a label selector needs at least one label' });

const scalarSelectorValue = z.union([z.string(), z.int()]);

/** A process selector value: a string, an integer, or a list of them (any of). */
export const selectorValue = z.union([scalarSelectorValue, z.array(scalarSelectorValue).min(1)], {
  error: 'selector values are a string, an integer, or a non-empty list of them',
});

export const processSelector = z
  .record(z.string(), selectorValue)
  .refine((m) => Object.keys(m).length > 0, { error: 'a selector needs at least one key' });

/** Set by the control plane, never by git: accepted so that exported objects load, then ignored. */
export const status = z.unknown().optional();

/**
 * A workload ID: a SPIFFE ID path without its leading "/" (segments of letters, digits, ".", "-", "_"; none
 * empty, "." or ".."). Validation checks it in full (resource-checks.ts); the pattern carries the same rule
 * into the JSON Schema for editors.
 */
export const workloadId = z.string().meta({
  pattern: '^(?!\\.\\.?(?:/|$))(?!.*/\\.\\.?(?:/|$))[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$',
});

/**
 * `schema` with an exactly-one-of check over `keys` (RT024 with a message naming them), stated in its JSON
 * Schema as `oneOf` of `required` so that editors say the same.
 */
export function withExactlyOne<T extends z.ZodObject>(schema: T, keys: readonly string[], what: string) {
  return schema.superRefine(exactlyOne(keys, what)).meta({ oneOf: keys.map((k) => ({ required: [k] })) });
}

/** An exactly-one-of check over the given keys of an object schema's value. */
function exactlyOne(keys: readonly string[], what: string) {
  return (value: Record<string, unknown>, ctx: z.RefinementCtx) => {
    const present = keys.filter((k) => value[k] !== undefined);
    if (present.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          present.length === 0
            ? `${what} needs exactly one of ${keys.join(', ')}`
            : `${what} has ${present.join(' and ')}; exactly one of ${keys.join(', ')} is allowed`,
        params: { rt: 'RT024' },
      });
    }
  };
}

export function envelope<K extends string, S extends z.ZodType>(kind: K, spec: S) {
  return z.strictObject({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal(kind),
    metadata,
    spec,
    status,
  });
}
