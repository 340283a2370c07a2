/**
 * The C heap's bytes in use, from glibc's mallinfo2(3) (through koffi, as kernel-module/dataplane/sock-diag.ts
 * calls libc): `uordblks` (bytes in allocated chunks, every arena) + `hblkhd` (bytes in mmap'd chunks).
 * OpenSSL's connections, nghttp2's sessions and Node's Buffers live here; V8's heap does not (it maps its own
 * pages). Unlike RSS, it does not count the free chunks an arena keeps after a burst of handshakes, so it
 * measures what connected peers hold rather than what the allocator has not yet returned.
 */
import koffi from 'koffi';

const MallInfo2 = koffi.struct('mallinfo2', {
  arena: 'size_t',
  ordblks: 'size_t',
  smblks: 'size_t',
  hblks: 'size_t',
  hblkhd: 'size_t',
  usmblks: 'size_t',
  fsmblks: 'size_t',
  uordblks: 'size_t',
  fordblks: 'size_t',
  keepcost: 'size_t',
});

let mallinfo2: (() => { uordblks: number | bigint; hblkhd: number | bigint }) | null = null;

/** Bytes allocated through malloc and not freed, in this process (glibc ≥ 2.33). */
export function mallocInUse(): number {
  mallinfo2 ??= koffi.load('libc.so.6').func('mallinfo2', MallInfo2, []) as never;
  const m = mallinfo2!();
  return Number(m.uordblks) + Number(m.hblkhd);
}
