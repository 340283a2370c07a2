/**
 * A Kubernetes API server for tests, for the calls a Secret consumer and a node agent make:
 *  - GET /api/v1/namespaces/{ns}/secrets/{name};
 *  - GET /api/v1/namespaces/{ns}/secrets[?fieldSelector=metadata.name%3D{name}]: a SecretList whose
 *    metadata.resourceVersion is the store's current one (what a watch should start from);
 *  - GET /api/v1/namespaces/{ns}/secrets?watch=true&fieldSelector=metadata.name%3D{name}[&resourceVersion=N]
 *    streaming JSON lines {type: ADDED|MODIFIED|DELETED, object} (without resourceVersion: the current object
 *    as a synthetic ADDED first, as the API server does; with one: every later event);
 *  - pods (pods.ts): list and watch, cluster-wide and per namespace, with field and label selectors;
 *  - history compaction as etcd does it: only the last `historyLimit` Secret events are kept, and `compact()`
 *    drops every event (Secrets and pods); a watch from a resourceVersion older than what is kept gets one
 *    ERROR event carrying a 410 Expired Status ("too old resource version") and the stream ends, as the API
 *    server does;
 *  - bearer-token auth and RBAC; 401, 403 and 404 as `kind: Status` bodies exactly as the API server sends them.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Routed, sendJson, TestHttpsServer } from './base.ts';
import { status } from './kube-status.ts';
import { PodStore, type TestPod } from './pods.ts';

export interface KubeUser {
  /** e.g. system:serviceaccount:riptides-system:reconciler */
  name: string;
  /** Namespaces whose Secrets (and pods) this user may get/list/watch. */
  namespaces: string[];
  /** May list and watch pods in all namespaces (a ClusterRole binding, as a node agent has). */
  clusterPods?: boolean;
}

interface StoredSecret {
  object: Record<string, unknown>;
}

interface Watcher {
  ns: string;
  name: string;
  res: ServerResponse;
}

export class KubernetesTestServer extends TestHttpsServer {
  private readonly secrets = new Map<string, StoredSecret>();
  private readonly history: Array<{ rv: number; type: string; ns: string; name: string; object: unknown }> =
    [];
  private readonly watchers = new Set<Watcher>();
  private rv = 1000;
  /** Events at or below this resourceVersion are gone (compacted). */
  private compactedRv = 1000;
  readonly issuedValues: string[] = [];
  private readonly pods = new PodStore(() => ++this.rv);

  constructor(
    private readonly users: Record<string, KubeUser>,
    /** Events kept for watches, like etcd's compaction window. */
    private readonly historyLimit = 1000,
  ) {
    super();
  }

  /**
   * Drops the whole event history, as etcd compaction does (one revision space for every kind): every watch,
   * of Secrets or pods, from an older resourceVersion now gets 410 Expired.
   */
  compact(): void {
    this.compactedRv = this.rv;
    this.history.length = 0;
    this.pods.compact();
  }

  /** Creates or replaces a pod (ADDED / MODIFIED for watchers). Returns the stored object. */
  putPod(pod: TestPod): Record<string, unknown> {
    return this.pods.put(pod);
  }

  deletePod(namespace: string, name: string): void {
    this.pods.delete(namespace, name);
  }

  /** Open pod watch streams. */
  get podWatchCount(): number {
    return this.pods.watchCount;
  }

