/**
 * YAML reading on the fast path: js-yaml 5's event parser (offsets into the source, no node objects) and its
 * constructor. Aliases are measured on the event stream before anything is built, so an alias bomb is refused
 * in time linear to the file. Positions are recovered from the same events only when a diagnostic needs one.
 */
import {
  constructFromEvents,
  EVENT_ID,
  type Event,
  getScalarValue,
  parseEvents,
  YAMLException,
} from 'js-yaml';
import type { NodePath } from './diagnostics.ts';

export interface ParsedYaml {
  documents: unknown[];
}

export class YamlReadError extends Error {
  constructor(
    message: string,
    readonly offset: number,
    readonly kind: 'syntax' | 'alias-bomb' | 'too-deep',
  ) {
    super(message);
  }
}

/** Nodes that aliases may add on top of the file's own nodes before we call it an alias bomb. */
const ALIAS_EXPANSION_ALLOWANCE = 10_000;
const MAX_DEPTH = 64;

/** What to say of text YAML read as a tag or an alias: the usual cause is a value that needs quotes. */
const QUOTE_IT = 'quote the value if it is meant as text';

/**
 * js-yaml's reasons that quote the source, in words that do not: a tag or alias name is whatever follows
 * "!" or "*", and in a Secret that is the value itself (`password: !Xk9…` reads as a tag, `token: *Qm…` as
 * an alias). The position still says where; the value never reaches a diagnostic, a log or a report.
 */
const SOURCE_QUOTING_REASONS: ReadonlyArray<[RegExp, string]> = [
  [
    /^unknown (scalar|sequence|mapping) tag /,
    `unknown YAML tag: a value that starts with "!" is read as a tag; ${QUOTE_IT}`,
  ],
  [
    /^cannot resolve a node with .* explicit tag$/,
    'the value does not fit its explicit YAML tag (a "!!type" before it)',
  ],
  [
    /^unidentified alias /,
    `unknown YAML alias: a value that starts with "*" is read as an alias; ${QUOTE_IT}`,
  ],
  [/^recursive alias /, 'a YAML alias refers to the node that contains it'],
  [
    /^tag name cannot contain such characters/,
    `invalid YAML tag: a value that starts with "!" is read as a tag; ${QUOTE_IT}`,
  ],
  [
    /^undeclared tag handle /,
    `undeclared YAML tag handle: a value that starts with "!" is read as a tag; ${QUOTE_IT}`,
  ],
  [/^there is a previously declared suffix for .* tag handle$/, 'a %TAG directive declares a handle twice'],
];

/** A parser reason as it may be shown: never a fragment of the source (see SOURCE_QUOTING_REASONS). */
export function yamlReason(reason: string): string {
  for (const [pattern, said] of SOURCE_QUOTING_REASONS) if (pattern.test(reason)) return said;
  return reason;
}

function parseToEvents(source: string): Event[] {
  try {
    return parseEvents(source, { maxDepth: MAX_DEPTH });
  } catch (err) {
    if (err instanceof YAMLException) {
      const reason = yamlReason(err.reason ?? 'YAML syntax error');
      const kind = /depth/i.test(reason) ? 'too-deep' : 'syntax';
      return throwRead(reason, err.mark?.position ?? 0, kind);
    }
    if (err instanceof RangeError) return throwRead('YAML nesting is too deep to read', 0, 'too-deep');
    throw err;
  }
}

function throwRead(message: string, offset: number, kind: YamlReadError['kind']): never {
  throw new YamlReadError(message, offset, kind);
}

/**
 * Counts how many nodes the documents would hold with every alias expanded, without expanding anything:
 * each anchored node's expanded size is remembered, and an alias adds that size.
 */
function checkAliasExpansion(source: string, events: Event[]): void {
  let hasAlias = false;
  for (const e of events) {
    if (e.type === EVENT_ID.ALIAS) {
      hasAlias = true;
      break;
    }
  }
  if (!hasAlias) return;
  const anchorSize = new Map<string, number>();
  // Stack of [size so far, anchor name] for the open collections.
  const stack: Array<{ size: number; anchor: string | null }> = [];
  let total = 0;
  const limit = events.length + ALIAS_EXPANSION_ALLOWANCE;
  const add = (n: number) => {
    total += n;
    const top = stack[stack.length - 1];
    if (top) top.size += n;
  };
  for (const e of events) {
    switch (e.type) {
      case EVENT_ID.MAPPING:
      case EVENT_ID.SEQUENCE:
        stack.push({ size: 1, anchor: e.anchorStart >= 0 ? source.slice(e.anchorStart, e.anchorEnd) : null });
        break;
      case EVENT_ID.SCALAR:
        add(1);
        if (e.anchorStart >= 0) anchorSize.set(source.slice(e.anchorStart, e.anchorEnd), 1);
        break;
      case EVENT_ID.ALIAS: {
        const name = source.slice(e.anchorStart, e.anchorEnd);
        add(anchorSize.get(name) ?? 1);
        if (total > limit) {
          throwRead(
            `YAML aliases expand to more than ${limit} nodes: refusing a possible alias bomb ("billion laughs")`,
            e.anchorStart - 1,
            'alias-bomb',
          );
        }
        break;
      }
      case EVENT_ID.POP: {
        const closed = stack.pop();
        if (closed) {
          total += 1;
          if (closed.anchor !== null) anchorSize.set(closed.anchor, closed.size);
          const parent = stack[stack.length - 1];
          if (parent) parent.size += closed.size;
        }
        break;
      }
      default:
        break;
    }
  }
}

