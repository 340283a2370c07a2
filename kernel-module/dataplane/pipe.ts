/**
 * Splices two sockets both ways; either side's end, error or close tears both down once. A side already
 * destroyed (an application that closed while its upstream was being dialed) tears the other down at once: its
 * 'close' may have been emitted already, and nothing else would end the other side.
 */
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
  if (a.destroyed || b.destroyed) {
    close();
    return;
  }
  a.on('error', close);
  b.on('error', close);
  a.once('close', close);
  b.once('close', close);
  a.pipe(b);
  b.pipe(a);
  a.resume();
  b.resume();
}
