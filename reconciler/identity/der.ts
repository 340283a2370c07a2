/**
 * A minimal DER (ASN.1) encoder and reader over Buffers: just the types X.509 certificates and PKCS#10
 * requests use. Written by hand rather than through node-forge's binary-string ASN.1 because certificate
 * issuance is a hot path (thousands per second) and forge's X.509 layer does not support EC keys anyway.
 */

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

function lengthBytes(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, content: Buffer | readonly Buffer[]): Buffer {
  const body = Buffer.isBuffer(content) ? content : Buffer.concat(content as Buffer[]);
  return Buffer.concat([Buffer.from([tag]), lengthBytes(body.length), body]);
}

export const seq = (...items: Buffer[]): Buffer => tlv(TAG.SEQUENCE, items);
export const set = (...items: Buffer[]): Buffer => tlv(TAG.SET, items);
export const nullValue = (): Buffer => Buffer.from([TAG.NULL, 0]);
export const bool = (value: boolean): Buffer => Buffer.from([TAG.BOOLEAN, 1, value ? 0xff : 0]);
export const octetString = (bytes: Buffer): Buffer => tlv(TAG.OCTET_STRING, bytes);
export const bitString = (bytes: Buffer, unusedBits = 0): Buffer =>
  tlv(TAG.BIT_STRING, [Buffer.from([unusedBits]), bytes]);
/** Context-specific constructed tag [n] (EXPLICIT wrapping). */
export const explicit = (n: number, content: Buffer): Buffer => tlv(0xa0 | n, content);

/** A non-negative INTEGER from big-endian magnitude bytes, minimally encoded. */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const needsPad = trimmed.length === 0 || (trimmed[0]! & 0x80) !== 0;
  return tlv(TAG.INTEGER, needsPad ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
}

export const smallInteger = (value: number): Buffer => unsignedInteger(Buffer.from([value & 0xff]));

const oidCache = new Map<string, Buffer>();

export function oid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const parts = dotted.split('.').map(Number);
  const bytes: number[] = [];
  // The first two arcs share one subidentifier, which is base-128 like the rest (2.999 takes two bytes).
  for (const part of [40 * parts[0]! + parts[1]!, ...parts.slice(2)]) {
    const chunk: number[] = [part & 0x7f];
    for (let n = Math.floor(part / 128); n > 0; n = Math.floor(n / 128)) chunk.unshift((n & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  const encoded = tlv(TAG.OID, Buffer.from(bytes));
  oidCache.set(dotted, encoded);
  return encoded;
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; always seconds and Z. */
export function time(date: Date): Buffer {
  const y = date.getUTCFullYear();
  const rest =
    pad2(date.getUTCMonth() + 1) +
    pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) +
    pad2(date.getUTCMinutes()) +
    pad2(date.getUTCSeconds()) +
    'Z';
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(pad2(y % 100) + rest, 'ascii'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(String(y).padStart(4, '0') + rest, 'ascii'));
}

export const utf8String = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));

// ---------------------------------------------------------------------------------------------------------
// Reading

export interface Node {
  tag: number;
  /** The whole TLV, header included. */
  raw: Buffer;
  /** The content octets. */
  content: Buffer;
}

export class DerError extends Error {}

/**
 * Reads one TLV at `offset`, strictly as DER (X.690 §10, as Go's cryptobyte does): single-byte tags only,
 * definite lengths only, and every length in its shortest form (a long form only for lengths ≥ 128, with no
 * leading zero byte).
 */
export function readNode(buf: Buffer, offset = 0): Node {
  if (offset + 2 > buf.length) throw new DerError('truncated DER: header runs past the end');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError('unsupported DER: multi-byte tag');
  let length = buf[offset + 1]!;
  let headerLength = 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new DerError('invalid DER: indefinite or oversized length');
    if (offset + 2 + count > buf.length) throw new DerError('truncated DER: length runs past the end');
    if (buf[offset + 2] === 0) throw new DerError('invalid DER: non-minimal length (leading zero byte)');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buf[offset + 2 + i]!;
    if (length < 0x80) throw new DerError('invalid DER: non-minimal length');
    headerLength += count;
  }
  const end = offset + headerLength + length;
  if (end > buf.length) throw new DerError('truncated DER: content runs past the end');
  return { tag, raw: buf.subarray(offset, end), content: buf.subarray(offset + headerLength, end) };
}

/** Reads exactly one TLV spanning the whole buffer. */
export function readOne(buf: Buffer): Node {
  const node = readNode(buf, 0);
  if (node.raw.length !== buf.length) throw new DerError('invalid DER: trailing bytes after the structure');
  return node;
}

export function children(node: Node): Node[] {
  const out: Node[] = [];
  for (let offset = 0; offset < node.content.length; ) {
    const child = readNode(node.content, offset);
    out.push(child);
    offset += child.raw.length;
  }
  return out;
}

