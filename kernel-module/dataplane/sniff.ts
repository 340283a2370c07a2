/**
 * Looking at a connection's first bytes without consuming them: TLS or not, and for TLS the ClientHello's SNI
 * and ALPN offers (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301). Bounded: one TLS record (≤ 16 KiB + header) and a
 * deadline; whatever was read is pushed back onto the socket.
 */
import type { Socket } from 'node:net';

export interface Sniffed {
  /** Nothing arrived before the deadline (a server-first protocol, or an idle client). */
  silent: boolean;
  /** The socket closed before sending anything. */
  closed: boolean;
  tls: boolean;
  sni: string | null;
  alpn: string[];
}

const RECORD_MAX = 5 + 16_384;

/** SNI and ALPN from a complete ClientHello record, or null when it is not one (or is cut short). */
export function parseClientHello(buf: Buffer): { sni: string | null; alpn: string[] } | null {
  if (buf.length < 5 || buf[0] !== 0x16) return null;
  const end = Math.min(buf.length, 5 + buf.readUInt16BE(3));
  let p = 5;
  const need = (n: number) => p + n <= end;
  if (!need(4) || buf[p] !== 0x01) return null;
  p += 4 + 2 + 32; // handshake header, legacy_version, random
  if (!need(1)) return null;
  p += 1 + buf[p]!; // session id
  if (!need(2)) return null;
  p += 2 + buf.readUInt16BE(p); // cipher suites
  if (!need(1)) return null;
  p += 1 + buf[p]!; // compression methods
  if (!need(2)) return { sni: null, alpn: [] };
  const extEnd = Math.min(end, p + 2 + buf.readUInt16BE(p));
  p += 2;
  let sni: string | null = null;
  const alpn: string[] = [];
  while (p + 4 <= extEnd) {
    const type = buf.readUInt16BE(p);
    const len = buf.readUInt16BE(p + 2);
    const body = p + 4;
    p = body + len;
    if (p > extEnd) break;
    if (type === 0 && len >= 5 && buf[body + 2] === 0) {
      const nameLen = buf.readUInt16BE(body + 3);
      if (body + 5 + nameLen <= p) sni = buf.toString('latin1', body + 5, body + 5 + nameLen);
    } else if (type === 16 && len >= 2) {
      let q = body + 2;
      while (q < p) {
        const l = buf[q]!;
        if (q + 1 + l > p) break;
        alpn.push(buf.toString('latin1', q + 1, q + 1 + l));
        q += 1 + l;
      }
    }
  }
  if (sni !== null && !/^[A-Za-z0-9.-]{1,253}$/.test(sni)) sni = null;
  return { sni, alpn };
}

/** Waits for the first bytes (at most `timeoutMs`), classifies them, and puts them back. */
export function sniff(socket: Socket, timeoutMs: number): Promise<Sniffed> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    let done = false;
    const finish = (result: Omit<Sniffed, 'alpn' | 'sni'> & Partial<Sniffed>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.pause();
      if (length) socket.unshift(Buffer.concat(chunks, length));
      resolve({ sni: null, alpn: [], ...result });
    };
    const classify = () => {
      const buf = Buffer.concat(chunks, length);
      if (buf[0] !== 0x16) return finish({ silent: false, closed: false, tls: false });
      if (buf.length < 5) return;
      const recordEnd = 5 + buf.readUInt16BE(3);
      if (buf.length >= recordEnd || buf.length >= RECORD_MAX) {
        const hello = parseClientHello(buf);
        finish({ silent: false, closed: false, tls: true, sni: hello?.sni ?? null, alpn: hello?.alpn ?? [] });
      }
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      classify();
    };
    const onEnd = () => finish({ silent: false, closed: length === 0, tls: chunks[0]?.[0] === 0x16 });
    const timer = setTimeout(
      () => finish({ silent: length === 0, closed: false, tls: chunks[0]?.[0] === 0x16 }),
      timeoutMs,
    );
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.resume();
  });
}
