/**
 * The size of a git object from its header, before anything is inflated: a blob of 400 MiB of one repeated
 * byte is under 2 MB in git, and inflating it to compare with a 1 MiB cap is what must not happen.
 *
 * - A loose object (objects/xx/…) starts with "<type> <size>\0": only the first bytes are inflated.
 * - A packed object is found through the pack's .idx (v2, or v1) and its entry header gives the type and
 *   size; for a delta (OFS_DELTA, REF_DELTA) the size is the result size at the start of the delta data,
 *   again read by inflating only its first bytes (git's pack format, Documentation/gitformat-pack.txt).
 *
 * isomorphic-git offers no such call, and reads a whole object to learn its size.
 */

import { type FileHandle, open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { constants, inflateSync } from 'node:zlib';

/** Compressed bytes inflated to read a header: at most ~1 MB of output even for the densest input. */
const HEADER_INPUT = 1024;

interface PackIndex {
  pack: string;
  mtimeMs: number;
  find(oid: Buffer): number | undefined;
}

export class ObjectSizes {
  readonly #gitdir: string;
  /** The pack indexes read so far, by file name and modification time. */
  #packs = new Map<string, PackIndex>();

  constructor(gitdir: string) {
    this.#gitdir = gitdir;
  }

  /** The object's size in bytes, or undefined when it is not in this repository (or its header is unreadable). */
  async size(oid: string): Promise<number | undefined> {
    const loose = await this.#loose(oid);
    if (loose !== undefined) return loose;
    const key = Buffer.from(oid, 'hex');
    for (const index of await this.#indexes()) {
      const offset = index.find(key);
      if (offset !== undefined) return packedSize(index.pack, offset);
    }
    return undefined;
  }

  async #loose(oid: string): Promise<number | undefined> {
    let file: FileHandle;
    try {
      file = await open(join(this.#gitdir, 'objects', oid.slice(0, 2), oid.slice(2)), 'r');
    } catch {
      return undefined;
    }
    try {
      const head = Buffer.alloc(HEADER_INPUT);
      const { bytesRead } = await file.read(head, 0, HEADER_INPUT, 0);
      const text = partialInflate(head.subarray(0, bytesRead)).subarray(0, 64).toString('latin1');
      const m = /^(?:blob|tree|commit|tag) (\d+)\0/.exec(text);
      return m ? Number(m[1]) : undefined;
    } finally {
      await file.close();
    }
  }

  /**
   * The pack indexes. Each fetch adds a pack: only an index not read before (by name and modification time) is
   * read, so a fetch does not read again the index of every object the repository had.
   */
  async #indexes(): Promise<PackIndex[]> {
    const dir = join(this.#gitdir, 'objects', 'pack');
    const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.idx')).sort();
    const stats = await Promise.all(names.map((n) => stat(join(dir, n))));
    const packs = new Map<string, PackIndex>();
    await Promise.all(
      names.map(async (n, i) => {
        const key = `${n}:${stats[i]!.mtimeMs}`;
        const file = join(dir, n);
        packs.set(
          key,
          this.#packs.get(key) ??
            parseIndex(await readFile(file), file.replace(/\.idx$/, '.pack'), stats[i]!.mtimeMs),
        );
      }),
    );
    this.#packs = packs;
    // In name order, whatever order the reads finished in.
    return names.map((n, i) => packs.get(`${n}:${stats[i]!.mtimeMs}`)!);
  }
}

function partialInflate(input: Buffer): Buffer {
  try {
    return inflateSync(input, { finishFlush: constants.Z_SYNC_FLUSH });
  } catch {
    return Buffer.alloc(0);
  }
}

/** A .idx file: a sorted table of object ids with their offsets in the pack. */
function parseIndex(idx: Buffer, pack: string, mtimeMs: number): PackIndex {
  const v2 = idx.readUInt32BE(0) === 0xff744f63 && idx.readUInt32BE(4) === 2;
  const fanoutAt = v2 ? 8 : 0;
  const count = idx.readUInt32BE(fanoutAt + 255 * 4);
  const fanout = (byte: number) => (byte < 0 ? 0 : idx.readUInt32BE(fanoutAt + byte * 4));
  const namesAt = fanoutAt + 256 * 4;
  // v2: names, then CRCs, then 4-byte offsets (high bit: index into the 8-byte table after them).
  // v1: entries of a 4-byte offset followed by the 20-byte name.
  const nameAt = (i: number) => (v2 ? namesAt + i * 20 : namesAt + i * 24 + 4);
  const offsetOf = (i: number): number => {
    if (!v2) return idx.readUInt32BE(namesAt + i * 24);
    const small = idx.readUInt32BE(namesAt + count * 24 + i * 4);
    if (!(small & 0x80000000)) return small;
    const large = namesAt + count * 28 + (small & 0x7fffffff) * 8;
    return idx.readUInt32BE(large) * 2 ** 32 + idx.readUInt32BE(large + 4);
  };
  return {
    pack,
    mtimeMs,
    find(oid) {
      let lo = fanout(oid[0]! - 1);
      let hi = fanout(oid[0]!);
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        // The name at mid compared with oid: negative when it sorts before.
        const c = idx.compare(oid, 0, 20, nameAt(mid), nameAt(mid) + 20);
        if (c === 0) return offsetOf(mid);
        if (c < 0) lo = mid + 1;
        else hi = mid;
      }
      return undefined;
    },
  };
}

const OBJ_OFS_DELTA = 6;
const OBJ_REF_DELTA = 7;

/** Type and size from a pack entry header; for deltas, the result size from the delta data's header. */
async function packedSize(pack: string, offset: number): Promise<number | undefined> {
  const file = await open(pack, 'r');
  try {
    const buf = Buffer.alloc(32 + HEADER_INPUT);
    const { bytesRead } = await file.read(buf, 0, buf.length, offset);
    const entry = buf.subarray(0, bytesRead);
    let p = 0;
    let byte = entry[p++]!;
    const type = (byte >> 4) & 7;
    let size = byte & 0x0f;
    let scale = 16;
    while (byte & 0x80 && p < entry.length) {
      byte = entry[p++]!;
      size += (byte & 0x7f) * scale;
      scale *= 128;
    }
    if (type !== OBJ_OFS_DELTA && type !== OBJ_REF_DELTA) return size;
    if (type === OBJ_OFS_DELTA) while (entry[p++]! & 0x80 && p < entry.length);
    else p += 20;
    const delta = partialInflate(entry.subarray(p));
    let q = 0;
    const varint = (): number | undefined => {
      let value = 0;
      let factor = 1;
      for (;;) {
        if (q >= delta.length) return undefined;
        const b = delta[q++]!;
        value += (b & 0x7f) * factor;
        factor *= 128;
        if (!(b & 0x80)) return value;
      }
    };
    varint(); // size of the base object
    return varint(); // size of the object this delta makes
  } finally {
    await file.close();
  }
}
