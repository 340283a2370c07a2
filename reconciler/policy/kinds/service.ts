import { z } from 'zod';
import { envelope } from './common.ts';

const address = z.strictObject({
  address: z.string().min(1, { error: 'must not be empty' }),
  port: z
    .int()
    .min(1, { error: 'must be a port, 1..65535' })
    .max(65535, { error: 'must be a port, 1..65535' })
    .optional(),
  tags: z.array(z.string()).optional(),
  aliases: z.array(z.string()).optional(),
  networkNames: z.array(z.string()).optional(),
  networkPrefixes: z.array(z.string()).optional(),
});

export const serviceSpec = z.strictObject({
  addresses: z.array(address).optional(),
  tags: z.array(z.string()).optional(),
  external: z.boolean().nullable().optional(),
  tls: z.boolean().optional(),
  labels: z
    .record(z.string(), z.string({ error: 'label values are strings; quote numbers and booleans' }))
    .refine((m) => Object.keys(m).length > 0, {
      error: 'a Service needs at least one label to be selected by',
    }),
});

export const serviceSchema = envelope('Service', serviceSpec);
export type Service = z.output<typeof serviceSchema>;
export type ServiceAddress = z.output<typeof address>;