export function expectTag(node: Node | undefined, tag: number, what: string): Node {
  if (!node || node.tag !== tag)
    throw new DerError(`invalid DER: expected ${what} (tag 0x${tag.toString(16)})`);
  return node;
}

/** The children of `node`, which must number between `min` and `max`. */
export function childrenCount(node: Node, min: number, max: number, what: string): Node[] {
  const list = children(node);
  if (list.length < min || list.length > max)
    throw new DerError(
      `invalid DER: ${what} has ${list.length} elements, expected ${min === max ? min : `${min} to ${max}`}`,
    );
  return list;
}

/**
 * OBJECT IDENTIFIER in dotted form. Refused: an empty value, an arc in non-minimal form (a leading 0x80
 * byte), a last arc cut off (its final byte still has the continuation bit), arcs beyond 2^53.
 */
export function readOid(node: Node): string {
  expectTag(node, TAG.OID, 'OBJECT IDENTIFIER');
  const bytes = node.content;
  if (bytes.length === 0) throw new DerError('invalid DER: empty OBJECT IDENTIFIER');
  if (bytes[bytes.length - 1]! & 0x80) throw new DerError('invalid DER: truncated OBJECT IDENTIFIER arc');
  const arcs: number[] = [];
  let value = 0;
  let start = true;
  for (const byte of bytes) {
    if (start && byte === 0x80) throw new DerError('invalid DER: non-minimal OBJECT IDENTIFIER arc');
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER) throw new DerError('invalid DER: OBJECT IDENTIFIER arc too large');
    start = !(byte & 0x80);
    if (start) {
      arcs.push(value);
      value = 0;
    }
  }
  const first = arcs[0]!;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

/** BOOLEAN as DER requires: one byte, 0x00 (FALSE) or 0xFF (TRUE). */
export function readBoolean(node: Node): boolean {
  expectTag(node, TAG.BOOLEAN, 'BOOLEAN');
  if (node.content.length !== 1 || (node.content[0] !== 0x00 && node.content[0] !== 0xff))
    throw new DerError('invalid DER: BOOLEAN must be one byte, 0x00 or 0xFF');
  return node.content[0] === 0xff;
}

/** Whether INTEGER content octets are minimal (X.690 §8.3.2: no redundant leading 0x00 or 0xFF). */
function minimalInteger(content: Buffer): boolean {
  if (content.length === 0) return false;
  if (content.length === 1) return true;
  const [a, b] = [content[0]!, content[1]!];
  return !((a === 0x00 && b < 0x80) || (a === 0xff && b >= 0x80));
}

/** A minimally encoded INTEGER's content octets; `nonNegative` refuses negative values. */
export function readIntegerBytes(node: Node, what: string, nonNegative = true): Buffer {
  expectTag(node, TAG.INTEGER, what);
  if (!minimalInteger(node.content)) throw new DerError(`invalid DER: ${what} is not a minimal INTEGER`);
  if (nonNegative && node.content[0]! & 0x80) throw new DerError(`invalid DER: ${what} is negative`);
  return node.content;
}

export function readSmallInteger(node: Node): number {
  const content = readIntegerBytes(node, 'INTEGER', false);
  if (content.length > 6) throw new DerError('INTEGER too large');
  return content.readIntBE(0, content.length);
}

/** BIT STRING content without the unused-bits byte; the unused bits (at most 7) must be zero, as DER requires. */
export function readBitString(node: Node): { bytes: Buffer; unusedBits: number } {
  expectTag(node, TAG.BIT_STRING, 'BIT STRING');
  if (node.content.length === 0) throw new DerError('invalid DER: empty BIT STRING');
  const unusedBits = node.content[0]!;
  const bytes = node.content.subarray(1);
  if (unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0))
    throw new DerError('invalid DER: BIT STRING unused-bits count out of range');
  if (unusedBits && bytes[bytes.length - 1]! & ((1 << unusedBits) - 1))
    throw new DerError('invalid DER: BIT STRING padding bits are not zero');
  return { bytes, unusedBits };
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/**
 * UTCTime (YYMMDDHHMMSSZ, years 1950–2049) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280 §4.1.2.5 fixes
 * them for DER: seconds present, no fraction, Zulu only; every field in range (no 30 February, no hour 24).
 */
export function readTime(node: Node): Date {
  const s = node.content.toString('latin1');
  const utc = node.tag === TAG.UTC_TIME ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : null;
  const generalized =
    node.tag === TAG.GENERALIZED_TIME ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : null;
  const match = utc ?? generalized;
  if (!match) throw new DerError(`invalid certificate time "${s.replace(/[^\x20-\x7e]/g, '?')}"`);
  const [year0, month, day, hour, minute, second] = match.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const year = utc ? year0 + (year0 >= 50 ? 1900 : 2000) : year0;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1];
  if (days === undefined || day < 1 || day > days || hour > 23 || minute > 59 || second > 59)
    throw new DerError(`invalid certificate time "${s}": a field is out of range`);
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second));
}
