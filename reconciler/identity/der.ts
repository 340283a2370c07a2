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
  const bytes: number[] = [40 * parts[0]! + parts[1]!];
  for (const part of parts.slice(2)) {
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

export function readOid(node: Node): string {
  expectTag(node, TAG.OID, 'OBJECT IDENTIFIER');
  const bytes = node.content;
  if (bytes.length === 0) throw new DerError('invalid DER: empty OBJECT IDENTIFIER');
  const first = bytes[0]!;
  const parts: number[] = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  let value = 0;
  for (let i = 1; i < bytes.length; i++) {
    value = value * 128 + (bytes[i]! & 0x7f);
    if (!(bytes[i]! & 0x80)) {
      parts.push(value);
      value = 0;
    }
  }
  return parts.join('.');
}

export function readBoolean(node: Node): boolean {
  expectTag(node, TAG.BOOLEAN, 'BOOLEAN');
  return node.content.length === 1 && node.content[0] !== 0;
}

export function readSmallInteger(node: Node): number {
  expectTag(node, TAG.INTEGER, 'INTEGER');
  if (node.content.length === 0 || node.content.length > 6) throw new DerError('INTEGER empty or too large');
  return node.content.readIntBE(0, node.content.length);
}

/** BIT STRING content without the unused-bits byte. */
export function readBitString(node: Node): { bytes: Buffer; unusedBits: number } {
  expectTag(node, TAG.BIT_STRING, 'BIT STRING');
  if (node.content.length === 0) throw new DerError('invalid DER: empty BIT STRING');
  return { bytes: node.content.subarray(1), unusedBits: node.content[0]! };
}

export function readTime(node: Node): Date {
  const s = node.content.toString('ascii');
  const utc = node.tag === TAG.UTC_TIME ? s.match(/^(\d{2})(\d{10})Z$/) : null;
  const generalized = node.tag === TAG.GENERALIZED_TIME ? s.match(/^(\d{4})(\d{10})Z$/) : null;
  const match = utc ?? generalized;
  if (!match) throw new DerError(`invalid certificate time "${s}"`);
  let year = Number(match[1]);
  if (utc) year += year >= 50 ? 1900 : 2000;
  const r = match[2]!;
  const at = (i: number): number => Number(r.slice(i, i + 2));
  return new Date(Date.UTC(year, at(0) - 1, at(2), at(4), at(6), at(8)));
}
