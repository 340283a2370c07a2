/**
 * The HTTP client isomorphic-git fetches through. Written on node:http(s) rather than wrapping
 * isomorphic-git's own client (simple-get), because that one cannot be made safe from outside: it follows
 * redirects itself, keeps `Authorization` when the scheme changes (https → http on the same host sends the
 * token in cleartext), and crashes the process when a redirect leaves an https agent for http. Here:
 *
 *  - redirects are followed only within the origin that was named (scheme, host and port); a redirect
 *    anywhere else is refused with a SourceError('redirect') that names where it pointed, so credentials
 *    never travel to another scheme or origin;
 *  - every wait (connection and headers, then each body chunk) is bounded by `timeoutMs`, the whole transfer
 *    by `deadlineMs`, and the rate by `minBytesPerSecond` over each `timeoutMs` window (git's
 *    http.lowSpeedLimit/lowSpeedTime): a server trickling one byte every half second is cut off;
 *  - bytes received count against the repository cap, and a pack is spooled to a private file in the
 *    cache as it arrives, so receiving it holds one chunk in memory, not the whole pack;
 *  - before isomorphic-git indexes a pack (inflating every object whole), what it would inflate is checked
 *    (./pack-check.ts): no object over a quarter of the cap, all of them together under four times it;
 *  - no compressed encodings are asked for, so nothing is inflated here.
 *
 * isomorphic-git wraps or swallows errors thrown from a body iterator, so the first guard failure is also
 * kept in `failure` for the caller to report as is.
 */
import { randomBytes } from 'node:crypto';
import { open, readdir, rm } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import type { GitHttpRequest, GitHttpResponse, HttpClient } from 'isomorphic-git/http/node';
import { displayUrl } from '../common/redact.ts';
import { SourceError } from './errors.ts';
import { checkPack, type PackLimits } from './pack-check.ts';

export interface GuardOptions {
  /** Longest wait for the connection and headers, then for each body chunk; also the minimum-rate window. */
  timeoutMs: number;
  /** Every window of timeoutMs must bring at least this many bytes per second (git's http.lowSpeedLimit). */
  minBytesPerSecond: number;
  /** Longest a whole fetch (all its requests) may take. */
  deadlineMs: number;
  /** PEM bundle that replaces the default roots (as git's http.sslCAInfo does). */
  ca?: Buffer;
  /** Where the transfer goes, for error text (never carries credentials). */
  description: string;
  /** A private directory (the cache, 0700) where packs are spooled while they arrive. */
  spoolDir: string;
}

/** A response body other than a pack (the ref advertisement) is kept in memory: at most this much. */
export const MAX_IN_MEMORY_RESPONSE = 64 * 1024 * 1024;
const MAX_REDIRECTS = 5;
/**
 * What a pack may make isomorphic-git inflate, against the repository cap: one object (which it holds whole,
 * several times over while indexing) a quarter of the cap, all objects together four times the cap.
 */
function packLimits(cap: number): PackLimits {
  return { maxObjectBytes: Math.floor(cap / 4), maxTotalBytes: cap * 4 };
}
const SPOOL_PREFIX = 'riptides-spool-';
const SPOOL_READ_CHUNK = 1024 * 1024;

export class GuardedHttp implements HttpClient {
  failure: SourceError | undefined;
  #cap = Number.POSITIVE_INFINITY;
  #cached = 0;
  #received = 0;
  #deadlineAt = Number.POSITIVE_INFINITY;
  readonly #agent: HttpsAgent | undefined;

  constructor(readonly opts: GuardOptions) {
    this.#agent = opts.ca ? new HttpsAgent({ ca: opts.ca }) : undefined;
  }

  /**
   * Starts a fetch: the repository may grow from `cached` bytes to at most `cap`; the deadline runs from
   * `askedAt` (epoch ms; default now), so that time spent waiting for the cache's lock counts toward it.
   */
  async begin(cap: number, cached: number, askedAt = Date.now()): Promise<void> {
    this.failure = undefined;
    this.#cap = cap;
    this.#cached = cached;
    this.#received = 0;
    this.#deadlineAt = askedAt + this.opts.deadlineMs;
    // Spools left by a process that died mid-transfer.
    const stale = (await readdir(this.opts.spoolDir).catch(() => [] as string[])).filter((n) =>
      n.startsWith(SPOOL_PREFIX),
    );
    await Promise.all(stale.map((n) => rm(join(this.opts.spoolDir, n), { force: true })));
  }

