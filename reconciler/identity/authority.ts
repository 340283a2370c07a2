/**
 * The trust domain's certificate authority, kept in a directory (ca-store.ts):
 *
 *   authority.json   trust domain, settings, and every root, signing CA and JWT key with its state
 *   keys/*.pem       private keys, 0600, written atomically; never logged, never in an error message
 *
 * A long-lived root (self-signed, or an imported upstream CA) signs short-lived signing CAs, which sign the
 * X509-SVIDs. Roots, signing CAs and JWT keys all rotate the SPIRE way: the next one is prepared (and
 * published in the bundle / JWKS) at notAfter − min(ttl/2, 30d), becomes the one that signs at
 * notAfter − min(ttl/6, 7d), and stays published until its own notAfter, which bounds every SVID and token
 * it signed. Rotation runs when `rotate()` is called and, lazily, before any signing that finds it due.
 *
 * This module ties the parts together: ca-store.ts (files, lock), rotation.ts (schedule), ca-certs.ts and
 * jwt-keys.ts (what rotation creates), issuance.ts (X509-SVIDs), bundle.ts and status.ts (what it shows).
 */
import { resolve } from 'node:path';
import { bundleJwks, bundlePem, x509Authorities } from './bundle.ts';
import {
  createRoot,
  createSigningCa,
  importUpstreamRoot,
  type LiveCa,
  type LiveRoot,
  loadRoot,
  loadSigningCa,
} from './ca-certs.ts';
import {
  createCaDir,
  keyFilesOf,
  readState,
  removeUnnamedKeys,
  type StoredState,
  withLock,
  writeState,
} from './ca-store.ts';
import { AuthorityError, stateError } from './errors.ts';
import {
  checkSvidRequest,
  issueX509Svid,
  type SignedX509Svid,
  type SignX509SvidRequest,
} from './issuance.ts';
import { createJwtKey, type LiveJwtKey, loadJwtKey } from './jwt-keys.ts';
import { createJwtMinter, type JwtMinter } from './jwt-svid.ts';
import { nextTransition, rotateSlots } from './rotation.ts';
import {
  DEFAULT_CA_TTL_SECONDS,
  DEFAULT_ISSUER,
  DEFAULT_ROOT_TTL_SECONDS,
  normaliseIssuer,
  positiveSeconds,
} from './settings.ts';
import { parseTrustDomain } from './spiffe-id.ts';
import { type AuthorityStatus, statusOf } from './status.ts';
import { isIssuedBy, KEY_TYPES, type KeyType, type ParsedCertificate } from './x509.ts';

export type { SlotState } from './ca-store.ts';
export { AuthorityError } from './errors.ts';
export { generateKeyAndCsr, type SignedX509Svid, type SignX509SvidRequest } from './issuance.ts';
export {
  DEFAULT_CA_TTL_SECONDS,
  DEFAULT_ISSUER,
  DEFAULT_ROOT_TTL_SECONDS,
  DEFAULT_X509_SVID_TTL_SECONDS,
} from './settings.ts';
export type { AuthorityStatus } from './status.ts';

export interface AuthorityInitOptions {
  trustDomain: string;
  dir: string;
  keyType?: KeyType;
  upstreamCertPem?: string;
  upstreamKeyPem?: string;
  /** OIDC issuer URL, default https://localhost/oidc. */
  issuer?: string;
  now?: () => Date;
  /** Signing CA and JWT key lifetime; default 24h (SPIRE ca_ttl). */
  caTtlSeconds?: number;
  /** Self-signed root lifetime; default 10 years (Istio's self-signed root). */
  rootTtlSeconds?: number;
}

