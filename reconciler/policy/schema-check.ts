/** Turns zod's issues into diagnostics that name the field, say what was expected, and suggest a fix. */
import type { z } from 'zod';
import { type Code, type NodePath, type PendingDiagnostic, pending } from './diagnostics.ts';
import { describeType, formatPath, valueAt } from './field-path.ts';
import { didYouMean } from './suggest.ts';

interface ZodDef {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  valueType?: z.ZodType;
  in?: z.ZodType;
}

function def(schema: z.ZodType): ZodDef {
  return (schema as unknown as { _zod: { def: ZodDef } })._zod.def;
}

/** The object shapes reachable at `path` inside `schema`, for "did you mean" on unknown keys. */
function shapesAt(schema: z.ZodType, path: NodePath): Record<string, z.ZodType>[] {
  const d = def(schema);
  switch (d.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'readonly':
      return shapesAt(d.innerType!, path);
    case 'pipe':
      return shapesAt(d.in!, path);
    case 'union':
      return d.options!.flatMap((o) => shapesAt(o, path));
    case 'array':
      return path.length && typeof path[0] === 'number' ? shapesAt(d.element!, path.slice(1)) : [];
    case 'record':
      return path.length ? shapesAt(d.valueType!, path.slice(1)) : [];
    case 'object': {
      if (path.length === 0) return [d.shape!];
      const child = d.shape![String(path[0])];
      return child ? shapesAt(child, path.slice(1)) : [];
    }
    default:
      return [];
  }
}

function describeExpected(expected: string): string {
  switch (expected) {
    case 'object':
      return 'a map';
    case 'array':
      return 'a list';
    case 'int':
      return 'an integer';
    case 'number':
      return 'a number';
    case 'boolean':
      return 'a boolean (true or false)';
    case 'string':
      return 'a string';
    default:
      return expected;
  }
}

/** Fields that published examples show at an ambiguous depth: say where they belong. */
function misplacedHint(path: NodePath): string | undefined {
  const field = formatPath(path);
  if (/^spec\.egress\[\d+\]\.connection\.tls\.allowedSPIFFEIDs$/.test(field)) {
    return 'allowedSPIFFEIDs belongs to the egress rule itself, next to "selectors" and "connection"';
  }
  return undefined;
}

export interface SchemaCheckContext {
  file: string;
  doc: number;
  resource?: string;
}

export function issuesToDiagnostics(
  schema: z.ZodType,
  raw: unknown,
  issues: readonly z.core.$ZodIssue[],
  ctx: SchemaCheckContext,
): PendingDiagnostic[] {
  const out: PendingDiagnostic[] = [];
  const at = (code: Code, message: string, path: NodePath, where: 'key' | 'value', hint?: string) =>
    out.push(
      pending(code, message, {
        file: ctx.file,
        doc: ctx.doc,
        path,
        at: where,
        ...(ctx.resource ? { resource: ctx.resource } : {}),
        ...(hint ? { hint } : {}),
      }),
    );
  for (const issue of issues) {
    const path = issue.path as (string | number)[];
    // YAML merge keys are reported once, where they stand (resources.ts), not again as what they break.
    if (path.includes('<<')) continue;
    const field = formatPath(path);
    switch (issue.code) {
      case 'unrecognized_keys': {
        const known = shapesAt(schema, path).flatMap((s) => Object.keys(s));
        for (const key of issue.keys) {
          if (key === '<<') continue;
          const fullPath = [...path, key];
          const suggestion = misplacedHint(fullPath) ?? didYouMean(key, known);
          at(
            'RT020',
            `unknown field "${formatPath(fullPath)}"`,
            fullPath,
            'key',
            suggestion ?? (known.length ? `known fields here: ${known.join(', ')}` : undefined),
          );
        }
        break;
      }
      case 'invalid_type': {
        const value = valueAt(raw, path);
        if (value === undefined) {
          at('RT021', `missing required field "${field}"`, path.slice(0, -1), 'key', `add "${path.at(-1)}"`);
        } else {
          at(
            'RT022',
            `"${field}" must be ${describeExpected(issue.expected)}, not ${describeType(value)}`,
            path,
            'value',
          );
        }
        break;
      }
      case 'invalid_value': {
        const value = valueAt(raw, path);
        const allowed = issue.values.map(String);
        const suggestion = typeof value === 'string' ? didYouMean(value, allowed) : undefined;
        at(
          'RT023',
          allowed.length === 1
            ? `"${field}" must be "${allowed[0]}"`
            : `"${field}" must be one of ${allowed.join(', ')}${value !== undefined ? ` (got ${JSON.stringify(value)})` : ''}`,
          path,
          'value',
          suggestion,
        );
        break;
      }
      case 'custom': {
        const params = issue.params as { rt?: Code; hint?: string } | undefined;
        at(
          params?.rt ?? 'RT023',
          `"${field}": ${issue.message}`,
          path,
          path.length ? 'key' : 'value',
          params?.hint,
        );
        break;
      }
      case 'invalid_union': {
        at('RT022', `"${field}": ${issue.message}`, path, 'value');
        break;
      }
      default:
        at('RT023', `"${field}" ${issue.message}`, path, 'value');
    }
  }
  return out;
}
