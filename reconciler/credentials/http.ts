/**
 * The HTTP exchange the Vault and STS providers make, bounded as untrusted input must be:
 *
 *  - one deadline for the whole exchange (connection, headers and body): when it passes, the request is
 *    destroyed, so nothing keeps reading or buffering after the caller has given up;
 *  - the body is capped (a Vault or STS answer is a few KB) and the socket destroyed past the cap;
 *  - redirects are followed only within the origin named (scheme, host, port); a redirect anywhere else is
 *    refused before anything is sent there, because every request carries a credential (the workload's
 *    JWT-SVID, or a Vault token), as Vault's own client refuses a protocol downgrade;
 *  - plain http only where the endpoint was configured so (see `checkEndpoint`);
 *  - through an agent with a socket limit, at most that many run at once per origin; the others wait their turn
 *    (within the same deadline) before anything is built or sent.
 *
 * node:https directly: node-vault's axios follows redirects with custom headers (X-Vault-Token) and bodies
 * (the JWT) to any host, and cannot be given a body cap or a real deadline through node-vault; node-vault is
 * kept for the Vault API and handed this as its transport.
 */

import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { type Agent, request as httpsRequest } from 'node:https';
import pLimit, { type LimitFunction } from 'p-limit';
import { isLoopbackHost } from '../../kernel-module/loopback.ts';
import { displayUrl } from '../common/redact.ts';
import { CredentialError } from './types.ts';

export interface BoundedRequest {
  url: URL;
  method: string;
  headers?: OutgoingHttpHeaders;
  body?: string | Buffer;
  /** For https URLs: the agent holding the trust roots (and keep-alive sockets). */
  agent?: Agent;
  /** Milliseconds for the whole exchange, redirects included. */
  deadlineMs: number;
  /** Largest body accepted, in bytes. */
  maxBodyBytes: number;
  /** What the redirect refusal calls the server ("Vault", "AWS STS"); other messages leave naming to the caller. */
  what: string;
  /** What a redirect elsewhere would have carried, for the refusal ("the workload's JWT-SVID"). */
  carries: string;
}

export interface BoundedResponse {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

const MAX_REDIRECTS = 5;
export function isLoopback(url: URL): boolean {
  return isLoopbackHost(url.hostname);
}

/**
 * Checks an endpoint URL given by configuration: https, or plain http to a loopback address (a local
 * emulator, as AWS SDK users point `endpoint_url` at one), which comes back with a warning to show.
 * Anything else throws CredentialError saying what is accepted. Userinfo is refused and never echoed.
 */
export function checkEndpoint(text: string, what: string): { url: URL; warning?: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CredentialError(`${what} "${displayUrl(text)}" is not a URL; give https://host[:port]/`, {
      code: 'misconfigured',
    });
  }
  if (url.username || url.password)
    throw new CredentialError(
      `${what} ${displayUrl(url)} carries credentials in the URL; they are refused and were not used`,
      { code: 'misconfigured' },
    );
  if (url.protocol === 'https:') return { url };
  if (url.protocol === 'http:' && isLoopback(url))
    return {
      url,
      warning: `${what} ${displayUrl(url)} is plain http: accepted because it is a loopback address (a local emulator); credentials sent to it travel unencrypted on this host`,
    };
  if (url.protocol === 'http:')
    throw new CredentialError(
      `${what} ${displayUrl(url)} is plain http to a host that is not loopback: refused, because the workload's ID token and the credentials it returns would cross the network unencrypted; use https (plain http is accepted only for 127.0.0.1, ::1 or localhost)`,
      { code: 'misconfigured' },
    );
  throw new CredentialError(`${what} ${displayUrl(url)}: unsupported protocol ${url.protocol}; use https`, {
    code: 'misconfigured',
  });
}

