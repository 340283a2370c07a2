/**
 * Push webhooks: a git server tells the reconciler that the tracked branch moved, and a pass starts at once
 * instead of at the next poll. Each provider's own authentication, checked before anything else is read:
 *
 * | provider | header | check |
 * | --- | --- | --- |
 * | GitHub | `X-Hub-Signature-256: sha256=<hex>` | HMAC-SHA256 of the raw body with the shared secret |
 * | Gitea / Forgejo | `X-Gitea-Signature: <hex>` | HMAC-SHA256 of the raw body |
 * | GitLab | `X-Gitlab-Token: <secret>` | the shared secret itself (GitLab signs nothing) |
 * | generic | `X-Signature: sha256=<hex>` | HMAC-SHA256 of the raw body (Flux's `generic-hmac` receiver format) |
 *
 * Every comparison is constant-time (`crypto.timingSafeEqual` over equal-length digests: the GitLab token is
 * compared as SHA-256 digests, so its length does not leak either). A missing or wrong signature is 401 and
 * counted; nothing of an unauthenticated body is parsed.
 *
 * Budget: the body is capped (`maxBodyBytes`, default 1 MiB: a GitHub push payload holds at most 20 commits
 * and is a few KB to a few hundred KB) and refused with 413 as soon as it goes over, or at once when
 * Content-Length says so; the body has a deadline (`deadlineMs`, default 10 s, from the end of the headers)
 * after which the request gets 408 and the socket is closed, so a sender trickling bytes (slowloris) holds
 * nothing for long. The server's `headersTimeout` bounds the header phase (reconciler/http/server.ts).
 *
 * The payload is only a trigger: the pass always fetches the branch from git, never trusts a commit id from
 * the request. So a replayed delivery can never roll anything back; it could only cost a pass. Replays are
 * still recognised, after the signature check: a delivery id already seen (`X-GitHub-Delivery`,
 * `X-Gitea-Delivery`, `X-Gitlab-Event-UUID`, `X-Delivery-Id`), or a body naming a commit (`after`) byte-identical
 * to one seen within the window (every real push has a new `after`), is answered 200 `duplicate` and starts nothing. A server's
 * "redeliver" of a delivery that was received is the same case. The memory of deliveries is bounded
 * (entries and age).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';

export const WEBHOOK_PROVIDERS = ['github', 'gitlab', 'gitea', 'generic'] as const;
export type WebhookProvider = (typeof WEBHOOK_PROVIDERS)[number];

export type RejectReason =
  | 'missing-signature'
  | 'bad-signature'
  | 'too-large'
  | 'deadline'
  | 'bad-payload'
  | 'method'
  | 'unknown-provider';

export type WebhookOutcome =
  | { result: 'accepted'; provider: WebhookProvider; ref: string | null; delivery: string | null }
  | {
      result: 'ignored';
      provider: WebhookProvider;
      why: 'other-branch' | 'not-a-push' | 'ping';
      ref: string | null;
      delivery: string | null;
    }
  | { result: 'duplicate'; provider: WebhookProvider; delivery: string | null }
  | { result: 'rejected'; provider: WebhookProvider | null; reason: RejectReason; status: number };

export interface WebhookOptions {
  /** The shared secret configured on the git server (HMAC key, or GitLab's token). Never logged. */
  secret: string | Buffer;
  /**
   * The tracked branch (`main`); pushes to other refs are acknowledged and ignored. A function is asked on
   * every delivery: while it returns null (the default branch not fetched yet), every authenticated push is
   * accepted, since a git server does not retry a refused delivery and the pass it starts learns the branch.
   */
  branch: string | (() => string | null);
  /** Providers accepted; default all four. Turn off GitLab where its unsigned token is not wanted. */
  providers?: readonly WebhookProvider[];
  /** Body cap in bytes; default 1 MiB. */
  maxBodyBytes?: number;
  /** Overall deadline of one request in ms; default 10 s. */
  deadlineMs?: number;
  /** How long a delivery is remembered for replay detection, ms; default 1 h. */
  replayWindowMs?: number;
  /** How many deliveries are remembered at most; default 10 000. */
  replayCapacity?: number;
  now?: () => number;
}

export const DEFAULT_WEBHOOK_MAX_BODY = 1024 * 1024;
export const DEFAULT_WEBHOOK_DEADLINE_MS = 10_000;

