/**
 * Opens a session for a (source, workload) pair with the provider its spec names. Shared resources (HTTPS
 * agents, the Secret stores with their watches) live here, one each, however many bindings use them.
 */
import { Agent } from 'node:https';
import { createSecureContext } from 'node:tls';
import { type AwsProviderOptions, AwsSession, DEFAULT_STS_ENDPOINT } from './aws.ts';
import { KubernetesSecretStore } from './kubernetes.ts';
import { LocalSecretStore } from './local-secrets.ts';
import { bearerFromSecret, type SecretStore, type SecretUpdate } from './secret-ref.ts';
import type { Obtained, ProviderContext, Session, WatchedSession } from './session.ts';
import type { CredentialSourceSpec } from './types.ts';
import { CredentialError, type KubernetesSourceSpec } from './types.ts';
import { classifySource } from './util.ts';
import { VaultSession } from './vault.ts';

export const DEFAULT_NAMESPACE = 'riptides-system';

export interface ProviderConfig {
  /**
   * Kubernetes access for `kubernetes` sources; ignored when secretsDir is set. `kubeconfigPaths` are merged
   * as kubectl merges KUBECONFIG (the first file that sets a value wins); `kubeconfigPath` is one file.
   */
  kubernetes?: {
    kubeconfigPath?: string;
    kubeconfigPaths?: string[];
    inCluster?: boolean;
    watchTimeoutSeconds?: number;
  };
  /** Resolve `kubernetes` sources from Secret manifests in this directory instead of the API. */
  secretsDir?: string;
  /** Namespace of secretRef when the source does not name one; default riptides-system. */
  namespace?: string;
  vault?: { ca?: string | Buffer; pollIntervalMs?: number };
  sts?: { endpoint?: string; ca?: string | Buffer };
}

export class Providers {
  private store: SecretStore | CredentialError | undefined;
  private readonly vaultAgent: Agent;
  private readonly stsAgent: Agent;
  /** Notices already logged (a role that may not revoke leases is said once, not per lease). */
  private readonly notices = new Set<string>();

  constructor(
    private readonly config: ProviderConfig,
    private readonly ctx: ProviderContext,
  ) {
    // One TLS context per backend, built once: given only `ca`, every new connection builds its own
    // (parsing the roots again), which dominated a fleet of pairs retrying against an unreachable Vault.
    const agentOpts = { keepAlive: true, maxSockets: 64 };
    const context = (ca: string | Buffer | undefined) => createSecureContext(ca ? { ca } : {});
    this.vaultAgent = new Agent({ ...agentOpts, secureContext: context(config.vault?.ca) });
    this.stsAgent = new Agent({ ...agentOpts, secureContext: context(config.sts?.ca) });
  }

  /** A session, or the reason there cannot be one (unsupported provider, no Kubernetes access, bad field). */
  open(spec: CredentialSourceSpec, workloadID: string): Session | CredentialError {
    const c = classifySource(spec);
    try {
      switch (c.provider) {
        case 'kubernetes':
          return this.secretSession(c.spec, workloadID);
        case 'vault':
          return new VaultSession(c.spec, workloadID, this.ctx, {
            httpsAgent: this.vaultAgent,
            pollIntervalMs: this.config.vault?.pollIntervalMs ?? 15 * 60_000,
            notices: this.notices,
          });
        case 'aws': {
          const opts: AwsProviderOptions = {
            endpoint: this.config.sts?.endpoint ?? DEFAULT_STS_ENDPOINT,
            httpsAgent: this.stsAgent,
          };
          return new AwsSession(c.spec, workloadID, this.ctx, opts);
        }
        case 'unsupported':
          return new CredentialError(
            `CredentialSource ${spec.name}: provider "${c.block}" is not yet supported ` +
              '(supported: kubernetes, vault, aws)',
            { code: 'misconfigured' },
          );
      }
    } catch (err) {
      if (err instanceof CredentialError)
        return new CredentialError(`CredentialSource ${spec.name}: ${err.message}`, { code: err.code });
      throw err;
    }
  }

  private secretStore(): SecretStore {
    if (!this.store) {
      const cfg = this.config;
      try {
        if (cfg.secretsDir)
          this.store = new LocalSecretStore(cfg.secretsDir, cfg.namespace ?? DEFAULT_NAMESPACE);
        else if (
          cfg.kubernetes?.kubeconfigPath ||
          cfg.kubernetes?.kubeconfigPaths?.length ||
          cfg.kubernetes?.inCluster
        )
          this.store = new KubernetesSecretStore({
            kubeconfigPaths:
              cfg.kubernetes.kubeconfigPaths ??
              (cfg.kubernetes.kubeconfigPath ? [cfg.kubernetes.kubeconfigPath] : []),
            timeoutMs: this.ctx.timeoutMs,
            watchTimeoutSeconds: cfg.kubernetes.watchTimeoutSeconds ?? 300,
            backoff: this.ctx.backoff,
            random: this.ctx.random,
          });
        else
          this.store = new CredentialError(
            'kubernetes sources need Kubernetes access or a secrets dir: pass --kubeconfig, set KUBECONFIG, ' +
              'create ~/.kube/config, run in the cluster, or pass --secrets-dir',
            { code: 'misconfigured' },
          );
      } catch (err) {
        if (!(err instanceof CredentialError)) throw err;
        this.store = err;
      }
    }
    if (this.store instanceof CredentialError) throw this.store;
    return this.store;
  }

  private secretSession(spec: KubernetesSourceSpec, _workloadID: string): WatchedSession {
    const k = spec.kubernetes;
    if (k.type !== 'BearerToken')
      throw new CredentialError(
        `kubernetes.type "${k.type}" is not supported; the only type is BearerToken`,
        {
          code: 'misconfigured',
        },
      );
    const store = this.secretStore();
    const ref = { namespace: k.namespace ?? this.config.namespace ?? DEFAULT_NAMESPACE, ...k.secretRef };
    const toObtained = (u: SecretUpdate): Obtained | CredentialError => {
      if (u instanceof CredentialError) return u;
      try {
        return { value: bearerFromSecret(u, ref, store.where) };
      } catch (err) {
        if (err instanceof CredentialError) return err;
        throw err;
      }
    };
    return {
      kind: 'watched',
      async obtain() {
        const r = toObtained(await store.read(ref.namespace, ref.name));
        if (r instanceof CredentialError) throw r;
        return r;
      },
      subscribe(onUpdate) {
        return store.subscribe(ref.namespace, ref.name, (u) => onUpdate(toObtained(u)));
      },
      async release() {},
    };
  }

  async close(): Promise<void> {
    if (this.store && !(this.store instanceof CredentialError)) await this.store.close();
    this.vaultAgent.destroy();
    this.stsAgent.destroy();
  }
}