export interface Authority {
  trustDomain: string;
  jwt: JwtMinter;
  /** Trust bundle: every root and signing CA currently trusted, PEM. */
  bundlePem(): string;
  /** The same certificates, parsed, for verifyX509Svid. */
  x509Authorities(): ParsedCertificate[];
  /**
   * The trust anchor X.509-SVIDs are issued under now: the top of the active signing CA's chain (its root, or
   * the upstream root above it). What a join token pins: the reconciler's own SVID chains to it, while a root
   * still being prepared in a rotation is in the bundle without anything issued under it yet.
   */
  signingAnchor(): ParsedCertificate;
  /** SPIFFE bundle format (X509-SVID s6, JWT-SVID): x509-svid entries with x5c, jwt-svid keys with kid. */
  bundleJwks(): Promise<{ keys: Record<string, unknown>[]; spiffe_refresh_hint: number }>;
  signX509Svid(req: SignX509SvidRequest): Promise<SignedX509Svid>;
  /** One rotation step for roots, signing CAs and JWT keys: prepare / activate / retire as due. */
  rotate(): Promise<void>;
  status(): AuthorityStatus;
}

class FileAuthority implements Authority {
  readonly jwt: JwtMinter;
  private roots = new Map<string, LiveRoot>();
  private signingCas = new Map<string, LiveCa>();
  private jwtKeys = new Map<string, LiveJwtKey>();
  private nextTransitionMs = 0;
  private rotating: Promise<void> | null = null;

  private constructor(
    readonly dir: string,
    private state: StoredState,
    private readonly now: () => Date,
  ) {
    this.jwt = createJwtMinter({
      issuer: state.issuer,
      trustDomain: state.trustDomain,
      now,
      keys: {
        signingKey: async () => {
          await this.ensureCurrent();
          const active = [...this.jwtKeys.values()].find((k) => k.stored.state === 'active');
          if (!active) throw stateError(this.dir, 'no active JWT signing key: run `riptides-cli ca rotate`');
          return active;
        },
        publishedKeys: async () => {
          const nowMs = this.now().getTime();
          return [...this.jwtKeys.values()].filter((k) => k.notAfter.getTime() > nowMs);
        },
      },
    });
  }

  get trustDomain(): string {
    return this.state.trustDomain;
  }

  static async load(dir: string, state: StoredState, now: () => Date): Promise<FileAuthority> {
    const authority = new FileAuthority(dir, state, now);
    await authority.hydrate();
    return authority;
  }

  /** Builds the in-memory keys and certificates from `state`, reusing what is already loaded. */
  private async hydrate(): Promise<void> {
    const roots = new Map<string, LiveRoot>();
    for (const stored of this.state.roots)
      roots.set(stored.id, await loadRoot(this.dir, stored, this.roots.get(stored.id)));
    this.roots = roots;
    const signingCas = new Map<string, LiveCa>();
    for (const stored of this.state.signingCas)
      signingCas.set(stored.id, await loadSigningCa(this.dir, stored, this.signingCas.get(stored.id), roots));
    this.signingCas = signingCas;
    const jwtKeys = new Map<string, LiveJwtKey>();
    for (const stored of this.state.jwtKeys)
      jwtKeys.set(stored.id, await loadJwtKey(this.dir, stored, this.jwtKeys.get(stored.id)));
    this.jwtKeys = jwtKeys;
    this.nextTransitionMs = nextTransition(this.state);
  }

  private async ensureCurrent(): Promise<void> {
    if (this.now().getTime() >= this.nextTransitionMs) await this.rotate();
  }

  rotate(): Promise<void> {
    // One rotation at a time per process; concurrent callers share it.
    this.rotating ??= this.rotateNow().finally(() => {
      this.rotating = null;
    });
    return this.rotating;
  }

  private async rotateNow(): Promise<void> {
    await withLock(this.dir, async () => {
      // Another process may have rotated since we loaded: start from what is on disk.
      const state = await readState(this.dir);
      const before = keyFilesOf(state);
      const nowMs = this.now().getTime();
      const upstream = state.roots.some((r) => r.upstream);
      if (!upstream) {
        state.roots = await rotateSlots(state.roots, nowMs, async (slotState) => ({
          ...(await createRoot(this.dir, state, nowMs)),
          state: slotState,
        }));
      } else {
        state.roots = state.roots.filter((r) => Date.parse(r.notAfter) > nowMs);
        if (state.roots.length === 0)
          throw stateError(
            this.dir,
            'the upstream CA certificate has expired: initialise a new CA directory with a renewed upstream cert and key',
          );
      }
      this.state = state;
      await this.hydrate();
      const activeRoot = [...this.roots.values()].find((r) => r.stored.state === 'active');
      state.signingCas = await rotateSlots(
        state.signingCas,
        nowMs,
        async (slotState) => ({
          ...(await createSigningCa(this.dir, state, activeRoot, nowMs)),
          state: slotState,
        }),
        activeRoot?.cert.notAfter.getTime(),
      );
      state.jwtKeys = await rotateSlots(state.jwtKeys, nowMs, async (slotState) => ({
        ...(await createJwtKey(this.dir, state, nowMs)),
        state: slotState,
      }));
      await writeState(this.dir, state);
      this.state = state;
      await this.hydrate();
      // Keys of retired roots, CAs and JWT keys go once the state no longer names them.
      await removeUnnamedKeys(this.dir, before, state);
    });
  }

