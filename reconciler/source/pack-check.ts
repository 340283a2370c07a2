/**
 * What a received pack would make isomorphic-git inflate, checked before isomorphic-git sees it. To index a
 * fetched pack, isomorphic-git inflates every object whole (pako keeps all of it in memory, and compares
 * the size with the entry header only afterwards) and applies every delta into a buffer of the size the
 * delta states: a 1.5 MB pack holding a 300 MiB file of one repeated byte took 1.25 GB of memory, and a
 * delta a few bytes long may state gigabytes.
 *
 * Here the upload-pack response is read as isomorphic-git reads it (pkt-lines; side-band channel 1 is the
 * pack, as `GitSideBand.demux` does; git's Documentation/gitprotocol-pack.txt and gitformat-pack.txt), and
 * each object's size is taken from its entry header (a delta's result size from the head of its data).
 * Each object is inflated once, on its own and never past its stated size, only to find where the next
 * one starts. The pack is refused when one object states more than `maxObjectBytes`, when all of them
 * together (delta results included) come to more than `maxTotalBytes`, or when an object inflates past its
 * stated size. Whatever this reader cannot follow (framing isomorphic-git also stops at, a truncated or
 * corrupt stream) ends the check: isomorphic-git then fails on the same bytes, before inflating more.
 */
import { inflateSync } from 'node:zlib';

export interface PackLimits {
  /** Largest object (its inflated size, or for a delta the object it makes) the pack may hold. */
  maxObjectBytes: number;
  /** Largest total of those sizes over the whole pack. */
  maxTotalBytes: number;
}

export type PackCheck =
  | { ok: true; objects: number; inflatedBytes: number }
  | { ok: false; reason: 'object-too-large' | 'total-too-large' | 'size-mismatch'; bytes: number };

/** The first compressed window tried for an object; doubled while its stream runs past the window. */
const FIRST_WINDOW = 64 * 1024;

/** Reads exact byte counts from a chunk stream (the spooled response), keeping only what is not consumed. */
class ByteReader {
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0;
  #done = false;
  constructor(private readonly chunks: AsyncIterator<Uint8Array>) {}

  /** Makes at least `n` unread bytes available if the stream holds them; returns how many are available. */
  async fill(n: number): Promise<number> {
    while (this.#buf.length - this.#pos < n && !this.#done) {
      const next = await this.chunks.next();
      if (next.done) {
        this.#done = true;
        break;
      }
      const rest = this.#buf.subarray(this.#pos);
      this.#buf = Buffer.concat([rest, next.value]);
      this.#pos = 0;
    }
    return this.#buf.length - this.#pos;
  }

  /** The next `n` bytes (fewer at the end of the stream). */
  async take(n: number): Promise<Buffer> {
    const available = await this.fill(n);
    const out = this.#buf.subarray(this.#pos, this.#pos + Math.min(n, available));
    this.#pos += out.length;
    return out;
  }
}

/** The pack carried by an upload-pack response: the payloads of side-band channel 1, in order. */
class SideBandPack {
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0;
  #ended = false;
  constructor(private readonly response: ByteReader) {}

