/**
 * A least-recently-used map keyed by git object id. Objects are immutable, so an entry never goes stale: the
 * only reason to drop one is memory, hence the bound on the entry count. The reconciler keeps parsed
 * resources here by blob oid, and the source keeps trees here by tree oid.
 */
export class BlobCache<T> {
  readonly #entries = new Map<string, T>();
  #hits = 0;
  #misses = 0;

  constructor(readonly maxEntries: number) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(`BlobCache: maxEntries must be a positive integer, got ${maxEntries}`);
    }
  }

  get(oid: string): T | undefined {
    const value = this.#entries.get(oid);
    if (value === undefined) {
      this.#misses++;
      return undefined;
    }
    this.#hits++;
    // Re-insert so that Map order (insertion order) is recency order.
    this.#entries.delete(oid);
    this.#entries.set(oid, value);
    return value;
  }

  set(oid: string, value: T): void {
    this.#entries.delete(oid);
    this.#entries.set(oid, value);
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size <= this.maxEntries) break;
      this.#entries.delete(oldest);
    }
  }

  /** The cached value, or `load(oid)` stored and returned. */
  async getOrLoad(oid: string, load: (oid: string) => T | Promise<T>): Promise<T> {
    const cached = this.get(oid);
    if (cached !== undefined) return cached;
    const value = await load(oid);
    this.set(oid, value);
    return value;
  }

  get size(): number {
    return this.#entries.size;
  }

  stats(): { hits: number; misses: number; size: number } {
    return { hits: this.#hits, misses: this.#misses, size: this.#entries.size };
  }
}
