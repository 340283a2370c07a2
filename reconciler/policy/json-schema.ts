/** JSON Schemas of every kind, generated from the same zod schemas that validate, for editors. */
import { z } from 'zod';
import { KINDS } from './kinds/index.ts';

export function kindJsonSchemas(): Record<string, object> {
  const out: Record<string, object> = {};
  for (const [name, def] of Object.entries(KINDS)) {
    out[name] = {
      ...z.toJSONSchema(def.schema, { target: 'draft-7', unrepresentable: 'any', io: 'input' }),
      title: `${name} (${def.apiVersion})`,
    };
  }
  return out;
}

/** One schema for a whole policy file: any of the kinds, told apart by `kind`. */
export function combinedJsonSchema(fileFor: (kind: string) => string): object {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'Riptides policy resource',
    anyOf: Object.keys(KINDS).map((kind) => ({ $ref: fileFor(kind) })),
  };
}