const SIGNATURE_HEADER: Record<WebhookProvider, string> = {
  github: 'x-hub-signature-256',
  gitea: 'x-gitea-signature',
  gitlab: 'x-gitlab-token',
  generic: 'x-signature',
};
const DELIVERY_HEADERS = ['x-github-delivery', 'x-gitea-delivery', 'x-gitlab-event-uuid', 'x-delivery-id'];
const HEX64 = /^[0-9a-f]{64}$/i;

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Whether `body` carries a valid signature of `provider` under `secret`. Constant-time in the secret and the
 * signature; a malformed header is a bad signature, an absent one a missing one.
 */
export function verifySignature(
  provider: WebhookProvider,
  headers: IncomingHttpHeaders,
  body: Buffer,
  secret: string | Buffer,
): { ok: true } | { ok: false; reason: 'missing-signature' | 'bad-signature' } {
  const given = header(headers, SIGNATURE_HEADER[provider]);
  if (given === undefined || given === '') return { ok: false, reason: 'missing-signature' };
  if (provider === 'gitlab') {
    const a = createHash('sha256').update(given).digest();
    const b = createHash('sha256').update(secret).digest();
    return timingSafeEqual(a, b) ? { ok: true } : { ok: false, reason: 'bad-signature' };
  }
  let hex = given.trim();
  if (provider !== 'gitea') {
    if (!hex.toLowerCase().startsWith('sha256=')) return { ok: false, reason: 'bad-signature' };
    hex = hex.slice('sha256='.length);
  }
  if (!HEX64.test(hex)) return { ok: false, reason: 'bad-signature' };
  const expected = createHmac('sha256', secret).update(body).digest();
  return timingSafeEqual(Buffer.from(hex, 'hex'), expected)
    ? { ok: true }
    : { ok: false, reason: 'bad-signature' };
}

export interface PushEvent {
  /** `push`, `ping`, or anything else the provider sent (`other`). */
  type: 'push' | 'ping' | 'other';
  /** The full ref that moved (`refs/heads/main`), or null when the payload does not say. */
  ref: string | null;
  /** The commit the ref moved to (`after` in GitHub, GitLab and Gitea payloads), or null when not given. */
  after: string | null;
}

/** The event of an authenticated delivery. Throws on a body that is not the JSON the provider sends. */
export function parsePushEvent(
  provider: WebhookProvider,
  headers: IncomingHttpHeaders,
  body: Buffer,
): PushEvent {
  let payload: unknown = null;
  if (body.length > 0) {
    try {
      payload = JSON.parse(body.toString('utf8'));
    } catch {
      if (provider !== 'generic') throw new Error('body is not JSON');
    }
  }
  const ref =
    typeof payload === 'object' && payload !== null && typeof (payload as { ref?: unknown }).ref === 'string'
      ? (payload as { ref: string }).ref
      : null;
  const afterField =
    typeof payload === 'object' && payload !== null ? (payload as { after?: unknown }).after : null;
  const after = typeof afterField === 'string' && /^[0-9a-f]{40,64}$/i.test(afterField) ? afterField : null;
  const event =
    provider === 'github'
      ? header(headers, 'x-github-event')
      : provider === 'gitea'
        ? (header(headers, 'x-gitea-event') ?? header(headers, 'x-github-event'))
        : provider === 'gitlab'
          ? header(headers, 'x-gitlab-event')
          : 'push';
  if (event === 'ping') return { type: 'ping', ref, after };
  if (event === 'push' || event === 'Push Hook') return { type: 'push', ref, after };
  return { type: 'other', ref, after };
}

/** Bounded memory of recent deliveries (ids and body digests) with an age limit; O(1) per check. */
export class ReplayGuard {
  readonly #seen = new Map<string, number>();

