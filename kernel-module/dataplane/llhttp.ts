/**
 * Node's own HTTP/1.1 parser (llhttp, the binding node's http server and client run), loaded from
 * `_http_common`, so that what an intercepted connection may send (request smuggling, obs-fold, invalid header
 * characters, chunk syntax, head size) is refused exactly as node's http.Server refuses it. `_http_common`
 * exports `HTTPParser` in Node 20 and 22 (undici and http-parser-js load it the same way); there is no public
 * API for it.
 */
import { createRequire } from 'node:module';

/** The callbacks node's binding calls, by the indices `HTTPParser.kOn*` (RFC 9112 message parts). */
export interface ParserCallbacks {
  /**
   * The head is complete. `headers` is flat (`[name, value, …]`, as received, latin1), `method` an index into
   * `methods` (requests), `statusCode` set for responses. Return 1 when the message has no body whatever its
   * headers say (a response to HEAD), else 0.
   */
  headersComplete(
    versionMajor: number,
    versionMinor: number,
    headers: string[],
    method: number,
    url: string,
    statusCode: number,
    statusMessage: string,
    upgrade: boolean,
    shouldKeepAlive: boolean,
  ): number;
  /** A piece of the body, de-chunked: a view of the bytes read, which may be kept (node's server queues it). */
  body(chunk: Buffer): void;
  messageComplete(): void;
  /** The first byte of a message was read (before its head is complete); optional. */
  messageBegin?(): void;
}

export interface Parser {
  /** Parses `data`: the bytes consumed, or an Error with `code` (`HPE_…`) and `reason` when the input is refused. */
  execute(data: Buffer): number | (Error & { code: string; reason?: string });
  /** End of input: completes a close-delimited message, or an Error when the input ended mid-message. */
  finish(): undefined | (Error & { code: string });
  free(): void;
}

interface Binding {
  new (): Parser &
    Record<number, unknown> & {
      initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
    };
  REQUEST: number;
  RESPONSE: number;
  kOnMessageBegin: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kLenientNone: number;
}

const common = createRequire(import.meta.url)('_http_common') as { HTTPParser: Binding; methods: string[] };
const HTTPParser = common.HTTPParser;

/**
 * Method names by the index llhttp reports. `_http_common.methods` lists the names but is not aligned with those
 * indices (QUERY is 46 for llhttp and 34 in the list in Node 20; node's server names methods from an internal
 * table), so the table is read off the parser itself: each listed method parsed once at load.
 */
const methodNames: string[] = [];
for (const name of common.methods) {
  const p = new HTTPParser();
  p.initialize(HTTPParser.REQUEST, {}, 0, HTTPParser.kLenientNone);
  p[HTTPParser.kOnHeadersComplete] = (_a: number, _b: number, _h: string[], index: number) => {
    methodNames[index] = name;
    return 0;
  };
  p[HTTPParser.kOnMessageComplete] = () => {};
  p.execute(Buffer.from(`${name} / HTTP/1.1\r\nHost: x\r\n\r\n`));
  p.free();
}

/** The name of the method llhttp reports as `index`; undefined for one this table lacks (refused, never renamed). */
export function methodName(index: number): string | undefined {
  return methodNames[index];
}

/**
 * A strict (no leniency flag) parser for requests or responses. `maxHeaderBytes` caps the head (HPE_HEADER_OVERFLOW
 * past it; 0 is node's default, 16 KiB). A head that arrives in several reads is collected here, as node does.
 */
export function newParser(kind: 'request' | 'response', maxHeaderBytes: number, cb: ParserCallbacks): Parser {
  const p = new HTTPParser();
  p.initialize(
    kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE,
    {},
    maxHeaderBytes,
    HTTPParser.kLenientNone,
  );
  let headers: string[] = [];
  let url = '';
  // Called before headersComplete when the head came in pieces; headersComplete then gets undefined for both.
  p[HTTPParser.kOnHeaders] = (h: string[], u: string) => {
    for (const x of h) headers.push(x);
    url += u;
  };
  p[HTTPParser.kOnHeadersComplete] = (
    vMaj: number,
    vMin: number,
    h: string[] | undefined,
    method: number,
    u: string | undefined,
    status: number,
    message: string,
    upgrade: boolean,
    keepAlive: boolean,
  ) => {
    const all = h ?? headers;
    const target = u ?? url;
    headers = [];
    url = '';
    return cb.headersComplete(vMaj, vMin, all, method, target, status, message, upgrade, keepAlive);
  };
  p[HTTPParser.kOnBody] = (b: Buffer) => cb.body(b);
  const begin = cb.messageBegin;
  if (begin) p[HTTPParser.kOnMessageBegin] = () => begin();
  p[HTTPParser.kOnMessageComplete] = () => {
    // Trailers of a chunked body come through kOnHeaders too: they are dropped, never the next head's.
    headers = [];
    url = '';
    cb.messageComplete();
  };
  return p;
}
