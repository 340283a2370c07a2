/** Splices two sockets both ways; either side's end, error or close tears both down once. */
import type { Duplex } from 'node:stream';

export function splice(a: Duplex, b: Duplex, onClose: () => void): void {
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    a.destroy();
    b.destroy();
    onClose();
  };
  a.on('error', close);
  b.on('error', close);
  a.once('close', close);
  b.once('close', close);
  a.pipe(b);
  b.pipe(a);
  a.resume();
  b.resume();
}
