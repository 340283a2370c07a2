/**
 * The reconciler's HTTP API (node:http, or node:https with optional mutual TLS). Every route but the probes
 * and the signed webhooks authenticates its caller (auth.ts); there is no anonymous access to status,
 * metrics or edits, and plain HTTP is refused on anything but a loopback address.
 *
 * | route | who | what |
 * | --- | --- | --- |
 * | `GET /healthz` | anyone | 200 `ok` while the process serves (liveness) |
 * | `GET /readyz` | anyone | 200 `ok`, or 503 `not ready: <reason>` (readiness) |
 * | `GET /metrics` | admin, metrics | Prometheus exposition |
 * | `POST /hooks/<provider>` | signature | push webhooks (loop/webhook.ts) |
 * | `GET /api/v1/status` | admin | the whole status snapshot |
 * | `GET /api/v1/source` | admin | `{source, events}` |
 * | `GET /api/v1/kinds/<Kind>[?name=&namespace=]` | admin | `{items}` |
 * | `GET /api/v1/kinds/<Kind>/<name>[?namespace=]` | admin | `{item, events}`; 404, or 409 when the name is in several namespaces |
 * | `POST /api/v1/apply` | admin | `{manifests, filename?}` → validated and committed into the policy working copy |
 * | `POST /api/v1/delete` | admin | `{manifests?, targets?, ignoreNotFound?}` → likewise |
 * | `POST /api/v1/drift` | admin | `{heal?}` → one drift report now (drift/runner.ts): `{id, files, report}`; 409 when drift is not served |
 * | `GET <issuer path>/.well-known/openid-configuration`, `<issuer path>/keys` | anyone | OIDC discovery and JWKS (public documents relying parties such as AWS STS and Vault fetch), when `oidc` is given |
 *
 * Budget: headers within 10 s, a whole request within 30 s (Node's `headersTimeout` / `requestTimeout`), request
 * bodies capped at 1 MiB (the policy file cap), at most 256 connections.
 */

import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { isLoopbackHost } from '../../kernel-module/loopback.ts';
import type { DriftReport } from '../drift/report.ts';
import { classify } from '../errors/classify.ts';
import { resolveKind } from '../status/format.ts';
import {
  daemonKey,
  type ResourceStatus,
  resourceKeyOf,
  type StatusSnapshot,
  sourceKey,
} from '../status/model.ts';
import type { ReconcilerMetrics } from '../telemetry/metrics.ts';
import type { PolicyEditor } from '../working-copy/editor.ts';
import { ensureApiCredential, removeEndpoint, writeEndpoint } from './api-credentials.ts';
import { allowed, authenticate, type Principal } from './auth.ts';

export interface ApiTls {
  cert: string | Buffer;
  key: string | Buffer;
  /** Trust bundle for client certificates (mTLS); without it, callers authenticate with the bearer credential. */
  clientCa?: string | Buffer;
  /** SPIFFE IDs whose client X.509-SVID makes the caller an admin. */
  adminSpiffeIds?: string[];
  /** A PEM file that verifies this server's certificate, advertised to local clients in endpoint.json. */
  caFile?: string;
}

export interface ApiServerOptions {
  host: string;
  /** 0: the OS picks. */
  port: number;
  stateDir: string;
  tls?: ApiTls;
  status: () => StatusSnapshot | Promise<StatusSnapshot>;
  ready: () => { ready: true } | { ready: false; reason: string };
  metrics: ReconcilerMetrics;
  /** The handler of `/hooks/<provider>` (createWebhookHandler); absent: 404. */
  webhook?: (req: IncomingMessage, res: ServerResponse, provider: string) => void;
  editor?: PolicyEditor;
  /** Makes one drift report (drift/runner.ts DriftRunner.run); absent: `POST /api/v1/drift` answers 409. */
  drift?: (opts: { heal: boolean }) => Promise<{ id: string; files: string[]; report: DriftReport }>;
  /**
   * The OIDC discovery handler (identity/oidc-discovery.ts): answers its two public paths under the issuer's
   * path and resolves false for anything else.
   */
  oidc?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;
  logger?: Logger;
  maxBodyBytes?: number;
}

