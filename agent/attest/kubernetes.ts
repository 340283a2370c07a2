/**
 * Pods of this node from the Kubernetes API, for attestation: a process's cgroup gives a pod UID and a
 * container ID, this cache gives the pod's namespace, name and labels and the container's name. It holds a
 * list + watch of the node's pods (the informer of @kubernetes/client-node, with `fieldSelector
 * spec.nodeName=<node>` so the agent sees its own node's pods, not the cluster's), relists on 410 Gone,
 * restarts the watch with backoff after an error, and restarts it on a timer so a connection that died
 * without a FIN is not trusted forever.
 *
 * Configured when one of these says so (in this order): an explicit kubeconfig (`--kubeconfig`), the
 * KUBECONFIG environment variable, or the in-cluster service account (KUBERNETES_SERVICE_HOST and the token
 * file). A kubeconfig in the home directory is not picked up by itself: an agent runs as root.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { CoreV1Api, KubeConfig, ListWatch, Observable, type V1Pod, Watch } from '@kubernetes/client-node';
import { type BackoffOptions, backoffDelay } from '../backoff.ts';

export const IN_CLUSTER_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';
/** Restarting the pod watch after a failure: 0.5 s doubling to 30 s, jittered (the agent's one policy). */
const POD_WATCH_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000 };