  get received(): number {
    return this.#received;
  }

  request = async (req: GitHttpRequest): Promise<GitHttpResponse> => {
    let url = new URL(req.url);
    let method = (req.method ?? 'GET').toUpperCase();
    let body = req.body ? await collectRequestBody(req.body) : undefined;
    const headers: OutgoingHttpHeaders = { ...req.headers };
    for (let hops = 0; ; hops++) {
      const what = `${method} ${url.pathname}`;
      const res = await this.#send(url, method, headers, body, what);
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (status < 300 || status >= 400 || !location) {
        const pack = method === 'POST' && url.pathname.endsWith('/git-upload-pack') && status === 200;
        return {
          url: url.href,
          method,
          statusCode: status,
          statusMessage: res.statusMessage ?? '',
          headers: flatHeaders(res),
          body: pack ? await this.#spool(res, what) : this.#guard(res, what, MAX_IN_MEMORY_RESPONSE),
        };
      }
      res.destroy();
      const target = new URL(location, url);
      if (target.origin !== url.origin)
        throw this.#fail(
          new SourceError(
            'redirect',
            `${this.opts.description}: the server redirected ${what} to ${displayUrl(target)}, another ${target.protocol !== url.protocol ? 'scheme' : 'origin'}; not followed, so that credentials and the repository's integrity stay with the origin you named`,
            `if the repository has moved, pass its new URL (${displayUrl(target).replace(/\/info\/refs$|\/git-upload-pack$/, '')}) with --repo`,
          ),
        );
      if (hops + 1 > MAX_REDIRECTS)
        throw this.#fail(
          new SourceError(
            'redirect',
            `${this.opts.description}: more than ${MAX_REDIRECTS} redirects`,
            'check the repository URL',
          ),
        );
      // git's requests survive a same-origin move as they are (a pack request stays a POST); 303 means GET.
      if (status === 303) {
        method = 'GET';
        body = undefined;
      }
      url = target;
    }
  };

  /** One request; resolves with the response once its headers arrive, within the wait limit. */
  #send(
    url: URL,
    method: string,
    headers: OutgoingHttpHeaders,
    body: Buffer | undefined,
    what: string,
  ): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const options = {
        method,
        headers: {
          ...headers,
          'accept-encoding': 'identity',
          ...(body ? { 'content-length': body.byteLength } : {}),
        },
      };
      const req =
        url.protocol === 'https:'
          ? httpsRequest(url, { ...options, ...(this.#agent ? { agent: this.#agent } : {}) })
          : httpRequest(url, options);
      const timer = setTimeout(() => req.destroy(this.#fail(this.#waitError(what))), this.#waitMs());
      req.on('response', (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(this.failure ?? err);
      });
      req.end(body);
    });
  }

  /** Milliseconds the next wait may take: the per-wait limit, or what is left of the deadline. */
  #waitMs(): number {
    return Math.max(1, Math.min(this.opts.timeoutMs, this.#deadlineAt - Date.now()));
  }

  /** The response body, each chunk within the wait limit, the rate and the caps. */
  async *#guard(res: IncomingMessage, what: string, inMemoryCap: number): AsyncIterableIterator<Uint8Array> {
    const iterator = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const rate = this.#rateMeter(what);
    let own = 0;
    try {
      for (;;) {
        const next = await this.#withTimeout(iterator.next(), what);
        if (next.done) return;
        own += next.value.byteLength;
        this.#count(next.value.byteLength, what);
        if (own > inMemoryCap)
          throw this.#fail(
            new SourceError(
              'too-large',
              `${this.opts.description}: the answer to ${what} is over ${inMemoryCap} bytes`,
              'check that the URL names a git repository; a ref advertisement is never this large',
            ),
          );
        rate(own);
        yield next.value;
      }
    } finally {
      // Destroys the socket when the reader stops early (cap, timeout, or isomorphic-git giving up).
      res.destroy();
    }
  }

  /**
   * Receives a pack into a private spool file (one chunk in memory at a time), then hands it to
   * isomorphic-git from that file, deleting it when read or abandoned.
   */
  async #spool(res: IncomingMessage, what: string): Promise<AsyncIterableIterator<Uint8Array>> {
    const path = join(this.opts.spoolDir, `${SPOOL_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
    const out = await open(path, 'wx', 0o600);
    let size = 0;
    try {
      for await (const chunk of this.#guard(res, what, Number.POSITIVE_INFINITY)) {
        await out.write(chunk);
        size += chunk.byteLength;
      }
    } catch (err) {
      await out.close();
      await rm(path, { force: true });
      throw err;
    }
    await out.close();
    const check = await checkPack(readSpool(path, size, true), packLimits(this.#cap)).catch(
      async (err: unknown) => {
        await rm(path, { force: true });
        throw err;
      },
    );
    if (!check.ok) {
      await rm(path, { force: true });
      const limits = packLimits(this.#cap);
      throw this.#fail(
        new SourceError(
          'too-large',
          check.reason === 'object-too-large'
            ? `${this.opts.description}: the pack holds an object of ${check.bytes} bytes once inflated (${size} bytes received), over the cap of ${limits.maxObjectBytes} bytes per object (a quarter of the repository cap); nothing was indexed`
            : check.reason === 'total-too-large'
              ? `${this.opts.description}: the pack inflates to more than ${limits.maxTotalBytes} bytes (${size} bytes received; four times the repository cap); nothing was indexed`
              : `${this.opts.description}: the pack is corrupt: an object inflates to more or less than the ${check.bytes} bytes its header states; nothing was indexed`,
          check.reason === 'size-mismatch'
            ? 'check the git server; a pack git wrote never does this'
            : 'a policy repository holds no such files: check what was committed; if it is expected, raise the cap with --max-repo-size (plan) or maxRepoBytes',
        ),
      );
    }
    return readSpool(path, size);
  }

  /** Counts bytes against the repository cap. */
  #count(n: number, what: string): void {
    this.#received += n;
    if (this.#cached + this.#received > this.#cap)
      throw this.#fail(
        new SourceError(
          'too-large',
          `${this.opts.description}: the repository is over the size cap of ${this.#cap} bytes (${this.#cached} bytes already cached, ${this.#received} received before stopping, during ${what})`,
          'raise the cap with --max-repo-size (plan) or maxRepoBytes if this repository is expected to be this large, or point --repo at a smaller policy repository',
        ),
      );
  }

  /** A check, called with the running byte count of one body, that the last window met the minimum rate. */
  #rateMeter(what: string): (bytes: number) => void {
    const windowMs = this.opts.timeoutMs;
    let windowStart = Date.now();
    let windowBytes = 0;
    return (bytes) => {
      const now = Date.now();
      const elapsed = now - windowStart;
      if (elapsed < windowMs) return;
      const got = bytes - windowBytes;
      if (got < (this.opts.minBytesPerSecond * elapsed) / 1000)
        throw this.#fail(
          new SourceError(
            'unreachable',
            `${this.opts.description}: the transfer is too slow: ${got} bytes in the last ${(elapsed / 1000).toFixed(1)} s (${what}), below the minimum of ${this.opts.minBytesPerSecond} bytes/s`,
            'check the network path to the git server; a server that trickles data is cut off so that a run always ends',
          ),
        );
      windowStart = now;
      windowBytes = bytes;
    };
  }

  async #withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.#fail(this.#waitError(what))), this.#waitMs());
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #waitError(what: string): SourceError {
    if (Date.now() >= this.#deadlineAt)
      return new SourceError(
        'unreachable',
        `${this.opts.description}: the fetch did not finish within its deadline of ${Math.round(this.opts.deadlineMs / 1000)} s (${what})`,
        'check the git server and the network; the deadline bounds a whole fetch, however the server paces it',
      );
    return new SourceError(
      'unreachable',
      `${this.opts.description}: no response within ${this.opts.timeoutMs} ms (${what})`,
      'check that the git server is up and answering; raise the wait limit with --timeout for a slow server',
    );
  }

  #fail(err: SourceError): SourceError {
    this.failure ??= err;
    return err;
  }
}

async function collectRequestBody(body: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function flatHeaders(res: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers))
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

/** The spooled pack as chunks, read from disk; unless `keep`, the file is removed once read or abandoned. */
async function* readSpool(path: string, size: number, keep = false): AsyncIterableIterator<Uint8Array> {
  const file = await open(path, 'r');
  try {
    for (let position = 0; position < size; ) {
      const chunk = Buffer.allocUnsafe(Math.min(SPOOL_READ_CHUNK, size - position));
      const { bytesRead } = await file.read(chunk, 0, chunk.length, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      yield chunk.subarray(0, bytesRead);
    }
  } finally {
    await file.close();
    if (!keep) await rm(path, { force: true });
  }
}
