/**
 * Pods for the Kubernetes API test server, served as the real API server serves them (API concepts,
 * "Efficient detection of changes"):
 *  - list: `{kind: PodList, metadata: {resourceVersion}, items}`; items carry no kind/apiVersion;
 *  - watch: JSON lines `{type, object}`; without resourceVersion (or "0") the current pods first as synthetic
 *    ADDED events, then changes; with one, every later change; one older than the compacted history gets
 *    an ERROR event carrying a 410 `Expired` Status ("too old resource version") and the stream ends;
 *    `timeoutSeconds` ends the stream;
 *  - fieldSelector on metadata.name, metadata.namespace, spec.nodeName, status.phase (`=`, `==`, `!=`);
 *    any other field is refused with 400 "field label not supported", as the real server refuses unknown ones;
 *  - labelSelector equality (`k=v`, `k==v`, `k!=v`) and existence (`k`, `!k`); set-based forms are refused
 *    with 400 here (never more permissive than the real server).
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { sendJson } from './base.ts';
import { status } from './kube-status.ts';

export interface TestPod {
  namespace: string;
  name: string;
  /** Default: a new UUID on creation, kept on replacement. */
  uid?: string;
  nodeName: string;
  labels?: Record<string, string>;
  phase?: string;
  /** Containers with their runtime IDs (64 hex); `runtime` default containerd. */
  containers: Array<{ name: string; id?: string; runtime?: 'containerd' | 'cri-o' | 'docker' }>;
}

interface Event {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Record<string, unknown>;
}

interface PodWatcher {
  ns: string | null;
  filter: (pod: Record<string, unknown>) => boolean;
  res: ServerResponse;
}

type Filter = (pod: Record<string, unknown>) => boolean;

type PodShape = {
  metadata: { name: string; namespace: string };
  spec: { nodeName?: string };
  status: { phase?: string };
};
const FIELDS: Record<string, (pod: PodShape) => string> = {
  'metadata.name': (p) => p.metadata.name,
  'metadata.namespace': (p) => p.metadata.namespace,
  'spec.nodeName': (p) => p.spec.nodeName ?? '',
  'status.phase': (p) => p.status.phase ?? '',
};

/** Parses a selector into a filter, or returns the 400 message. */
function fieldFilter(selector: string | null): Filter | string {
  if (!selector) return () => true;
  const tests: Filter[] = [];
  for (const term of selector.split(',')) {
    const m = /^([^=!]+)(==|=|!=)(.*)$/.exec(term.trim());
    if (!m) return `invalid field selector: ${term}`;
    const get = FIELDS[m[1]!];
    if (!get) return `field label not supported: ${m[1]}`;
    const want = m[3]!;
    tests.push(m[2] === '!=' ? (p) => get(p as PodShape) !== want : (p) => get(p as PodShape) === want);
  }
  return (p) => tests.every((t) => t(p));
}

