/**
 * Absolute-form requests through the HTTP proxy (`http_proxy`, `GET http://host/…`): each is matched on its
 * own by the proxy (dataplane.ts), which node's http.Server serves next to CONNECT, and forwarded here with the
 * same head rewrite (request-head.ts) and the same upstream connections (upstream.ts) as intercepted ones. The
 * proxy server's `headersTimeout`/`requestTimeout` bound the request, a body buffered to sign it included.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { resignRequest, SigV4Error } from './aws-sigv4.ts';
import { countRefusal, type HttpFlow, type HttpRelay, REASON } from './http-relay.ts';
import { credentialNow, originForm, scanRequestHead, serializeRequestHead } from './request-head.ts';
import type { Framing, ResponseSink, Upstream } from './upstream.ts';

function refuse(
  relay: HttpRelay,
  res: ServerResponse,
  status: number,
  reason: string,
  message: string,
): void {
  countRefusal(relay.core, reason, status, message);
  res.shouldKeepAlive = false;
  const body = `${message}\n`;
  res.writeHead(status, {
    [REASON]: message.replace(/[^\x20-\x7e]/g, '?'),
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  res.end(body);
}

/** The body, or null past `max` bytes (the rest is read and dropped). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= max) chunks.push(c);
    });
    req.once('end', () => resolve(size > max ? null : Buffer.concat(chunks, size)));
    req.once('error', reject);
  });
}

/**
 * Forwards one absolute-form request of `flow` upstream with its credential and writes the response to `res`.
 * Refusals as on intercepted connections: 400 (transfer coding), 503 (credential), 413 (body to sign over
 * `maxSignedBodyBytes`), 400 (SigV4), 502/504 (upstream), each with `x-riptides-reason`.
 */
export async function forwardProxyRequest(
  relay: HttpRelay,
  req: IncomingMessage,
  res: ServerResponse,
  flow: HttpFlow,
): Promise<void> {
  const core = relay.core;
  const ref = flow.credential;
  const head = scanRequestHead(req.rawHeaders, ref !== null);
  const method = req.method ?? 'GET';
  if (head.coded) {
    req.resume();
    return refuse(relay, res, 400, 'transfer-coding', 'only the chunked transfer coding is forwarded');
  }
  const origin = originForm(req.url ?? '/');
  if (origin === null) {
    req.resume();
    return refuse(relay, res, 400, 'bad-request', 'the request target is not a valid URL');
  }
  let target = origin;
  let headers = head.headers;
  let body: Buffer | null = null;
  if (ref) {
    const found = credentialNow(core, ref);
    if (!found.ok) {
      req.resume();
      return refuse(relay, res, 503, 'credential-unavailable', found.message);
    }
    const value = found.value;
    if (value.kind === 'bearer') headers.push(['Authorization', `Bearer ${value.token}`]);
    else {
      if (head.hasBody && !head.hashed) {
        body = await readBody(req, core.limits.maxSignedBodyBytes);
        if (!body) {
          const max = core.limits.maxSignedBodyBytes;
          return refuse(relay, res, 413, 'body-too-large', `request body over ${max} bytes cannot be signed`);
        }
        if (!headers.some(([n]) => n.toLowerCase() === 'content-length'))
          headers.push(['Content-Length', String(body.length)]);
      }
      try {
        const signed = await resignRequest({ method, target, headers, ...(body ? { body } : {}) }, value, {
          date: new Date(),
        });
        target = signed.target;
        headers = signed.headers;
      } catch (e) {
        req.resume();
        if (!(e instanceof SigV4Error)) throw e;
        return refuse(relay, res, 400, 'sigv4', `cannot re-sign the request: ${e.message}`);
      }
    }
    core.metrics.credentialsInjected.inc({ kind: ref.kind, binding: ref.name });
    if (flow.record.binding !== ref.name) core.table.update(flow.record, { binding: ref.name });
  }
  const chunked = head.chunked && !body;
  if (chunked) headers.push(['Transfer-Encoding', 'chunked']);

  const spec = { ...flow, kind: flow.upstream };
  const key = relay.pool.key(spec);
  let up = relay.pool.take(key);
  if (!up) {
    const r = await relay.pool.dial(spec, key);
    if (!r.ok) {
      req.resume();
      return refuse(relay, res, r.timedOut ? 504 : 502, 'upstream', r.message);
    }
    up = r.upstream;
  }
  const upstream: Upstream = up;
  let done = false;
  res.once('close', () => {
    // The application went away mid-request: the upstream exchange is abandoned too.
    if (!done) upstream.abort();
  });
  const sink: ResponseSink = {
    responseHead(status: number, reason: string, out: string[], _framing: Framing) {
      // node frames the body toward the application itself (chunked when the upstream gave no length).
      res.writeHead(status, reason, out);
    },
    responseBody(chunk: Buffer) {
      if (!res.write(chunk)) {
        upstream.socket.pause();
        res.once('drain', () => upstream.socket.resume());
      }
    },
    responseEnd() {
      done = true;
      res.end();
      // Answered before the whole body was sent: that connection cannot carry another request.
      if (req.complete) relay.pool.give(upstream);
      else upstream.abort();
    },
    upstreamFailed(status: 502 | 504, message: string) {
      done = true;
      if (res.headersSent) res.destroy();
      else refuse(relay, res, status, 'upstream', message);
    },
    cork: () => res.cork(),
    uncork: () => res.uncork(),
  };
  upstream.begin(sink, method === 'HEAD');
  upstream.socket.write(serializeRequestHead(method, target, headers), 'latin1');
  if (body) upstream.socket.write(body);
  else if (head.hasBody) {
    req.on('data', (c: Buffer) => {
      if (chunked) upstream.socket.write(`${c.length.toString(16)}\r\n`);
      upstream.socket.write(c);
      if (chunked) upstream.socket.write('\r\n');
      if (upstream.socket.writableNeedDrain) {
        req.pause();
        upstream.socket.once('drain', () => req.resume());
      }
    });
    req.once('end', () => {
      if (chunked) upstream.socket.write('0\r\n\r\n');
    });
  }
}