export interface ApiServer {
  readonly url: string;
  readonly server: Server;
  /** Stops accepting, lets requests in flight finish within `graceMs`, then closes what is left. */
  close(graceMs?: number): Promise<void>;
}

export class ApiListenError extends Error {}

const DEFAULT_MAX_BODY = 1024 * 1024;

/** The error body of every refusal: an HTTP-level code (`Unauthenticated`, `NotFound`, …) or a ReconcileError code. */
export interface ApiErrorBody {
  code: string;
  reason: string;
  hint: string;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly error: ApiErrorBody,
  ) {
    super(error.reason);
  }
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = typeof body === 'string' ? body : `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) {
      reject(
        new HttpError(413, {
          code: 'PayloadTooLarge',
          reason: `request body over ${max} bytes`,
          hint: 'split the manifests into smaller files',
        }),
      );
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        reject(
          new HttpError(413, {
            code: 'PayloadTooLarge',
            reason: `request body over ${max} bytes`,
            hint: 'split the manifests into smaller files',
          }),
        );
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks, size)));
    req.on('error', reject);
  });
}

function parseJson(body: Buffer): Record<string, unknown> {
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new HttpError(400, {
    code: 'BadRequest',
    reason: 'the request body is not a JSON object',
    hint: 'use riptides-cli ctl',
  });
}

const badRequest = (reason: string) =>
  new HttpError(400, { code: 'BadRequest', reason, hint: 'see riptides-cli ctl --help' });

/** Why the API does not serve plain HTTP on a host that is not loopback. */
export const apiPlainHttpRefusal = (host: string) =>
  `refusing to serve the API over plain HTTP on ${host}: listen on 127.0.0.1, or give it a certificate (--api-cert-file, --api-key-file)`;

/** Starts the API; writes `<state-dir>/api/endpoint.json` once it listens. */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  if (!opts.tls && !isLoopbackHost(opts.host)) throw new ApiListenError(apiPlainHttpRefusal(opts.host));
  const auth = {
    tokens: {
      admin: await ensureApiCredential(opts.stateDir, 'admin'),
      metrics: await ensureApiCredential(opts.stateDir, 'metrics'),
    },
    adminSpiffeIds: opts.tls?.adminSpiffeIds ?? [],
  };
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  let shuttingDown = false;

  const apiHandler = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://api.invalid');
    const path = url.pathname;
    let route = 'other';
    const done = (status: number, body: unknown, headers?: Record<string, string>) => {
      opts.metrics.apiRequests.inc({ route, code: String(status) });
      // While shutting down, no connection is kept for another request.
      send(res, status, body, shuttingDown ? { ...headers, connection: 'close' } : headers);
    };
    const fail = (err: unknown) => {
      if (err instanceof HttpError) return done(err.status, { error: err.error });
      const e = classify(err);
      opts.logger?.error({ err, route }, 'API request failed');
      done(500, { error: { code: e.code, reason: e.reason, hint: e.hint } });
    };

    if (path === '/healthz' || path === '/readyz') {
      route = path;
      if (path === '/healthz') return done(200, 'ok\n');
      const r = opts.ready();
      return r.ready ? done(200, 'ok\n') : done(503, `not ready: ${r.reason}\n`);
    }
    const hook = /^\/hooks\/([a-z]+)$/.exec(path);
    if (hook) {
      route = '/hooks';
      if (!opts.webhook)
        return done(404, {
          error: {
            code: 'NotFound',
            reason: 'webhooks are not enabled',
            hint: 'start the reconciler with a webhook secret',
          },
        });
      // Authenticated by the provider's signature; the handler answers and counts.
      res.on('finish', () => opts.metrics.apiRequests.inc({ route, code: String(res.statusCode) }));
      return opts.webhook(req, res, hook[1]!);
    }
    route = path === '/metrics' ? '/metrics' : (path.match(/^\/api\/v1\/[a-z]+/)?.[0] ?? 'other');
    if (url.searchParams.has('token') || url.searchParams.has('access_token'))
      return done(400, {
        error: {
          code: 'BadRequest',
          reason: 'credentials in the URL are refused',
          hint: 'send them as Authorization: Bearer',
        },
      });
    const principal: Principal | null = authenticate(req, auth);
    if (!principal)
      return done(
        401,
        {
          error: {
            code: 'Unauthenticated',
            reason: 'no valid credential',
            hint: 'use the admin credential of the state directory (ctl --state-dir) or an admin SVID',
          },
        },
        {
          'www-authenticate': 'Bearer realm="riptides"',
        },
      );
    if (!allowed(principal.role, req.method ?? 'GET', route))
      return done(403, {
        error: {
          code: 'Forbidden',
          reason: `${principal.id} may not ${req.method} ${path}`,
          hint: 'use the admin credential',
        },
      });

    (async () => {
      if (route === '/metrics' && req.method === 'GET') {
        const m = await opts.metrics.exposition();
        return done(200, m.body, { 'content-type': m.contentType });
      }
      if (req.method === 'GET') return done(200, await get(path, url.searchParams, await opts.status()));
      if (req.method === 'POST' && (path === '/api/v1/apply' || path === '/api/v1/delete')) {
        if (!opts.editor)
          throw new HttpError(409, {
            code: 'NotAWorkingCopy',
            reason: 'this reconciler has no policy working copy to edit',
            hint: 'commit to the policy repository with git',
          });
        const body = parseJson(await readBody(req, maxBody));
        const result =
          path === '/api/v1/apply'
            ? await opts.editor.apply({
                manifests: typeof body.manifests === 'string' ? body.manifests : '',
                filename: typeof body.filename === 'string' ? body.filename : undefined,
                author: principal.id,
              })
            : await opts.editor.delete({
                manifests: typeof body.manifests === 'string' ? body.manifests : undefined,
                targets: Array.isArray(body.targets) ? (body.targets as never) : undefined,
                ignoreNotFound: body.ignoreNotFound === true,
                author: principal.id,
              });
        opts.logger?.info(
          { principal: principal.id, route, ok: result.ok, commit: result.ok ? result.commit : undefined },
          'policy edit',
        );
        return done(result.ok ? 200 : result.status, result);
      }
      if (req.method === 'POST' && path === '/api/v1/drift') {
        if (!opts.drift)
          throw new HttpError(409, {
            code: 'DriftNotServed',
            reason: 'this reconciler serves no node agents, so there is no live state to compare',
            hint: 'run drift against riptides-cli up or riptides-cli reconciler',
          });
        const body = parseJson(await readBody(req, maxBody));
        if (body.heal !== undefined && typeof body.heal !== 'boolean')
          throw badRequest('heal must be a boolean');
        const run = await opts.drift({ heal: body.heal === true });
        opts.logger?.info(
          {
            principal: principal.id,
            route,
            heal: body.heal === true,
            id: run.id,
            drifted: run.report.drifted,
          },
          'drift report',
        );
        return done(200, { id: run.id, files: run.files, report: run.report });
      }
      const known = req.method === 'GET' || req.method === 'POST';
      throw new HttpError(known ? 404 : 405, {
        code: known ? 'NotFound' : 'MethodNotAllowed',
        reason: `no route ${req.method} ${path}`,
        hint: 'see the API table in reconciler/http/server.ts',
      });
    })().catch(fail);
  };

  const oidc = opts.oidc;
  // The OIDC documents are public (relying parties fetch them anonymously); every other path is the API's.
  const handler = oidc
    ? (req: IncomingMessage, res: ServerResponse) => {
        const path = (req.url ?? '/').split('?')[0]!;
        const get = req.method === 'GET' || req.method === 'HEAD';
        if (!get || path.startsWith('/api/') || path.startsWith('/hooks/') || path === '/metrics')
          return apiHandler(req, res);
        oidc(req, res).then(
          (served) => {
            if (!served) return apiHandler(req, res);
            opts.metrics.apiRequests.inc({ route: 'oidc', code: String(res.statusCode) });
          },
          (err: unknown) => {
            opts.logger?.error({ err }, 'OIDC discovery request failed');
            if (!res.headersSent) send(res, 503, 'keys unavailable, retry\n', { 'retry-after': '1' });
            else res.destroy();
          },
        );
      }
    : apiHandler;

  const server: Server = opts.tls
    ? createHttpsServer(
        {
          cert: opts.tls.cert,
          key: opts.tls.key,
          ...(opts.tls.clientCa
            ? { ca: opts.tls.clientCa, requestCert: true, rejectUnauthorized: false }
            : {}),
          minVersion: 'TLSv1.2',
        },
        handler,
      )
    : createHttpServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  server.maxHeadersCount = 100;
  server.maxConnections = 256;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address() as { port: number };
  const host = isIP(opts.host) === 6 ? `[${opts.host}]` : opts.host;
  const url = `${opts.tls ? 'https' : 'http'}://${host}:${address.port}`;
  await writeEndpoint(opts.stateDir, {
    url,
    pid: process.pid,
    ...(opts.tls?.caFile ? { caFile: opts.tls.caFile } : {}),
  });

  let closing: Promise<void> | null = null;
  return {
    url,
    server,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        shuttingDown = true;
        await removeEndpoint(opts.stateDir);
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        await closed;
        clearTimeout(timer);
      })();
      return closing;
    },
  };
}

