import { Agent as HttpsAgent } from 'node:https';
import type { GitHttpRequest, GitHttpResponse, HttpClient } from 'isomorphic-git/http/node';
import nodeHttp from 'isomorphic-git/http/node';
import { SourceError } from './errors.ts';

export interface GuardOptions {
  /** Idle limit: no response headers, or no body bytes, for this long fails the transfer. */
  timeoutMs: number;
  /** PEM bundle that replaces the default roots (as git's http.sslCAInfo does). */
  ca?: Buffer;
  /** Where the transfer goes, for error text (never carries credentials). */
  description: string;
}

/**
 * isomorphic-git's node client with the bounds it lacks: a timeout on every wait, a byte budget on what the
 * server sends, and a custom CA. isomorphic-git wraps or swallows errors thrown from a body iterator, so the
 * first guard failure is also kept in `failure` for the caller to report as is.
 */
export class GuardedHttp implements HttpClient {
  failure: SourceError | undefined;
  #cap = Number.POSITIVE_INFINITY;
  #cached = 0;
  #received = 0;
  readonly #agent: HttpsAgent | undefined;

  constructor(readonly opts: GuardOptions) {
    this.#agent = opts.ca ? new HttpsAgent({ ca: opts.ca }) : undefined;
  }

  /** Starts a transfer: the repository may grow from `cached` bytes to at most `cap`. */
  begin(cap: number, cached: number): void {
    this.failure = undefined;
    this.#cap = cap;
    this.#cached = cached;
    this.#received = 0;
  }

  get received(): number {
    return this.#received;
  }

  request = async (req: GitHttpRequest): Promise<GitHttpResponse> => {
    const what = `${req.method ?? 'GET'} ${new URL(req.url).pathname}`;
    const controller = new AbortController();
    const timer = setTimeout(() => {
      this.#fail(this.#timeout(what));
      controller.abort();
    }, this.opts.timeoutMs);
    let res: GitHttpResponse;
    try {
      res = await nodeHttp.request({
        ...req,
        agent: req.url.startsWith('https:') ? this.#agent : undefined,
        signal: controller.signal,
      });
    } catch (err) {
      throw this.failure ?? err;
    } finally {
      clearTimeout(timer);
    }
    return res.body ? { ...res, body: this.#guard(res.body, what) } : res;
  };

  async *#guard(body: AsyncIterableIterator<Uint8Array>, what: string): AsyncIterableIterator<Uint8Array> {
    try {
      for (;;) {
        const next = await this.#withTimeout(body.next(), what);
        if (next.done) return;
        this.#received += next.value.byteLength;
        if (this.#cached + this.#received > this.#cap) {
          throw this.#fail(
            new SourceError(
              'too-large',
              `${this.opts.description}: the repository is over the size cap of ${this.#cap} bytes (${this.#cached} bytes already cached, ${this.#received} received before stopping)`,
              'raise maxRepoBytes (--max-repo-bytes) if this repository is expected to be this large, or point --repo at a smaller policy repository',
            ),
          );
        }
        yield next.value;
      }
    } finally {
      // Destroys the socket when the reader stops early (size cap, timeout, or isomorphic-git giving up).
      await body.return?.();
    }
  }

  async #withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.#fail(this.#timeout(what))), this.opts.timeoutMs);
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #timeout(what: string): SourceError {
    return new SourceError(
      'unreachable',
      `${this.opts.description}: no response within ${this.opts.timeoutMs} ms (${what})`,
      'check that the git server is up and answering; raise timeoutMs (--timeout) for a slow server',
    );
  }

  #fail(err: SourceError): SourceError {
    this.failure ??= err;
    return err;
  }
}
