/**
 * The reconciler's own TLS identity toward agents: an X.509-SVID for spiffe://<td>/riptides/reconciler from
 * the trust domain's authority (key in memory only), renewed at half its life with jitter, and the trust
 * bundle agents' SVIDs are checked against. Both reach grpc-js through one certificate provider, so renewal
 * and CA rotation apply to new connections without a restart.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { bundleVersion } from '../../agent/protocol/version.ts';
import { reconcilerSpiffeId } from '../../agent/protocol/wire.ts';
import { type Authority, generateKeyAndCsr } from '../identity/authority.ts';
import type { ParsedCertificate } from '../identity/x509.ts';
import { svidRotationTime } from '../identity/x509-svid.ts';

type Provider = grpc.experimental.CertificateProvider;
type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdListener = grpc.experimental.IdentityCertificateUpdateListener;

/** How often the bundle is compared with the authority's (CA rotation shows up within this). */
const BUNDLE_CHECK_MS = 30_000;
/** The longest delay setTimeout takes (2^31 − 1 ms, about 24.8 days). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const SERVING_SVID_TTL_SECONDS = 3600;

export interface BundleSnapshot {
  version: string;
  der: Buffer[];
  pem: string;
  authorities: ParsedCertificate[];
}

export function bundleOf(authority: Authority): BundleSnapshot {
  const authorities = authority.x509Authorities();
  const der = authorities.map((c) => c.der);
  return { version: bundleVersion(der), der, pem: authority.bundlePem(), authorities };
}

/**
 * The pin a join token carries (as kubeadm's discovery-token-ca-cert-hash): SHA-256 of the
 * SubjectPublicKeyInfo of the anchor the reconciler's SVIDs are issued under (Authority.signingAnchor). The
 * joining agent trusts that anchor alone until the reconciler has proven it holds it.
 */
export function bundlePin(authority: Pick<Authority, 'signingAnchor'>): string {
  return createHash('sha256').update(authority.signingAnchor().spki).digest('hex');
}

export class ServingIdentity extends EventEmitter implements Provider {
  readonly spiffeId: string;
  bundle: BundleSnapshot;
  private identity: { certificate: Buffer; privateKey: Buffer } | null = null;
  private readonly caListeners = new Set<CaListener>();
  private readonly idListeners = new Set<IdListener>();
  private renewTimer: NodeJS.Timeout | undefined;
  private bundleTimer: NodeJS.Timeout | undefined;
  /** The pin (bundlePin) of the anchor the current SVID was issued under. */
  private anchor = '';
  private renewing: Promise<void> | null = null;

  private constructor(private readonly authority: Authority) {
    super();
    this.spiffeId = reconcilerSpiffeId(authority.trustDomain);
    this.bundle = bundleOf(authority);
  }

  static async start(authority: Authority): Promise<ServingIdentity> {
    const s = new ServingIdentity(authority);
    await s.renew();
    s.bundleTimer = setInterval(() => s.checkBundle(), BUNDLE_CHECK_MS);
    s.bundleTimer.unref();
    return s;
  }

  private async renew(): Promise<void> {
    const { keyPem, csrPem } = await generateKeyAndCsr(this.spiffeId);
    const svid = await this.authority.signX509Svid({ csrPem, ttlSeconds: SERVING_SVID_TTL_SECONDS });
    this.anchor = bundlePin(this.authority);
    this.identity = { certificate: Buffer.from(svid.chainPem), privateKey: Buffer.from(keyPem) };
    for (const l of this.idListeners) l(this.identity);
    this.checkBundle();
    const at = svidRotationTime(new Date(), svid.notAfter).getTime();
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(
      () => {
        this.renew().catch((err: unknown) => this.emit('error', err));
      },
      // Node fires a longer timeout at once (it overflows 32 bits), which would renew in a loop.
      Math.min(MAX_TIMEOUT_MS, Math.max(1000, at - Date.now())),
    );
    this.renewTimer.unref();
  }

  /**
   * Re-reads the bundle; on change, tells grpc-js and emits 'bundle'. When SVIDs are now issued under another
   * root (a root rotation took effect), renews at once: join tokens made from now on pin that root, and a
   * joining agent trusts nothing else.
   */
  checkBundle(): void {
    const next = bundleOf(this.authority);
    if (next.version !== this.bundle.version) {
      this.bundle = next;
      for (const l of this.caListeners) l({ caCertificate: Buffer.from(next.pem) });
      this.emit('bundle', next);
    }
    if (!this.identity || this.renewing || bundlePin(this.authority) === this.anchor) return;
    this.renewing = this.renew()
      .catch((err: unknown) => {
        this.emit('error', err);
      })
      .finally(() => {
        this.renewing = null;
      });
  }

  // grpc-js registers its watcher only after adding these listeners: the current value goes out on the next
  // tick, or the watcher would never see it.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    setImmediate(() => {
      if (this.caListeners.has(listener)) listener({ caCertificate: Buffer.from(this.bundle.pem) });
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdListener): void {
    this.idListeners.add(listener);
    setImmediate(() => {
      if (this.identity && this.idListeners.has(listener)) listener(this.identity);
    });
  }

  removeIdentityCertificateListener(listener: IdListener): void {
    this.idListeners.delete(listener);
  }

  stop(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    if (this.bundleTimer) clearInterval(this.bundleTimer);
  }
}