/** One request (following same-origin redirects) within the deadline and the body cap. */
export function boundedRequest(req: BoundedRequest): Promise<BoundedResponse> {
  const deadlineAt = Date.now() + req.deadlineMs;
  const attempt = (url: URL, method: string, body: string | Buffer | undefined, hops: number) =>
    new Promise<BoundedResponse>((resolve, reject) => {
      const remaining = deadlineAt - Date.now();
      if (remaining <= 0) {
        reject(noAnswer(req));
        return;
      }
      const headers = {
        ...req.headers,
        ...(body !== undefined ? { 'content-length': Buffer.byteLength(body) } : {}),
      };
      const options = { method, headers };
      const r =
        url.protocol === 'https:'
          ? httpsRequest(url, { ...options, ...(req.agent ? { agent: req.agent } : {}) })
          : httpRequest(url, options);
      let settled = false;
      const finish = (err: Error | undefined, value?: BoundedResponse) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          r.destroy();
          reject(err);
        } else resolve(value!);
      };
      // The deadline destroys the request: the socket is closed, nothing is read or buffered after it.
      const timer = setTimeout(() => finish(noAnswer(req)), remaining);
      r.on('error', (err) => finish(err));
      r.on('response', (res) => {
        const status = res.statusCode ?? 0;
        const location = res.headers.location;
        if (status >= 300 && status < 400 && location) {
          res.destroy();
          let target: URL;
          try {
            target = new URL(location, url);
          } catch {
            finish(new CredentialError('redirect to an invalid location; not followed'));
            return;
          }
          if (target.origin !== url.origin) {
            finish(
              new CredentialError(
                `${req.what} answered ${status} redirecting to ${displayUrl(target)}, ${target.protocol !== url.protocol ? 'another scheme' : 'another origin'}; not followed, so ${req.carries} never leaves the server you configured; configure the address that answers directly`,
              ),
            );
            return;
          }
          if (hops >= MAX_REDIRECTS) {
            finish(new CredentialError(`more than ${MAX_REDIRECTS} redirects`));
            return;
          }
          clearTimeout(timer);
          settled = true;
          const get = status === 303;
          attempt(target, get ? 'GET' : method, get ? undefined : body, hops + 1).then(resolve, reject);
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.byteLength;
          if (size > req.maxBodyBytes) {
            // Settled first: destroying the response emits 'aborted', which must not be the reason given.
            finish(
              new CredentialError(
                `the answer is larger than ${req.maxBodyBytes} bytes; stopped reading it (a real answer is a few KB: check the address)`,
              ),
            );
            res.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () =>
          finish(undefined, { status, headers: res.headers, body: Buffer.concat(chunks, size) }),
        );
        res.on('error', (err) => finish(err));
        res.on('aborted', () => finish(new CredentialError('connection closed by the server mid-answer')));
      });
      r.end(body);
    });
  const run = () => attempt(req.url, req.method, req.body, 0);
  const limit = req.agent && req.url.protocol === 'https:' ? slotsOf(req.agent, req.url.origin) : undefined;
  if (!limit) return run();
  // Waiting for one of the agent's sockets here holds a closure; in the agent's own queue a whole request
  // (socket options, headers, body) waited: 4,000 pairs retrying a Vault whose name resolves slowly held 50 MB.
  return new Promise<BoundedResponse>((resolve, reject) => {
    let abandoned = false;
    const timer = setTimeout(() => {
      abandoned = true;
      reject(noAnswer(req));
    }, req.deadlineMs);
    void limit(async () => {
      // The caller was told "no answer": nothing may be sent for it now (a login nobody would revoke).
      if (abandoned) return;
      clearTimeout(timer);
      await run().then(resolve, reject);
    });
  });
}

const slots = new WeakMap<Agent, Map<string, LimitFunction>>();

/**
 * A queue per agent and origin that lets as many requests run as the agent has sockets for one origin
 * (maxSockets is per origin: one hanging Vault must not hold the slots of another). None for an unbounded
 * agent.
 */
function slotsOf(agent: Agent, origin: string): LimitFunction | undefined {
  if (!Number.isFinite(agent.maxSockets)) return undefined;
  let byOrigin = slots.get(agent);
  if (!byOrigin) {
    byOrigin = new Map();
    slots.set(agent, byOrigin);
  }
  let limit = byOrigin.get(origin);
  if (!limit) {
    limit = pLimit(agent.maxSockets);
    byOrigin.set(origin, limit);
  }
  return limit;
}

function noAnswer(req: BoundedRequest): CredentialError {
  return new CredentialError(
    `no answer within ${req.deadlineMs} ms (the request was abandoned at that deadline); check that the server is up and reachable`,
  );
}
