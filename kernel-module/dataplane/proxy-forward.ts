/**
 * Absolute-form requests through the HTTP proxy (`http_proxy`, `GET http://host/…`): each is matched on its
 * own by the proxy (dataplane.ts), which node's http.Server serves next to CONNECT, and forwarded here with the
 * same head rewrite (request-head.ts) and the same upstream connections (upstream.ts) as intercepted ones. The
 * proxy server's `headersTimeout`/`requestTimeout` bound the request, a body buffered to sign it included.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { resignRequest, SigV4Error } from './aws-sigv4.ts';
import { type ByteBudget, countRefusal, type HttpFlow, type HttpRelay, REASON } from './http-relay.ts';
import {
  checkHost,
  credentialNow,
  credentialTargetOk,
  originForm,
  scanRequestHead,
  serializeRequestHead,
} from './request-head.ts';
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

/**
 * The body, with the bytes it holds taken from the shared signing budget (the caller gives back `taken`), or
 * why not: over `max` bytes, or the budget exhausted (the rest is read and dropped either way).
 */
function readBody(
  req: IncomingMessage,
  max: number,
  budget: ByteBudget,
): Promise<{ body: Buffer | null; taken: number; why: 'too-large' | 'budget' | null }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let why: 'too-large' | 'budget' | null = null;
    req.on('data', (c: Buffer) => {
      if (why) return;
      if (size + c.length > max) why = 'too-large';
      else if (!budget.take(c.length)) why = 'budget';
      else {
        size += c.length;
        chunks.push(c);
      }
      if (why) {
        // What was taken goes back now: the body will not be signed.
        budget.give(size);
        size = 0;
        chunks.length = 0;
      }
    });
    req.once('end', () => resolve({ body: why ? null : Buffer.concat(chunks, size), taken: size, why }));
    req.once('error', (e) => {
      budget.give(size);
      reject(e);
    });
  });
}

/**
 * Forwards one absolute-form request of `flow` upstream with its credential and writes the response to `res`.
 * Refusals as on intercepted connections: 400 (transfer coding, Host), 405 (TRACE with a credential), 503
 * (credential, signing budget), 413 (body to sign over `maxSignedBodyBytes`), 400 (SigV4), 502/504 (upstream),
 * each with `x-riptides-reason`. Never rejects: anything thrown is answered 500 (or the response cut short).
 */
export async function forwardProxyRequest(
  relay: HttpRelay,
  req: IncomingMessage,
  res: ServerResponse,
  flow: HttpFlow,
): Promise<void> {
  try {
    await forward(relay, req, res, flow);
  } catch (e) {
    // A throw here (the signer's own errors included) is this request's failure, never the process's.
    req.resume();
    const message = `relay error: ${(e as Error).message}`;
    if (res.headersSent) {
      countRefusal(relay.core, 'relay-error', 500, message);
      res.destroy();
    } else refuse(relay, res, 500, 'relay-error', message);
  }
}

async function forward(
  relay: HttpRelay,
  req: IncomingMessage,
  res: ServerResponse,
  flow: HttpFlow,
): Promise<void> {
  const core = relay.core;
  const ref = flow.credential;
  const method = req.method ?? 'GET';
  if (ref && method === 'TRACE') {
    req.resume();
    // RFC 9110 §9.3.8: a TRACE response echoes the request, credentials included, back to the application.
    return refuse(
      relay,
      res,
      405,
      'trace',
      'TRACE is not relayed where a credential is injected: its response echoes it',
    );
  }
  const head = scanRequestHead(req.rawHeaders, ref !== null);
  if (head.coded) {
    req.resume();
    return refuse(relay, res, 400, 'transfer-coding', 'only the chunked transfer coding is forwarded');
  }
  // The URL's authority is the target decided for; the Host must name it too (RFC 9112 §3.2.2).
  const http11 = req.httpVersionMajor === 1 && req.httpVersionMinor >= 1;
  const host = checkHost(head.hosts, http11, flow.target, flow.defaultPort, null);
  if (!host.ok) {
    if (ref || head.hosts.length === 0) {
      req.resume();
      return refuse(relay, res, 400, 'host', host.message);
    }
  } else if (host.add) head.headers.push(['Host', host.add]);
  const scopeHost = host.ok ? host.name : flow.target.host;
  const origin = originForm(req.url ?? '/');
  if (origin === null) {
    req.resume();
    return refuse(relay, res, 400, 'bad-request', 'the request target is not a valid URL');
  }
  if (ref && !credentialTargetOk(req.method ?? '', origin)) {
    req.resume();
    return refuse(
      relay,
      res,
      400,
      'bad-request',
      'a credential goes only with a request target that is a path (or * for OPTIONS)',
    );
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
      let taken = 0;
      if (head.hasBody && !head.hashed) {
        const read = await readBody(req, core.limits.maxSignedBodyBytes, relay.signingBudget);
        if (read.why === 'budget')
          return refuse(
            relay,
            res,
            503,
            'signing-budget',
            'the data plane is buffering too many request bodies to sign: retry later',
          );
        if (!read.body) {
          const max = core.limits.maxSignedBodyBytes;
          return refuse(relay, res, 413, 'body-too-large', `request body over ${max} bytes cannot be signed`);
        }
        body = read.body;
        taken = read.taken;
        if (!headers.some(([n]) => n.toLowerCase() === 'content-length'))
          headers.push(['Content-Length', String(body.length)]);
      }
      try {
        const signed = await resignRequest({ method, target, headers, ...(body ? { body } : {}) }, value, {
          date: new Date(),
          scopeHost,
        });
        target = signed.target;
        headers = signed.headers;
      } catch (e) {
        req.resume();
        // A plain Error from the signer is the relay's failure (502), never a rejection left unhandled.
        const status = e instanceof SigV4Error ? 400 : 502;
        return refuse(relay, res, status, 'sigv4', `cannot re-sign the request: ${(e as Error).message}`);
      } finally {
        relay.signingBudget.give(taken);
      }
    }
    core.metrics.injected(ref);
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
  /** The upstream is paused until the application drains: never given back to the pool so. */
  let waitingDrain = false;
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
      if (!res.write(chunk) && !waitingDrain) {
        waitingDrain = true;
        upstream.socket.pause();
        res.once('drain', () => {
          waitingDrain = false;
          upstream.socket.resume();
        });
      }
    },
    responseEnd() {
      done = true;
      res.end();
      // Answered before the whole body was sent: that connection cannot carry another request. Nor can one
      // paused for a drain of the application, which may never come.
      if (req.complete && !waitingDrain) relay.pool.give(upstream);
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