  constructor(
    private readonly windowMs = 3_600_000,
    private readonly capacity = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records the keys; true when any of them was seen within the window. */
  check(keys: readonly string[]): boolean {
    const now = this.now();
    this.#expire(now);
    let seen = false;
    for (const k of keys) {
      const at = this.#seen.get(k);
      if (at !== undefined && now - at < this.windowMs) seen = true;
    }
    for (const k of keys) {
      this.#seen.delete(k); // re-insert at the end: Map order is the age order
      this.#seen.set(k, now);
    }
    while (this.#seen.size > this.capacity) this.#seen.delete(this.#seen.keys().next().value!);
    return seen;
  }

  #expire(now: number): void {
    for (const [k, at] of this.#seen) {
      if (now - at < this.windowMs) break;
      this.#seen.delete(k);
    }
  }
}

/** What the handler tells its caller about each request (for the trigger, metrics and logs). */
export type OnWebhook = (outcome: WebhookOutcome) => void;

/**
 * A node:http request handler for `POST <prefix>/<provider>` (e.g. `/hooks/github`). It answers every
 * request itself and calls `onOutcome` once per request; on `accepted` the caller fires the loop's trigger.
 */
export function createWebhookHandler(
  opts: WebhookOptions,
  onOutcome: OnWebhook,
): (req: IncomingMessage, res: ServerResponse, provider: string) => void {
  const providers = new Set<string>(opts.providers ?? WEBHOOK_PROVIDERS);
  const maxBody = opts.maxBodyBytes ?? DEFAULT_WEBHOOK_MAX_BODY;
  const deadlineMs = opts.deadlineMs ?? DEFAULT_WEBHOOK_DEADLINE_MS;
  const replay = new ReplayGuard(opts.replayWindowMs, opts.replayCapacity, opts.now);
  const branchOf = typeof opts.branch === 'function' ? opts.branch : () => opts.branch as string;
  if (Buffer.byteLength(opts.secret) < 16)
    throw new RangeError(
      'webhook secret must be at least 16 bytes (generate one with `openssl rand -hex 32`)',
    );

  return (req, res, name) => {
    let done = false;
    const answer = (status: number, body: Record<string, unknown>, outcome: WebhookOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const text = `${JSON.stringify(body)}\n`;
      const refused = status >= 400;
      // A refused request is not read to its end: the connection is closed once the answer is out.
      res.writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
        ...(refused ? { connection: 'close' } : {}),
      });
      res.end(text, () => {
        if (refused) req.socket.destroy();
      });
      if (refused) setTimeout(() => req.socket.destroy(), 1000).unref();
      onOutcome(outcome);
    };
    const reject = (provider: WebhookProvider | null, status: number, reason: RejectReason) =>
      answer(status, { result: 'rejected', reason }, { result: 'rejected', provider, reason, status });

    const timer = setTimeout(
      () => reject(providers.has(name) ? (name as WebhookProvider) : null, 408, 'deadline'),
      deadlineMs,
    );
    timer.unref();

    if (!providers.has(name)) return reject(null, 404, 'unknown-provider');
    const provider = name as WebhookProvider;
    if (req.method !== 'POST') return reject(provider, 405, 'method');
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBody) return reject(provider, 413, 'too-large');

    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > maxBody) {
        reject(provider, 413, 'too-large');
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', () => clearTimeout(timer));
    req.on('end', () => {
      if (done) return;
      const body = Buffer.concat(chunks, size);
      const verdict = verifySignature(provider, req.headers, body, opts.secret);
      if (!verdict.ok) return reject(provider, 401, verdict.reason);
      let event: PushEvent;
      try {
        event = parsePushEvent(provider, req.headers, body);
      } catch {
        return reject(provider, 400, 'bad-payload');
      }
      const delivery = DELIVERY_HEADERS.map((h) => header(req.headers, h)).find((v) => v) ?? null;
      // A byte-identical body is a replay only when it names the commit (every real push has a new `after`): a
      // generic sender that posts one constant body on every push must not be ignored for the whole window.
      const keys = event.after ? [`body:${createHash('sha256').update(body).digest('hex')}`] : [];
      if (delivery) keys.push(`id:${provider}:${delivery}`);
      if (event.type === 'ping')
        return answer(
          200,
          { result: 'ignored', why: 'ping' },
          { result: 'ignored', provider, why: 'ping', ref: null, delivery },
        );
      if (event.type !== 'push')
        return answer(
          200,
          { result: 'ignored', why: 'not-a-push' },
          { result: 'ignored', provider, why: 'not-a-push', ref: event.ref, delivery },
        );
      if (replay.check(keys))
        return answer(200, { result: 'duplicate' }, { result: 'duplicate', provider, delivery });
      const branch = branchOf();
      const tracked = branch === null ? null : `refs/heads/${branch}`;
      if (event.ref !== null && tracked !== null && event.ref !== tracked)
        return answer(
          200,
          { result: 'ignored', why: 'other-branch', tracking: tracked },
          { result: 'ignored', provider, why: 'other-branch', ref: event.ref, delivery },
        );
      answer(202, { result: 'accepted' }, { result: 'accepted', provider, ref: event.ref, delivery });
    });
  };
}
