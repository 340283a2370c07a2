/**
 * TLS contexts built from the inputs, cached until the PEM they were made from changes: one per identity for
 * mTLS (its SVID + the trust bundle as the only CAs), and one for upstream TLS (the system store or the
 * configured CA file).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import type { DataPlaneInputs } from './inputs.ts';

/** The per-connection protocol between data planes: one TLS connection per application connection. */
export const ALPN = 'riptides';
/**
 * The multiplexed protocol between data planes (README "Pooled sessions"): HTTP/2 over one long-lived mTLS
 * connection, each application connection a CONNECT stream (RFC 9113 §8.5), as Istio ambient's HBONE.
 */
export const MUX_ALPN = 'riptides-h2';

interface Entry {
  cert: string;
  key: string;
  bundle: string;
  context: SecureContext;
}

export class TlsContexts {
  private readonly svid = new Map<string, Entry>();
  private upstream: SecureContext | null = null;

  constructor(
    private readonly inputs: DataPlaneInputs,
    /** PEM trusted for upstreams instead of the system store (`--upstream-ca`). */
    private readonly upstreamCa: string | null,
  ) {}

  /**
   * The mTLS context of an identity (client and server side), or null when it has no SVID or there is no
   * trust bundle. `minVersion` TLSv1.3 between managed peers; SIMPLE inbound accepts TLSv1.2 clients.
   */
  identity(spiffeId: string, minVersion: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.3'): SecureContext | null {
    const pair = this.inputs.svid(spiffeId);
    const bundle = this.inputs.trustBundle();
    if (!pair || !bundle) return null;
    const key = `${minVersion} ${spiffeId}`;
    const hit = this.svid.get(key);
    if (hit && hit.cert === pair.cert && hit.key === pair.key && hit.bundle === bundle) return hit.context;
    // The session id context lets a server that asks for client certificates resume sessions; a context made
    // anew (new SVID or bundle) has new ticket keys, so no session outlives the inputs it was verified with.
    const context = createSecureContext({
      cert: pair.cert,
      key: pair.key,
      ca: bundle,
      minVersion,
      sessionIdContext: createHash('sha256').update(spiffeId).digest('hex').slice(0, 32),
    });
    this.svid.set(key, { cert: pair.cert, key: pair.key, bundle, context });
    return context;
  }

  /** Where upstream certificates are verified: `upstreamCa` when set, else the system trust store. */
  upstreamContext(): SecureContext {
    this.upstream ??= createSecureContext({
      ca: this.upstreamCa ?? systemRoots(),
      minVersion: 'TLSv1.2',
    });
    return this.upstream;
  }

  /** Drops contexts of identities no longer present (called on input changes). */
  prune(): void {
    for (const [key, entry] of this.svid) {
      const id = key.slice(key.indexOf(' ') + 1);
      const pair = this.inputs.svid(id);
      if (!pair || pair.cert !== entry.cert) this.svid.delete(key);
    }
  }
}

/** The system trust store (Debian's bundle, or SSL_CERT_FILE), else node's bundled Mozilla roots. */
export function systemRoots(): string | string[] {
  for (const file of [process.env.SSL_CERT_FILE, '/etc/ssl/certs/ca-certificates.crt']) {
    if (!file) continue;
    try {
      return readFileSync(file, 'utf8');
    } catch {
      // try the next one
    }
  }
  return [...rootCertificates];
}