  /** Creates or replaces a Secret (ADDED / MODIFIED for watchers). Values are plain strings, stored base64. */
  putSecret(ns: string, name: string, values: Record<string, string>): void {
    for (const v of Object.values(values)) this.issuedValues.push(v);
    this.store(
      ns,
      name,
      Object.fromEntries(Object.entries(values).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
    );
  }

  /**
   * Fault injection: serves `data` exactly as given, as a non-conforming server or a proxy might. The real API
   * server refuses to store a value that is not base64, so clients must never see one; this checks that a
   * client refuses it rather than decoding it leniently.
   */
  serveCorruptSecret(ns: string, name: string, data: Record<string, string>): void {
    this.store(ns, name, data);
  }

  private store(ns: string, name: string, data: Record<string, string>): void {
    const key = `${ns}/${name}`;
    const existing = this.secrets.get(key);
    const rv = ++this.rv;
    const meta = (existing?.object.metadata ?? {
      name,
      namespace: ns,
      uid: randomUUID(),
      creationTimestamp: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    }) as Record<string, unknown>;
    const object = {
      kind: 'Secret',
      apiVersion: 'v1',
      metadata: { ...meta, resourceVersion: String(rv) },
      data,
      type: 'Opaque',
    };
    this.secrets.set(key, { object });
    this.publish(existing ? 'MODIFIED' : 'ADDED', ns, name, object, rv);
  }

  deleteSecret(ns: string, name: string): void {
    const key = `${ns}/${name}`;
    const existing = this.secrets.get(key);
    if (!existing) return;
    this.secrets.delete(key);
    const rv = ++this.rv;
    const object = {
      ...existing.object,
      metadata: { ...(existing.object.metadata as object), resourceVersion: String(rv) },
    };
    this.publish('DELETED', ns, name, object, rv);
  }

  /** Open watch streams (to check that consumers hold one per Secret, not one per binding). */
  get watchCount(): number {
    return this.watchers.size;
  }

  private publish(type: string, ns: string, name: string, object: unknown, rv: number): void {
    this.history.push({ rv, type, ns, name, object });
    while (this.history.length > this.historyLimit) this.compactedRv = this.history.shift()!.rv;
    for (const w of this.watchers)
      if (w.ns === ns && w.name === name) w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  protected unavailable(res: ServerResponse): void {
    sendJson(
      res,
      503,
      status(503, 'ServiceUnavailable', 'the server is currently unable to handle the request'),
    );
  }

  protected route(req: IncomingMessage, res: ServerResponse): Routed {
    const url = new URL(req.url ?? '/', 'https://kube');
    const one = /^\/api\/v1\/namespaces\/([^/]+)\/secrets\/([^/]+)$/.exec(url.pathname);
    const list = /^\/api\/v1\/namespaces\/([^/]+)\/secrets$/.exec(url.pathname);
    if (req.method === 'GET' && one)
      return {
        key: 'get',
        handle: () => this.get(req, res, decodeURIComponent(one[1]!), decodeURIComponent(one[2]!)),
      };
    const watching = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    if (req.method === 'GET' && list && watching)
      return {
        key: 'watch',
        handle: () => this.watch(req, res, decodeURIComponent(list[1]!), url.searchParams),
      };
    if (req.method === 'GET' && list)
      return {
        key: 'list',
        handle: () => this.list(req, res, decodeURIComponent(list[1]!), url.searchParams),
      };
    const pods = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?pods$/.exec(url.pathname);
    if (req.method === 'GET' && pods) {
      const ns = pods[1] === undefined ? null : decodeURIComponent(pods[1]);
      return {
        key: watching ? 'pods-watch' : 'pods-list',
        handle: () => {
          if (!this.authorizePods(req, res, watching ? 'watch' : 'list', ns)) return;
          if (watching) this.pods.watch(res, ns, url.searchParams);
          else this.pods.list(res, ns, url.searchParams);
        },
      };
    }
    return {
      key: 'other',
      handle: () =>
        sendJson(res, 404, status(404, 'NotFound', 'the server could not find the requested resource')),
    };
  }

  /** 401 or 403 written when the caller may not `verb` Secrets in `ns`; undefined when allowed. */
  private authorize(
    req: IncomingMessage,
    res: ServerResponse,
    verb: string,
    ns: string,
    name?: string,
  ): boolean {
    const auth = req.headers.authorization ?? '';
    const user = auth.startsWith('Bearer ') ? this.users[auth.slice(7)] : undefined;
    if (!user) {
      sendJson(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return false;
    }
    if (!user.namespaces.includes(ns)) {
      const what = name ? `secrets "${name}"` : 'secrets';
      sendJson(
        res,
        403,
        status(
          403,
          'Forbidden',
          `${what} is forbidden: User "${user.name}" cannot ${verb} resource "secrets" in API group "" in the namespace "${ns}"`,
          { ...(name ? { name } : {}), kind: 'secrets' },
        ),
      );
      return false;
    }
    return true;
  }

  /** RBAC for pods: cluster scope needs `clusterPods`; a namespace needs it or the namespace. */
  private authorizePods(req: IncomingMessage, res: ServerResponse, verb: string, ns: string | null): boolean {
    const auth = req.headers.authorization ?? '';
    const user = auth.startsWith('Bearer ') ? this.users[auth.slice(7)] : undefined;
    if (!user) {
      sendJson(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return false;
    }
    if (user.clusterPods || (ns !== null && user.namespaces.includes(ns))) return true;
    const where = ns === null ? 'at the cluster scope' : `in the namespace "${ns}"`;
    sendJson(
      res,
      403,
      status(
        403,
        'Forbidden',
        `pods is forbidden: User "${user.name}" cannot ${verb} resource "pods" in API group "" ${where}`,
        { kind: 'pods' },
      ),
    );
    return false;
  }

  private get(req: IncomingMessage, res: ServerResponse, ns: string, name: string) {
    if (!this.authorize(req, res, 'get', ns, name)) return;
    const s = this.secrets.get(`${ns}/${name}`);
    if (!s)
      return sendJson(
        res,
        404,
        status(404, 'NotFound', `secrets "${name}" not found`, { name, kind: 'secrets' }),
      );
    sendJson(res, 200, s.object);
  }

  private list(req: IncomingMessage, res: ServerResponse, ns: string, q: URLSearchParams) {
    if (!this.authorize(req, res, 'list', ns)) return;
    const selector = q.get('fieldSelector');
    const byName = selector ? /^metadata\.name=(.+)$/.exec(selector)?.[1] : undefined;
    if (selector && byName === undefined) {
      sendJson(res, 400, status(400, 'BadRequest', 'this test server only lists by metadata.name'));
      return;
    }
    const items = [...this.secrets.entries()]
      .filter(([key]) => key.startsWith(`${ns}/`) && (byName === undefined || key === `${ns}/${byName}`))
      .map(([, s]) => s.object);
    sendJson(res, 200, {
      kind: 'SecretList',
      apiVersion: 'v1',
      metadata: { resourceVersion: String(this.rv) },
      items,
    });
    this.timeline.push(['list', Date.now()]);
    const after = this.afterNextList;
    this.afterNextList = undefined;
    after?.();
  }

  /** Watches answered 410 Expired (a resourceVersion older than the history kept). */
  expired = 0;
  /** Runs once after the next LIST is answered (to change the store between a client's list and watch). */
  afterNextList: (() => void) | undefined;
  /** When each LIST and watch arrived (epoch ms), in order: [kind, at]. */
  readonly timeline: Array<['list' | 'watch', number]> = [];

  private watch(req: IncomingMessage, res: ServerResponse, ns: string, q: URLSearchParams) {
    if (!this.authorize(req, res, 'watch', ns)) return;
    const selector = /^metadata\.name=(.+)$/.exec(q.get('fieldSelector') ?? '');
    if (!selector) {
      sendJson(res, 400, status(400, 'BadRequest', 'this test server only serves watches by metadata.name'));
      return;
    }
    const name = selector[1]!;
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // The API server sends the headers at once, before any event.
    res.flushHeaders();
    this.timeline.push(['watch', Date.now()]);
    const from = q.get('resourceVersion');
    if (from && from !== '0' && Number(from) < this.compactedRv) {
      this.expired++;
      const gone = status(410, 'Expired', `too old resource version: ${from} (${this.compactedRv + 1})`);
      res.end(`${JSON.stringify({ type: 'ERROR', object: gone })}\n`);
      return;
    }
    if (from && from !== '0') {
      for (const e of this.history)
        if (e.rv > Number(from) && e.ns === ns && e.name === name)
          res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
    } else {
      const s = this.secrets.get(`${ns}/${name}`);
      if (s) res.write(`${JSON.stringify({ type: 'ADDED', object: s.object })}\n`);
    }
    const w: Watcher = { ns, name, res };
    this.watchers.add(w);
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      if (timer) clearTimeout(timer);
      this.watchers.delete(w);
    });
  }
}
