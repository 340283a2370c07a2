/**
 * Secrets from the Kubernetes API through @kubernetes/client-node, as an informer does: a LIST by
 * metadata.name, then a watch from the list's resourceVersion (the collection's, not the object's, which
 * may be older than what the API server still keeps), so an edit reaches consumers without re-creating
 * anything. One watch per Secret, shared by every binding that uses it. When the watch ends the loop lists
 * and watches again; an ERROR event (410 Gone / Expired: our resourceVersion was compacted away) or a
 * failing API makes it back off first (the one retry policy), as client-go's reflector does.
 */
import { createRequire } from 'node:module';
import type { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { Redactor, stripUrlUserinfo } from '../common/redact.ts';
import { type BackoffPolicy, backoffDelay } from '../common/retry.ts';
import {
  decodeSecretDataMap,
  type SecretSnapshot,
  type SecretStore,
  type SecretUpdate,
} from './secret-ref.ts';
import { CredentialError } from './types.ts';
import { describeTransportError, withDeadline } from './util.ts';

/**
 * @kubernetes/client-node, loaded when a store is first made (require of an ES module, Node ≥ 20.19): it adds
 * about 85 MB to the process, and a reconciler reading Secrets from a directory, or not at all, never needs it.
 */
const client = (() => {
  const require = createRequire(import.meta.url);
  let loaded: typeof import('@kubernetes/client-node') | undefined;
  return () => (loaded ??= require('@kubernetes/client-node') as typeof import('@kubernetes/client-node'));
})();

export interface KubernetesStoreOptions {
  /** Kubeconfig files, merged as kubectl merges KUBECONFIG; none: the in-cluster service account. */
  kubeconfigPaths: string[];
  timeoutMs: number;
  /** Asked of the API server so watches are re-established now and then, as informers do. */
  watchTimeoutSeconds: number;
  backoff: BackoffPolicy;
  random: () => number;
}

interface Entry {
  namespace: string;
  name: string;
  subscribers: Set<(u: SecretUpdate) => void>;
  last?: SecretUpdate;
  stop?: () => void;
  /** Wakes the loop from its backoff sleep (on stop). */
  wake?: () => void;
}

export class KubernetesSecretStore implements SecretStore {
  readonly where: string;
  private readonly kc: KubeConfig = new (client().KubeConfig)();
  private readonly api: CoreV1Api;
  /** The kubeconfig's own secrets, kept out of any text the API server sends back. */
  private readonly redactor = new Redactor();
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly opts: KubernetesStoreOptions) {
    const from = opts.kubeconfigPaths.length
      ? opts.kubeconfigPaths.join(', ')
      : 'the in-cluster service account';
    try {
      const [first, ...rest] = opts.kubeconfigPaths;
      if (first) this.kc.loadFromFile(first);
      else this.kc.loadFromCluster();
      for (const path of rest) mergeKubeconfig(this.kc, path);
    } catch (err) {
      throw new CredentialError(
        `cannot load Kubernetes access from ${from}: ${(err as Error).message.split('\n')[0]}; ` +
          'pass a readable kubeconfig or run inside the cluster',
        { code: 'misconfigured' },
      );
    }
    const server = this.kc.getCurrentCluster()?.server;
    if (!server || server.includes('undefined'))
      throw new CredentialError(
        `kubeconfig ${from} has no current cluster with a server; set current-context`,
        { code: 'misconfigured' },
      );
    this.where = `Kubernetes API ${stripUrlUserinfo(server)}`;
    const user = this.kc.getCurrentUser();
    this.redactor.add(user?.token).add(user?.password);
    this.api = this.kc.makeApiClient(client().CoreV1Api);
  }

  async read(namespace: string, name: string): Promise<SecretSnapshot> {
    const what = `reading Secret ${namespace}/${name} from the ${this.where}`;
    const signal = AbortSignal.timeout(this.opts.timeoutMs);
    try {
      const list = await this.api.listNamespacedSecret(
        { namespace, fieldSelector: `metadata.name=${name}` },
        {
          middleware: [
            {
              pre: (ctx) => {
                ctx.setSignal(signal);
                return new (client().Observable)(Promise.resolve(ctx));
              },
              post: (ctx) => new (client().Observable)(Promise.resolve(ctx)),
            },
          ],
          middlewareMergeStrategy: 'append',
        },
      );
      // The list's resourceVersion: a watch from it misses nothing and is as fresh as the API server keeps.
      const resourceVersion = list.metadata?.resourceVersion ?? '';
      const secret = list.items.find((s) => s.metadata?.name === name);
      if (!secret) return { found: false, resourceVersion };
      return {
        found: true,
        data: decodeSecretDataMap(secret.data, { namespace, name }, this.where),
        resourceVersion,
      };
    } catch (err) {
      if (err instanceof CredentialError) throw err;
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'number') {
        if (code === 404) return { found: false };
        throw new CredentialError(`${what}: ${this.statusText(code, (err as { body?: unknown }).body)}`);
      }
      if (signal.aborted)
        throw new CredentialError(
          `${what}: no answer within ${this.opts.timeoutMs} ms; check the API server`,
        );
      throw new CredentialError(`${what}: ${describeTransportError(err)}`);
    }
  }

  /** The API server's Status message plus what to do, through the one redactor (server text, like all). */
  private statusText(code: number, body: unknown): string {
    return this.redactor.redact(this.describeStatus(code, body));
  }

  private describeStatus(code: number, body: unknown): string {
    let message = '';
    try {
      const parsed =
        typeof body === 'string'
          ? (JSON.parse(body) as { message?: string })
          : (body as { message?: string });
      message = parsed?.message ?? '';
    } catch {
      // Not a Status body: the code says enough.
    }
    if (code === 401)
      return 'HTTP 401 Unauthorized; the kubeconfig credentials were rejected, refresh or replace them';
    if (code === 403)
      return `HTTP 403 Forbidden (${message || 'no message'}); grant get, list and watch on secrets to this identity`;
    return `HTTP ${code}${message ? ` (${message})` : ''}`;
  }

  subscribe(namespace: string, name: string, onUpdate: (u: SecretUpdate) => void): () => void {
    const key = `${namespace}/${name}`;
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { namespace, name, subscribers: new Set() };
      this.entries.set(key, entry);
      void this.loop(entry);
    } else if (entry.last) {
      const last = entry.last;
      queueMicrotask(() => onUpdate(last));
    }
    entry.subscribers.add(onUpdate);
    const e = entry;
    return () => {
      e.subscribers.delete(onUpdate);
      if (e.subscribers.size === 0) {
        this.entries.delete(key);
        e.stop?.();
        e.wake?.();
      }
    };
  }

  private deliver(entry: Entry, u: SecretUpdate): void {
    entry.last = u;
    for (const s of entry.subscribers) s(u);
  }

  private live(entry: Entry): boolean {
    return !this.closed && this.entries.get(`${entry.namespace}/${entry.name}`) === entry;
  }

  private async loop(entry: Entry): Promise<void> {
    let failures = 0;
    while (this.live(entry)) {
      try {
        const snap = await this.read(entry.namespace, entry.name);
        if (!this.live(entry)) return;
        this.deliver(entry, snap);
        const healthy = await this.watch(entry, snap.resourceVersion || undefined);
        failures = healthy ? 0 : failures + 1;
      } catch (err) {
        if (!this.live(entry)) return;
        failures++;
        this.deliver(
          entry,
          err instanceof CredentialError ? err : new CredentialError(describeTransportError(err)),
        );
      }
      if (failures > 0 && this.live(entry)) {
        const ms = backoffDelay(failures, this.opts.backoff, this.opts.random);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, ms);
          entry.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
  }

  /**
   * Watches until the stream ends. Resolves true when the watch was established and ended normally, false
   * when it failed (the caller backs off before re-reading).
   */
  private async watch(entry: Entry, resourceVersion: string | undefined): Promise<boolean> {
    const { namespace, name } = entry;
    let ended!: (ok: boolean) => void;
    const done = new Promise<boolean>((resolve) => {
      ended = resolve;
    });
    let controller: AbortController | undefined;
    let stopped = false;
    // The server ends a watch after timeoutSeconds; if nothing has ended it well after that, the connection
    // is dead without a FIN (TCP keepalive would take minutes to notice): drop it and resync.
    const watchdog = setTimeout(
      () => {
        controller?.abort();
        ended(true);
      },
      (this.opts.watchTimeoutSeconds + 30) * 1000,
    );
    void done.then(() => clearTimeout(watchdog));
    entry.stop = () => {
      stopped = true;
      controller?.abort();
      ended(true);
    };
    const started = new (client().Watch)(this.kc).watch(
      `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets`,
      {
        fieldSelector: `metadata.name=${name}`,
        resourceVersion,
        timeoutSeconds: this.opts.watchTimeoutSeconds,
      },
      (type: string, object: { data?: Record<string, string>; metadata?: { resourceVersion?: string } }) => {
        if (stopped) return;
        const rv = object?.metadata?.resourceVersion ?? '';
        if (type === 'ADDED' || type === 'MODIFIED') {
          let data: Record<string, Buffer>;
          try {
            data = decodeSecretDataMap(object.data, { namespace, name }, this.where);
          } catch (err) {
            this.deliver(entry, err as CredentialError);
            return;
          }
          this.deliver(entry, { found: true, data, resourceVersion: rv });
        } else if (type === 'DELETED') this.deliver(entry, { found: false, resourceVersion: rv });
        else if (type === 'ERROR') {
          // 410 Gone / Expired: the resourceVersion was compacted away. The value held is still the last
          // one seen (not an error for consumers): end, back off, list again and watch from there.
          controller?.abort();
          ended(false);
        }
      },
      (err: unknown) => {
        const status = (err as { statusCode?: number } | null)?.statusCode;
        if (status !== undefined && !stopped)
          this.deliver(
            entry,
            new CredentialError(
              `watching Secret ${namespace}/${name} on the ${this.where}: ${this.statusText(status, '')}`,
            ),
          );
        ended(err === null || err === undefined || stopped);
      },
    );
    try {
      // The library only hands back its AbortController once the response headers arrive: bound that wait.
      controller = await withDeadline(
        started,
        this.opts.timeoutMs,
        `watching Secret ${namespace}/${name} on the ${this.where}`,
        () => {
          void started.then((c) => c.abort());
        },
      );
      if (stopped) controller.abort();
    } catch (err) {
      if (!stopped)
        this.deliver(entry, err instanceof CredentialError ? err : new CredentialError(String(err)));
      ended(false); // settles `done`, which clears the watchdog
      return false;
    }
    return done;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const e of this.entries.values()) {
      e.stop?.();
      e.wake?.();
    }
    this.entries.clear();
  }
}

/**
 * Adds the clusters, users and contexts of another kubeconfig, as kubectl merges the files KUBECONFIG lists:
 * the first file that names something wins, and the current context comes from the first file that sets one.
 */
function mergeKubeconfig(kc: KubeConfig, path: string): void {
  const other = new (client().KubeConfig)();
  other.loadFromFile(path);
  for (const c of other.clusters) if (!kc.clusters.some((x) => x.name === c.name)) kc.addCluster(c);
  for (const u of other.users) if (!kc.users.some((x) => x.name === u.name)) kc.addUser(u);
  for (const c of other.contexts) if (!kc.contexts.some((x) => x.name === c.name)) kc.addContext(c);
  if (!kc.currentContext && other.currentContext) kc.setCurrentContext(other.currentContext);
}
