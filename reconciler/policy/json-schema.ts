/**
 * JSON Schemas (draft-07) of every kind, generated from the same zod schemas that validate, for editors
 * (yaml-language-server). They carry what JSON Schema can say of the validator's own rules: the role ARN and
 * STS lifetime patterns, workload ID paths, Secret data as base64 or SOPS ciphertext, exactly one scope and
 * exactly one credential provider (`oneOf` of `required`). Cross-resource rules (references, duplicates) are
 * beyond a schema; `riptides-cli validate` checks them.
 */
import { z } from 'zod';
import { KINDS, UNMANAGED_KINDS } from './kinds/index.ts';

/** Keywords that apply to one JSON type only (draft-07 §6): other types pass them without looking. */
const TYPE_SPECIFIC = new Set([
  'pattern',
  'minLength',
  'maxLength',
  'format',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'items',
  'minItems',
  'maxItems',
  'uniqueItems',
  'properties',
  'required',
  'additionalProperties',
  'propertyNames',
]);

/**
 * `anyOf` of branches that differ only by type (zod's nullable and scalar-or-list unions) as one schema with a
 * list of types: the same meaning, since the other keywords apply to their own type only, but an editor
 * then names the one failing check (a pattern, a type) instead of "must match a schema in anyOf".
 */
function mergeTypeUnions(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(mergeTypeUnions);
  if (!node || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) out[k] = mergeTypeUnions(v);
  const branches = out.anyOf as Array<Record<string, unknown>> | undefined;
  if (!Array.isArray(branches)) return out;
  const types = branches.map((b) => b.type);
  const mergeable =
    types.every((t) => typeof t === 'string') &&
    new Set(types).size === types.length &&
    branches.every((b) => Object.keys(b).every((k) => k === 'type' || TYPE_SPECIFIC.has(k))) &&
    // Two branches must not set one keyword (it would apply to both types).
    new Set(branches.flatMap((b) => Object.keys(b).filter((k) => k !== 'type'))).size ===
      branches.reduce((n, b) => n + Object.keys(b).length - 1, 0);
  if (!mergeable) return out;
  const { anyOf: _, ...rest } = out;
  return Object.assign(rest, ...branches, { type: types });
}

export function kindJsonSchemas(): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const [name, def] of Object.entries(KINDS)) {
    const schema = z.toJSONSchema(def.schema, { target: 'draft-7', unrepresentable: 'any', io: 'input' });
    out[name] = {
      ...(mergeTypeUnions(schema) as Record<string, unknown>),
      title: `${name} (${def.apiVersion})`,
    };
  }
  return out;
}

/**
 * One self-contained schema for any policy document. It is discriminated on `kind` (one `if`/`then` per kind)
 * rather than an `anyOf` of the kinds, so a document is checked against its own kind only and one typo gives
 * one error, not one per kind. Control-plane kinds that validation ignores with a warning are accepted.
 */
export function combinedJsonSchema(): Record<string, unknown> {
  const definitions: Record<string, unknown> = {};
  for (const [kind, schema] of Object.entries(kindJsonSchemas())) {
    const { $schema: _, ...rest } = schema;
    definitions[kind] = rest;
  }
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'Riptides policy resource',
    type: 'object',
    required: ['kind'],
    properties: { kind: { enum: [...Object.keys(KINDS), ...UNMANAGED_KINDS] } },
    definitions,
    allOf: Object.keys(KINDS).map((kind) => ({
      if: { properties: { kind: { const: kind } }, required: ['kind'] },
      // biome-ignore lint/suspicious/noThenProperty: the JSON Schema keyword, in plain data never awaited
      then: { $ref: `#/definitions/${kind}` },
    })),
  };
}