export function readYaml(source: string, filename: string): ParsedYaml {
  const events = parseToEvents(source);
  checkAliasExpansion(source, events);
  try {
    return { documents: constructFromEvents(events, { source, filename }) };
  } catch (err) {
    if (err instanceof YAMLException)
      return throwRead(yamlReason(err.reason ?? 'YAML syntax error'), err.mark?.position ?? 0, 'syntax');
    throw err;
  }
}

/** Offsets of line starts, for offset → line:column. */
export function lineStarts(source: string): number[] {
  const starts = [0];
  for (let i = source.indexOf('\n'); i !== -1; i = source.indexOf('\n', i + 1)) starts.push(i + 1);
  return starts;
}

export function offsetToPosition(starts: number[], offset: number): { line: number; column: number } {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= offset) lo = mid;
    else hi = mid - 1;
  }
  return { line: lo + 1, column: offset - starts[lo]! + 1 };
}

function nodeOffset(e: Event): number {
  switch (e.type) {
    case EVENT_ID.SCALAR:
      // Quoted scalars start at their opening quote, one before the value.
      return e.style === 2 || e.style === 3 ? e.valueStart - 1 : e.valueStart;
    case EVENT_ID.MAPPING:
    case EVENT_ID.SEQUENCE:
      return e.anchorStart >= 0 ? e.anchorStart - 1 : e.start;
    case EVENT_ID.ALIAS:
      return e.anchorStart - 1;
    default:
      return 0;
  }
}

/**
 * The events of one file with, computed in one pass, where each document starts and where each collection
 * ends: locating a node is then a walk down its path that skips whole siblings in O(1), whatever the number
 * of documents before it (a file of 80,000 documents is indexed once, not once per diagnostic).
 */
interface IndexedEvents {
  events: Event[];
  /** Event index of each DOCUMENT event, in order. */
  documents: number[];
  /** For a DOCUMENT, MAPPING or SEQUENCE event at i: the index just past its POP. */
  end: Int32Array;
}

function indexEvents(events: Event[]): IndexedEvents {
  const documents: number[] = [];
  const end = new Int32Array(events.length);
  const open: number[] = [];
  for (let i = 0; i < events.length; i++) {
    const t = events[i]!.type;
    if (t === EVENT_ID.DOCUMENT) documents.push(i);
    if (t === EVENT_ID.DOCUMENT || t === EVENT_ID.MAPPING || t === EVENT_ID.SEQUENCE) open.push(i);
    else if (t === EVENT_ID.POP) {
      const opener = open.pop();
      if (opener !== undefined) end[opener] = i + 1;
    }
  }
  // Unclosed openers (cannot happen for a stream that parsed) end with the stream.
  for (const i of open) end[i] = events.length;
  return { events, documents, end };
}

/** Index just past the node that starts at events[i]. */
function skipNode(ix: IndexedEvents, i: number): number {
  const t = ix.events[i]!.type;
  return t === EVENT_ID.MAPPING || t === EVENT_ID.SEQUENCE ? ix.end[i]! : i + 1;
}

/**
 * Returns a function giving the source offset of the node at `path` in document `doc` (or of the deepest node
 * on the way that exists); with at='key' and a path ending in a mapping key, the key itself. The file is
 * parsed and indexed once per locator; each lookup then costs the length of its path times the siblings it
 * passes, never the size of the file.
 */
export function createLocator(source: string): (doc: number, path: NodePath, at?: 'key' | 'value') => number {
  let events: Event[] = [];
  try {
    events = parseEvents(source, { maxDepth: MAX_DEPTH });
  } catch {
    // A file that fails to parse carries absolute positions already.
  }
  const ix = indexEvents(events);
  return (doc, path, at = 'value') => locateIn(ix, doc, path, at, source);
}

function locateIn(
  ix: IndexedEvents,
  doc: number,
  path: NodePath,
  at: 'key' | 'value',
  source: string,
): number {
  const { events } = ix;
  const start = ix.documents[doc];
  if (start === undefined) return 0;
  let node = start + 1;
  if (node >= events.length || events[node]!.type === EVENT_ID.POP) return 0;
  for (let p = 0; p < path.length; p++) {
    const seg = path[p]!;
    const e = events[node]!;
    let next = -1;
    let keyIndex = -1;
    if (e.type === EVENT_ID.MAPPING) {
      for (let j = node + 1; j < events.length && events[j]!.type !== EVENT_ID.POP; ) {
        const keyEvent = events[j]!;
        const valueIndex = skipNode(ix, j);
        if (keyEvent.type === EVENT_ID.SCALAR && getScalarValue(source, keyEvent) === String(seg)) {
          keyIndex = j;
          next = valueIndex;
          break;
        }
        j = skipNode(ix, valueIndex);
      }
    } else if (e.type === EVENT_ID.SEQUENCE && typeof seg === 'number') {
      let j = node + 1;
      for (let k = 0; k < seg && j < events.length && events[j]!.type !== EVENT_ID.POP; k++)
        j = skipNode(ix, j);
      if (j < events.length && events[j]!.type !== EVENT_ID.POP) next = j;
    }
    if (next === -1) return nodeOffset(events[node]!);
    if (p === path.length - 1 && at === 'key' && keyIndex !== -1) return nodeOffset(events[keyIndex]!);
    node = next;
  }
  return nodeOffset(events[node]!);
}