/** The read-only routes over a snapshot. */
function get(path: string, query: URLSearchParams, snap: StatusSnapshot): unknown {
  if (path === '/api/v1/status') return snap;
  if (path === '/api/v1/source')
    return {
      source: snap.source,
      events: snap.source ? (snap.events[sourceKey(snap.source.name)] ?? []) : [],
    };
  const m = /^\/api\/v1\/kinds\/([A-Za-z.]+)(?:\/([^/]+))?$/.exec(path);
  if (!m)
    throw new HttpError(404, {
      code: 'NotFound',
      reason: `no route GET ${path}`,
      hint: 'see riptides-cli ctl --help',
    });
  const kind = resolveKind(m[1]!);
  if (!kind || kind === 'Source') throw badRequest(`unknown kind "${m[1]}"`);
  const namespace = query.get('namespace') ?? undefined;
  const name = m[2] !== undefined ? decodeURIComponent(m[2]) : (query.get('name') ?? undefined);
  const rows: Array<ResourceStatus | StatusSnapshot['daemons'][number]> =
    kind === 'Daemon' ? snap.daemons : snap.resources.filter((r) => r.kind === kind);
  const items = rows.filter(
    (r) =>
      (name === undefined || r.name === name) &&
      (namespace === undefined || !('kind' in r) || r.namespace === namespace),
  );
  if (m[2] === undefined) return { items };
  if (items.length === 0)
    throw new HttpError(404, {
      code: 'NotFound',
      reason: `${kind} "${name}" not found`,
      hint: `list them with riptides-cli ctl get ${kind.toLowerCase()}`,
    });
  if (items.length > 1)
    throw new HttpError(409, {
      code: 'Ambiguous',
      reason: `${kind} "${name}" exists in several namespaces`,
      hint: 'pass --namespace',
    });
  const item = items[0]!;
  const key = 'kind' in item ? resourceKeyOf(item) : daemonKey(item.name);
  return { item, events: snap.events[key] ?? [] };
}