  /** The next pack payload, reading pkt-lines up to it; undefined once there are no more. */
  async #payload(): Promise<Buffer | undefined> {
    while (!this.#ended) {
      const header = await this.response.take(4);
      const hex = header.toString('latin1');
      // The end of the response, or framing that isomorphic-git's reader also stops at.
      if (header.length < 4 || !/^[0-9a-fA-F]{4}$/.test(hex)) break;
      const length = Number.parseInt(hex, 16);
      if (length === 0 || length === 1) continue; // flush and delim packets
      if (length < 4) break;
      const line = await this.response.take(length - 4);
      if (line.length !== length - 4) break;
      if (line[0] === 1) return line.subarray(1);
      if (line[0] === 3) break; // the server's fatal error ends the pack
    }
    this.#ended = true;
    return undefined;
  }

  /** Unread pack bytes available after trying to make `n` of them so (one copy, however many lines). */
  async fill(n: number): Promise<number> {
    let available = this.#buf.length - this.#pos;
    if (available >= n || this.#ended) return available;
    const parts = [this.#buf.subarray(this.#pos)];
    while (available < n) {
      const payload = await this.#payload();
      if (!payload) break;
      parts.push(payload);
      available += payload.length;
    }
    this.#buf = Buffer.concat(parts, available);
    this.#pos = 0;
    return available;
  }

  /** A view of the next `n` unread bytes (fewer at the end), without consuming them. */
  async peek(n: number): Promise<Buffer> {
    const available = await this.fill(n);
    return this.#buf.subarray(this.#pos, this.#pos + Math.min(n, available));
  }

  skip(n: number): void {
    this.#pos += n;
  }

  async byte(): Promise<number | undefined> {
    const [b] = await this.peek(1);
    if (b !== undefined) this.skip(1);
    return b;
  }
}

/** A delta's header: the base object's size, then the size of the object it makes (two varints). */
function deltaResultSize(delta: Buffer): number | undefined {
  let p = 0;
  const varint = (): number | undefined => {
    let value = 0;
    for (let factor = 1; p < delta.length && factor < 2 ** 56; factor *= 128) {
      const b = delta[p++]!;
      value += (b & 0x7f) * factor;
      if (!(b & 0x80)) return value;
    }
    return undefined;
  };
  varint();
  return varint();
}

const OFS_DELTA = 6;
const REF_DELTA = 7;

/**
 * Checks the pack in an upload-pack response (`chunks`, as the server sent it) against `limits`. Resolves
 * `ok: false` with the reason and the size in question at the first object over a limit.
 */
export async function checkPack(chunks: AsyncIterable<Uint8Array>, limits: PackLimits): Promise<PackCheck> {
  const iterator = chunks[Symbol.asyncIterator]();
  try {
    return await checkObjects(new SideBandPack(new ByteReader(iterator)), limits);
  } finally {
    await iterator.return?.(); // the reader may stop early: let the source close its file
  }
}

async function checkObjects(pack: SideBandPack, limits: PackLimits): Promise<PackCheck> {
  const header = await pack.peek(12);
  let objects = 0;
  let inflatedBytes = 0;
  const done = (): PackCheck => ({ ok: true, objects, inflatedBytes });
  if (header.length < 12 || header.toString('latin1', 0, 4) !== 'PACK') return done();
  const count = header.readUInt32BE(8);
  pack.skip(12);
  for (; objects < count; objects++) {
    // Entry header: type in bits 6-4 of the first byte, the size in its low 4 bits and 7 bits per further byte.
    let byte = await pack.byte();
    if (byte === undefined) return done();
    const type = (byte >> 4) & 7;
    let size = byte & 0x0f;
    for (let factor = 16; byte & 0x80; factor *= 128) {
      byte = await pack.byte();
      if (byte === undefined || factor > 2 ** 56) return done();
      size += (byte & 0x7f) * factor;
    }
    if (size > limits.maxObjectBytes) return { ok: false, reason: 'object-too-large', bytes: size };
    if (type === OFS_DELTA) {
      do byte = await pack.byte();
      while (byte !== undefined && byte & 0x80);
    } else if (type === REF_DELTA) {
      if ((await pack.fill(20)) < 20) return done();
      pack.skip(20);
    }
    // Inflate the object alone, never past its stated size; the window grows while its stream runs on.
    let window = Math.max(FIRST_WINDOW, size + (size >> 3) + 1024);
    let data: Buffer;
    let consumed: number;
    for (;;) {
      const input = await pack.peek(window);
      try {
        const r = inflateSync(input, { info: true, maxOutputLength: size + 1 }) as unknown as {
          buffer: Buffer;
          engine: { bytesWritten: number };
        };
        data = r.buffer;
        consumed = r.engine.bytesWritten;
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ERR_BUFFER_TOO_LARGE') return { ok: false, reason: 'size-mismatch', bytes: size };
        // A stream running past the window: try a larger one while the pack has more.
        if (code === 'Z_BUF_ERROR' && input.length === window) {
          window *= 2;
          continue;
        }
        return done(); // truncated or corrupt: isomorphic-git fails on it too
      }
    }
    if (data.length !== size) return { ok: false, reason: 'size-mismatch', bytes: size };
    pack.skip(consumed);
    inflatedBytes += size;
    if (type === OFS_DELTA || type === REF_DELTA) {
      const result = deltaResultSize(data);
      if (result === undefined) return done();
      if (result > limits.maxObjectBytes) return { ok: false, reason: 'object-too-large', bytes: result };
      inflatedBytes += result;
    }
    if (inflatedBytes > limits.maxTotalBytes)
      return { ok: false, reason: 'total-too-large', bytes: inflatedBytes };
  }
  return done();
}
