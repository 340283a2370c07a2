/**
 * How a long-running reconciler process holds memory; the `reconciler` and `up` commands apply it once at start,
 * short commands (plan, drift, ctl) do not.
 *
 * - **V8's old generation grows by a fixed 25% over the live heap between full collections**
 *   (`--heap-growing-percent`, V8's own flag, read at every collection so it may be set at run time). By default
 *   V8 lets it grow up to 4× the live heap while the program allocates fast, which a reconcile pass over 10,000
 *   resources does: the reconciler then sat at 2–3× its live heap. The same trade as Go's GOGC: more frequent
 *   (concurrent) marking for a resident size that follows the live one.
 * - **glibc's malloc keeps at most two arenas** (`M_ARENA_MAX`; by default eight per core, one per thread that
 *   ever contends: the libuv pool and V8's workers), and **gives free pages back** (`malloc_trim(0)`) after a
 *   burst (a pass, the agents joining) instead of keeping them as heap holes. Through koffi, the FFI the data
 *   plane already uses; on a libc without these functions (musl) this part is skipped.
 *
 * Measured in `npm run bench -- loop` (10,000 resources, 200 agents), figures in the top-level README.
 */
import v8 from 'node:v8';

/** Growth of the old generation over the live heap between full collections, percent. */
export const HEAP_GROWING_PERCENT = 25;
/** glibc mallopt(3) M_ARENA_MAX. */
const M_ARENA_MAX = -8;
/**
 * How often free malloc pages are given back, milliseconds. A trim walks every arena (13–22 ms on a 490 MB
 * fragmented heap), so it runs on koffi's worker thread, off the event loop.
 */
const TRIM_EVERY_MS = 2_000;

/**
 * Applies the policy to this process; returns what stops the periodic trim (at shutdown). Never throws: a
 * process it cannot tune runs with the defaults.
 */
export async function applyMemoryPolicy(): Promise<() => void> {
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  let mallocTrim: { async(pad: number, done: (err: unknown, result: number) => void): void };
  try {
    const { default: koffi } = await import('koffi');
    const libc = koffi.load('libc.so.6');
    libc.func('int mallopt(int param, int value)')(M_ARENA_MAX, 2);
    mallocTrim = libc.func('int malloc_trim(size_t pad)');
  } catch {
    // Not glibc, or no koffi build for this platform: the allocator keeps its own policy.
    return () => {};
  }
  let trimming = false;
  const timer = setInterval(() => {
    if (trimming) return;
    trimming = true;
    mallocTrim.async(0, () => {
      trimming = false;
    });
  }, TRIM_EVERY_MS).unref();
  return () => clearInterval(timer);
}
