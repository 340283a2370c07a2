/**
 * The client side of the reconciler API, for `ctl` and `drift`: finds the running reconciler and its admin
 * credential, and makes bounded requests (an overall deadline, a response cap).
 *
 * Finding it: `--server URL` with `--credential-file FILE` (a copy of `<state-dir>/api/admin.token`, which must
 * not be readable by others, as ssh insists for keys) and, for https, `--ca-file`; or `--state-dir DIR` (default
 * store/state-dir.ts), whose `api/endpoint.json` and `api/admin.token` the reconciler wrote. The credential
 * never travels over plain HTTP to anything but a loopback address.
 */

import { readFile, stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { isLoopbackHost } from '../../kernel-module/loopback.ts';
import { apiDir, readEndpoint } from './api-credentials.ts';
import type { ApiErrorBody } from './server.ts';

export interface ApiTarget {
  url: string;
  /** The bearer credential; absent when an admin X.509-SVID (cert, key) authenticates instead. */
  token?: string;
  /** PEM that verifies the server's certificate (https). */
  ca?: string;
  /** Client X.509-SVID chain and key, PEM (mutual TLS). */
  cert?: string;
  key?: string;
}

export class ApiClientError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly body?: unknown,
  ) {
    super(message);
  }
}

export interface LocateOptions {
  stateDir: string;
  server?: string | undefined;
  credentialFile?: string | undefined;
  caFile?: string | undefined;
  /** Admin X.509-SVID for mutual TLS, instead of a credential file. */
  certFile?: string | undefined;
  keyFile?: string | undefined;
}

async function privateFile(path: string, what: string): Promise<string> {
  const st = await stat(path).catch(() => null);
  if (!st) throw new ApiClientError(`${what} ${path} does not exist`);
  if (st.mode & 0o077)
    throw new ApiClientError(
      `${what} ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}): run chmod 600 ${path}`,
    );
  return (await readFile(path, 'utf8')).trim();
}

/** Where the API is and the credential to call it with. */
export async function locateApi(opts: LocateOptions): Promise<ApiTarget> {
  if (opts.server) {
    const ca = opts.caFile ? await readFile(opts.caFile, 'utf8') : undefined;
    const url = opts.server.replace(/\/+$/, '');
    if (opts.certFile || opts.keyFile) {
      if (!opts.certFile || !opts.keyFile) throw new ApiClientError('--cert and --key go together');
      const cert = await readFile(opts.certFile, 'utf8');
      const key = await privateFile(opts.keyFile, 'key file');
      return { url, cert, key, ...(ca ? { ca } : {}) };
    }
    if (!opts.credentialFile)
      throw new ApiClientError(
        '--server needs --credential-file (a copy of <state-dir>/api/admin.token), or --cert and --key (an admin SVID)',
      );
    const token = await privateFile(opts.credentialFile, 'credential file');
    return { url, token, ...(ca ? { ca } : {}) };
  }
  const endpoint = await readEndpoint(opts.stateDir).catch(() => null);
  if (!endpoint)
    throw new ApiClientError(
      `no reconciler serves from state directory ${opts.stateDir} (no api/endpoint.json): start one with riptides-cli up or riptides-cli reconciler --state-dir ${opts.stateDir}, or pass --server URL`,
    );
  const token = await privateFile(join(apiDir(opts.stateDir), 'admin.token'), 'admin credential');
  const caFile = opts.caFile ?? endpoint.caFile;
  const ca = caFile ? await readFile(caFile, 'utf8') : undefined;
  return { url: endpoint.url, token, ...(ca ? { ca } : {}) };
}

export interface RequestOptions {
  /** Overall deadline in ms; default 10 s. */
  timeoutMs?: number;
  /** Response cap in bytes; default 64 MiB. */
  maxResponseBytes?: number;
}

export class ApiClient {
  constructor(
    readonly target: ApiTarget,
    private readonly opts: RequestOptions = {},
  ) {
    const u = new URL(target.url);
    if (u.protocol !== 'https:' && !isLoopbackHost(u.hostname) && target.token)
      throw new ApiClientError(
        `refusing to send the admin credential over plain http to ${u.host}: use https`,
      );
  }

  get<T>(path: string): Promise<T> {
    return this.#call<T>('GET', path);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.#call<T>('POST', path, JSON.stringify(body));
  }

  /** A POST whose refusal (4xx with a JSON body) is a value, not an error: edits answer with their reasons. */
  async postResult<T>(path: string, body: unknown): Promise<{ status: number; body: T }> {
    return this.#raw<T>('POST', path, JSON.stringify(body));
  }

  async #call<T>(method: string, path: string, body?: string): Promise<T> {
    const r = await this.#raw<T>(method, path, body);
    if (r.status >= 400) {
      const err = (r.body as { error?: ApiErrorBody } | null)?.error;
      throw new ApiClientError(err ? `${err.reason} (${err.hint})` : `HTTP ${r.status}`, r.status, r.body);
    }
    return r.body;
  }

  #raw<T>(method: string, path: string, body?: string): Promise<{ status: number; body: T }> {
    const url = new URL(path, `${this.target.url}/`);
    const timeoutMs = this.opts.timeoutMs ?? 10_000;
    const cap = this.opts.maxResponseBytes ?? 64 * 1024 * 1024;
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(
        url,
        {
          method,
          headers: {
            ...(this.target.token ? { authorization: `Bearer ${this.target.token}` } : {}),
            accept: 'application/json',
            ...(body !== undefined
              ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
              : {}),
          },
          ...(this.target.ca ? { ca: this.target.ca } : {}),
          ...(this.target.cert && this.target.key ? { cert: this.target.cert, key: this.target.key } : {}),
        },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > cap) req.destroy(new ApiClientError(`the API answered more than ${cap} bytes`));
            else chunks.push(c);
          });
          res.on('end', () => {
            clearTimeout(timer);
            const text = Buffer.concat(chunks).toString('utf8');
            const json = (res.headers['content-type'] ?? '').startsWith('application/json');
            try {
              resolve({ status: res.statusCode ?? 0, body: (json ? JSON.parse(text) : text) as T });
            } catch {
              reject(new ApiClientError(`the API answered invalid JSON (HTTP ${res.statusCode})`));
            }
          });
          res.on('error', reject);
        },
      );
      const timer = setTimeout(
        () => req.destroy(new ApiClientError(`no answer from ${this.target.url} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (err instanceof ApiClientError) reject(err);
        else if (err.code === 'ECONNREFUSED')
          reject(new ApiClientError(`no reconciler answers at ${this.target.url} (is it running?)`));
        else reject(new ApiClientError(`cannot reach ${this.target.url}: ${err.message}`));
      });
      req.end(body);
    });
  }
}