const EQUALITY = /^([A-Za-z0-9._/-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)$/;
const ABSENT = /^!([A-Za-z0-9._/-]+)$/;
const PRESENT = /^([A-Za-z0-9._/-]+)$/;

function labelFilter(selector: string | null): Filter | string {
  if (!selector) return () => true;
  const tests: Filter[] = [];
  const labels = (p: Record<string, unknown>) =>
    ((p.metadata as { labels?: Record<string, string> }).labels ?? {}) as Record<string, string>;
  for (const raw of selector.split(',')) {
    const term = raw.trim();
    const eq = EQUALITY.exec(term);
    const absent = ABSENT.exec(term);
    const present = PRESENT.exec(term);
    if (eq) {
      const [, k, op, v] = eq;
      tests.push(op === '!=' ? (p) => labels(p)[k!] !== v : (p) => labels(p)[k!] === v);
    } else if (absent) tests.push((p) => !(absent[1]! in labels(p)));
    else if (present) tests.push((p) => present[1]! in labels(p));
    else return `this test server does not implement the label selector term "${term}"`;
  }
  return (p) => tests.every((t) => t(p));
}

export class PodStore {
  private readonly pods = new Map<string, Record<string, unknown>>();
  private history: Event[] = [];
  private compactedBelow = 0;
  private readonly watchers = new Set<PodWatcher>();

  constructor(private readonly nextRv: () => number) {}

  get watchCount(): number {
    return this.watchers.size;
  }

  put(pod: TestPod): Record<string, unknown> {
    const key = `${pod.namespace}/${pod.name}`;
    const existing = this.pods.get(key) as { metadata: Record<string, unknown> } | undefined;
    const rv = this.nextRv();
    const object = {
      kind: 'Pod',
      apiVersion: 'v1',
      metadata: {
        name: pod.name,
        namespace: pod.namespace,
        uid: (existing?.metadata.uid as string | undefined) ?? pod.uid ?? randomUUID(),
        resourceVersion: String(rv),
        creationTimestamp:
          (existing?.metadata.creationTimestamp as string | undefined) ??
          new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
        ...(pod.labels ? { labels: { ...pod.labels } } : {}),
      },
      spec: {
        nodeName: pod.nodeName,
        containers: pod.containers.map((c) => ({ name: c.name, image: `registry.example/${c.name}:1` })),
      },
      status: {
        phase: pod.phase ?? 'Running',
        containerStatuses: pod.containers.map((c) => ({
          name: c.name,
          ready: c.id !== undefined,
          restartCount: 0,
          image: `registry.example/${c.name}:1`,
          imageID: '',
          ...(c.id ? { containerID: `${c.runtime ?? 'containerd'}://${c.id}` } : {}),
        })),
      },
    };
    this.pods.set(key, object);
    this.publish({ rv, type: existing ? 'MODIFIED' : 'ADDED', object });
    return object;
  }

  delete(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const existing = this.pods.get(key) as { metadata: Record<string, unknown> } | undefined;
    if (!existing) return;
    this.pods.delete(key);
    const rv = this.nextRv();
    this.publish({
      rv,
      type: 'DELETED',
      object: { ...existing, metadata: { ...existing.metadata, resourceVersion: String(rv) } },
    });
  }

  compact(): void {
    const last = this.history.at(-1);
    this.compactedBelow = last ? last.rv + 1 : this.compactedBelow;
    this.history = [];
  }

  private publish(e: Event): void {
    this.history.push(e);
    for (const w of this.watchers) {
      const ns = (e.object.metadata as { namespace: string }).namespace;
      if ((w.ns === null || w.ns === ns) && w.filter(e.object))
        w.res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
    }
  }

  private filters(res: ServerResponse, q: URLSearchParams): Filter | null {
    const field = fieldFilter(q.get('fieldSelector'));
    const label = labelFilter(q.get('labelSelector'));
    for (const f of [field, label]) {
      if (typeof f === 'string') {
        sendJson(res, 400, status(400, 'BadRequest', f));
        return null;
      }
    }
    return (p) => (field as Filter)(p) && (label as Filter)(p);
  }

  private current(): number {
    return this.history.at(-1)?.rv ?? this.compactedBelow;
  }

  list(res: ServerResponse, ns: string | null, q: URLSearchParams): void {
    const filter = this.filters(res, q);
    if (!filter) return;
    const items = [...this.pods.values()]
      .filter((p) => (ns === null || (p.metadata as { namespace: string }).namespace === ns) && filter(p))
      .map(({ kind: _k, apiVersion: _a, ...rest }) => rest);
    sendJson(res, 200, {
      kind: 'PodList',
      apiVersion: 'v1',
      metadata: { resourceVersion: String(this.current()) },
      items,
    });
  }

  watch(res: ServerResponse, ns: string | null, q: URLSearchParams): void {
    const filter = this.filters(res, q);
    if (!filter) return;
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const from = q.get('resourceVersion');
    const inNs = (p: Record<string, unknown>) =>
      ns === null || (p.metadata as { namespace: string }).namespace === ns;
    if (from && from !== '0') {
      const rv = Number(from);
      if (!Number.isSafeInteger(rv) || rv < this.compactedBelow - 1) {
        const message = `too old resource version: ${from} (${this.current()})`;
        res.end(`${JSON.stringify({ type: 'ERROR', object: status(410, 'Expired', message) })}\n`);
        return;
      }
      for (const e of this.history)
        if (e.rv > rv && inNs(e.object) && filter(e.object))
          res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
    } else {
      for (const p of this.pods.values())
        if (inNs(p) && filter(p)) res.write(`${JSON.stringify({ type: 'ADDED', object: p })}\n`);
    }
    const w: PodWatcher = { ns, filter, res };
    this.watchers.add(w);
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      if (timer) clearTimeout(timer);
      this.watchers.delete(w);
    });
  }
}