export interface KubeOptions {
  /** A kubeconfig file (`--kubeconfig`). */
  kubeconfigPath?: string;
  /** The node whose pods to watch; default $NODE_NAME (the downward API convention), else the host name. */
  nodeName?: string;
  /** Deadline of the initial list and of each (re)list, ms. Default 10 s. */
  timeoutMs?: number;
  /** The watch is restarted this often even when it looks alive. Default 300 s. */
  resyncMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** Where Kubernetes access comes from, or null when none is configured. */
export function kubeConfigFrom(opts: KubeOptions = {}): { kc: KubeConfig; source: string } | null {
  const env = opts.env ?? process.env;
  const kc = new KubeConfig();
  if (opts.kubeconfigPath) {
    kc.loadFromFile(opts.kubeconfigPath);
    return { kc, source: opts.kubeconfigPath };
  }
  if (env.KUBECONFIG) {
    kc.loadFromFile(env.KUBECONFIG.split(':')[0]!);
    return { kc, source: `KUBECONFIG=${env.KUBECONFIG}` };
  }
  if (env.KUBERNETES_SERVICE_HOST && existsSync(IN_CLUSTER_TOKEN)) {
    kc.loadFromCluster();
    return { kc, source: 'in-cluster service account' };
  }
  return null;
}

export interface PodMatch {
  namespace: string;
  name: string;
  container: string;
  labels: Record<string, string>;
}

/** How the lookup of a (pod UID, container ID) went. */
export type PodLookup =
  | { state: 'found'; pod: PodMatch }
  /** Not (yet) known: the pod's status may not name the container yet, or the cache is still loading. */
  | { state: 'unknown'; reason: string };

/**
 * What attestation needs from Kubernetes; a test or another source can provide it too. `warning` says why pods
 * cannot be listed or watched (not `error`: an unheard `error` event would end the process).
 */
export interface PodSource extends EventEmitter<{ change: []; warning: [string] }> {
  lookup(podUid: string, containerId: string): PodLookup;
  start(): Promise<void>;
  stop(): Promise<void>;
}

interface IndexedPod {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  containers: Map<string, string>;
}

/** `containerd://<id>`, `cri-o://<id>`, `docker://<id>` → `<id>`. */
function containerIdOf(url: string | undefined): string | null {
  if (!url) return null;
  const i = url.indexOf('://');
  const id = i >= 0 ? url.slice(i + 3) : url;
  return /^[0-9a-f]{64}$/.test(id) ? id : null;
}

function index(pod: V1Pod): IndexedPod | null {
  const uid = pod.metadata?.uid;
  if (!uid || !pod.metadata?.name) return null;
  const containers = new Map<string, string>();
  for (const list of [
    pod.status?.containerStatuses,
    pod.status?.initContainerStatuses,
    pod.status?.ephemeralContainerStatuses,
  ]) {
    for (const s of list ?? []) {
      const id = containerIdOf(s.containerID);
      if (id) containers.set(id, s.name);
    }
  }
  return {
    namespace: pod.metadata.namespace ?? 'default',
    name: pod.metadata.name,
    labels: { ...(pod.metadata.labels ?? {}) },
    containers,
  };
}

export class KubernetesPodSource
  extends EventEmitter<{ change: []; warning: [string] }>
  implements PodSource
{
  readonly source: string;
  readonly nodeName: string;
  readonly #kc: KubeConfig;
  readonly #api: CoreV1Api;
  readonly #informer: ListWatch<V1Pod>;
  readonly #pods = new Map<string, IndexedPod>();
  readonly #timeoutMs: number;
  readonly #resyncMs: number;
  #synced = false;
  #stopped = true;
  #failures = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;
  #lastError: string | null = null;

  constructor(kc: KubeConfig, source: string, opts: KubeOptions = {}) {
    super();
    this.#kc = kc;
    this.source = source;
    const env = opts.env ?? process.env;
    this.nodeName = opts.nodeName ?? env.NODE_NAME ?? hostname();
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#resyncMs = opts.resyncMs ?? 300_000;
    this.#api = kc.makeApiClient(CoreV1Api);
    const fieldSelector = `spec.nodeName=${this.nodeName}`;
    this.#informer = new ListWatch<V1Pod>(
      '/api/v1/pods',
      new Watch(kc),
      () => this.#list(fieldSelector),
      false,
      undefined,
      fieldSelector,
    );
    const update = (pod: V1Pod) => {
      const uid = pod.metadata?.uid;
      const indexed = index(pod);
      if (!uid || !indexed) return;
      this.#pods.set(uid, indexed);
      this.emit('change');
    };
    this.#informer.on('add', update);
    this.#informer.on('update', update);
    this.#informer.on('delete', (pod) => {
      if (pod.metadata?.uid && this.#pods.delete(pod.metadata.uid)) this.emit('change');
    });
    this.#informer.on('connect', () => {
      this.#failures = 0;
    });
    this.#informer.on('error', (err: unknown) => this.#failed(err));
  }

  /** Configured from the options and the environment, or null when no Kubernetes access is configured. */
  static fromEnvironment(opts: KubeOptions = {}): KubernetesPodSource | null {
    const found = kubeConfigFrom(opts);
    return found ? new KubernetesPodSource(found.kc, found.source, opts) : null;
  }

  async #list(fieldSelector: string) {
    const signal = AbortSignal.timeout(this.#timeoutMs);
    const list = await this.#api.listPodForAllNamespaces(
      { fieldSelector },
      {
        middleware: [
          {
            pre: (ctx) => {
              ctx.setSignal(signal);
              return new Observable(Promise.resolve(ctx));
            },
            post: (ctx) => new Observable(Promise.resolve(ctx)),
          },
        ],
        middlewareMergeStrategy: 'append',
      },
    );
    // The informer calls delete for pods missing from a relist; start from the list itself too.
    for (const pod of list.items) {
      const indexed = index(pod);
      if (indexed && pod.metadata?.uid) this.#pods.set(pod.metadata.uid, indexed);
    }
    this.#synced = true;
    this.#lastError = null;
    this.emit('change');
    return list;
  }

  #failed(err: unknown): void {
    if (this.#stopped) return;
    const code =
      (err as { code?: number; statusCode?: number })?.code ?? (err as { statusCode?: number })?.statusCode;
    this.#lastError =
      typeof code === 'number'
        ? `the Kubernetes API answered HTTP ${code} listing or watching pods on node ${this.nodeName}${code === 403 ? ' (grant list and watch on pods to the agent)' : ''}`
        : `the Kubernetes API could not be reached: ${(err as Error)?.message ?? String(err)}`;
    this.emit('warning', this.#lastError);
    this.#failures++;
    const delay = backoffDelay(this.#failures, POD_WATCH_BACKOFF);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => void this.#restart(), delay);
    this.#retryTimer.unref();
  }

  async #restart(): Promise<void> {
    if (this.#stopped) return;
    await this.#informer.stop();
    try {
      await this.#informer.start();
    } catch (err) {
      this.#failed(err);
    }
  }

  /** Lists the node's pods (bounded by the list deadline) and keeps watching. Never rejects: failures retry. */
  async start(): Promise<void> {
    if (!this.#stopped) return;
    this.#stopped = false;
    try {
      await this.#informer.start();
    } catch (err) {
      this.#failed(err);
    }
    this.#resyncTimer = setInterval(() => void this.#restart(), this.#resyncMs);
    this.#resyncTimer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#resyncTimer);
    await this.#informer.stop();
  }

  lookup(podUid: string, containerId: string): PodLookup {
    const pod = this.#pods.get(podUid);
    if (!pod) {
      if (!this.#synced)
        return {
          state: 'unknown',
          reason: this.#lastError ?? 'the pod list from the Kubernetes API is still loading',
        };
      return { state: 'unknown', reason: `no pod with UID ${podUid} on node ${this.nodeName}` };
    }
    const container = pod.containers.get(containerId);
    if (!container)
      return {
        state: 'unknown',
        reason: `pod ${pod.namespace}/${pod.name} does not list container ${containerId.slice(0, 12)} (yet)`,
      };
    return {
      state: 'found',
      pod: { namespace: pod.namespace, name: pod.name, container, labels: pod.labels },
    };
  }
}