  x509Authorities(): ParsedCertificate[] {
    return x509Authorities(this.roots.values(), this.signingCas.values(), this.now().getTime());
  }

  signingAnchor(): ParsedCertificate {
    const ca = [...this.signingCas.values()].find((c) => c.stored.state === 'active');
    const roots = [...this.roots.values()];
    const root =
      (ca && roots.find((r) => isIssuedBy(ca.cert, r.cert))) ??
      roots.find((r) => r.stored.state === 'active');
    if (!root) throw stateError(this.dir, 'no active root CA: run `riptides-cli ca rotate`');
    return root.chain.at(-1)!;
  }

  bundlePem(): string {
    return bundlePem(this.x509Authorities());
  }

  async bundleJwks() {
    return bundleJwks(this.x509Authorities(), this.jwt, this.state.caTtlSeconds);
  }

  status(): AuthorityStatus {
    return statusOf(this.state);
  }

  async signX509Svid(req: SignX509SvidRequest): Promise<SignedX509Svid> {
    const request = checkSvidRequest(req, this.trustDomain);
    await this.ensureCurrent();
    const ca = [...this.signingCas.values()].find((c) => c.stored.state === 'active');
    if (!ca) throw stateError(this.dir, 'no active signing CA: run `riptides-cli ca rotate`');
    return issueX509Svid(ca, request, this.now().getTime());
  }
}

export async function initAuthority(opts: AuthorityInitOptions): Promise<Authority> {
  const now = opts.now ?? (() => new Date());
  const td = parseTrustDomain(opts.trustDomain);
  if (!td.ok) throw new AuthorityError(`trust domain "${opts.trustDomain}" ${td.message}`);
  const keyType = opts.keyType ?? 'ec-p256';
  if (!KEY_TYPES.includes(keyType))
    throw new AuthorityError(`key type "${keyType}" is not supported: use one of ${KEY_TYPES.join(', ')}`);
  if ((opts.upstreamCertPem === undefined) !== (opts.upstreamKeyPem === undefined))
    throw new AuthorityError('an upstream CA needs both its certificate and its private key');
  const dir = resolve(opts.dir);
  await createCaDir(dir);
  const nowMs = now().getTime();
  const state: StoredState = {
    version: 1,
    trustDomain: td.trustDomain,
    keyType,
    issuer: normaliseIssuer(opts.issuer ?? DEFAULT_ISSUER),
    caTtlSeconds: positiveSeconds(opts.caTtlSeconds, DEFAULT_CA_TTL_SECONDS, 'CA TTL'),
    rootTtlSeconds: positiveSeconds(opts.rootTtlSeconds, DEFAULT_ROOT_TTL_SECONDS, 'root CA TTL'),
    roots: [],
    signingCas: [],
    jwtKeys: [],
  };
  if (opts.upstreamCertPem !== undefined && opts.upstreamKeyPem !== undefined)
    state.roots.push(await importUpstreamRoot(dir, opts.upstreamCertPem, opts.upstreamKeyPem, nowMs));
  // The first rotation step creates whatever is missing: root, signing CA and JWT key.
  await writeState(dir, state);
  const authority = await FileAuthority.load(dir, state, now);
  await authority.rotate();
  return authority;
}

export async function openAuthority(dir: string, opts: { now?: () => Date } = {}): Promise<Authority> {
  const abs = resolve(dir);
  return FileAuthority.load(abs, await readState(abs), opts.now ?? (() => new Date()));
}
