/**
 * The trust domain's certificate authority, kept in a directory:
 *
 *   authority.json   trust domain, settings, and every root, signing CA and JWT key with its state
 *   keys/*.pem       private keys, 0600, written atomically; never logged, never in an error message
 *
 * A long-lived root (self-signed, or an imported upstream CA) signs short-lived signing CAs, which sign the
 * X509-SVIDs. Roots, signing CAs and JWT keys all rotate the SPIRE way: the next one is prepared (and
 * published in the bundle / JWKS) at notAfter − min(ttl/2, 30d), becomes the one that signs at
 * notAfter − min(ttl/6, 7d), and stays published until its own notAfter, which bounds every SVID and token
 * it signed. Rotation runs when `rotate()` is called and, lazily, before any signing that finds it due.
 */
import { createPrivateKey, type KeyObject, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { oid, seq } from './der.ts';
import { writeFileAtomic } from './files.ts';
import { createJwtMinter, type JwtMinter, type JwtSigningKey } from './jwt-svid.ts';
import { parseSpiffeId, parseTrustDomain } from './spiffe-id.ts';
import {
  authorityKeyIdExtension,
  createCsr,
  encodeName,
  encodeTbs,
  extension,
  generateKey,
  KEY_TYPES,
  type KeyType,
  KU,
  keyIdentifier,
  keyUsageValue,
  OID,
  type ParsedCertificate,
  parseCertificate,
  parseCertificatesPem,
  parseCsr,
  pemBlocks,
  privateKeyPem,
  publicKeyOf,
  type Signer,
  signerFor,
  signTbs,
  spkiOf,
  subjectAltNameValue,
  subjectKeyIdExtension,
  toPem,
} from './x509.ts';
import { checkSigningCertificate } from './x509-svid.ts';

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

export interface SignX509SvidRequest {
  csrPem: string;
  ttlSeconds?: number;
  dnsNames?: string[];
  /** The caller's entitlement: true to allow, false or a refusal reason to refuse. */
  authorize?: (spiffeId: string) => boolean | string;
}

export interface SignedX509Svid {
  certPem: string;
  /** Leaf, signing CA, and any upstream intermediates: what a workload presents in TLS. */
  chainPem: string;
  spiffeId: string;
  serial: string;
  notAfter: Date;
}

export type SlotState = 'prepared' | 'active' | 'old';

export interface AuthorityStatus {
  trustDomain: string;
  issuer: string;
  keyType: KeyType;
  roots: { id: string; state: SlotState; upstream: boolean; notBefore: Date; notAfter: Date }[];
  signingCas: { id: string; state: SlotState; notBefore: Date; notAfter: Date }[];
  jwtKeys: { kid: string; state: SlotState; notBefore: Date; notAfter: Date }[];
}

export interface Authority {
  trustDomain: string;
  jwt: JwtMinter;
  /** Trust bundle: every root and signing CA currently trusted, PEM. */
  bundlePem(): string;
  /** The same certificates, parsed, for verifyX509Svid. */
  x509Authorities(): ParsedCertificate[];
  /** SPIFFE bundle format (X509-SVID s6, JWT-SVID): x509-svid entries with x5c, jwt-svid keys with kid. */
  bundleJwks(): Promise<{ keys: Record<string, unknown>[]; spiffe_refresh_hint: number }>;
  signX509Svid(req: SignX509SvidRequest): Promise<SignedX509Svid>;
  /** One rotation step for roots, signing CAs and JWT keys: prepare / activate / retire as due. */
  rotate(): Promise<void>;
  status(): AuthorityStatus;
}

export class AuthorityError extends Error {}

export const DEFAULT_ISSUER = 'https://localhost/oidc';
export const DEFAULT_CA_TTL_SECONDS = 24 * 3600;
export const DEFAULT_ROOT_TTL_SECONDS = 10 * 365 * 24 * 3600;
/** SPIRE's default_x509_svid_ttl. */
export const DEFAULT_X509_SVID_TTL_SECONDS = 3600;
/** notBefore is set this far in the past so that peers with slightly slow clocks accept a fresh cert. */
const BACKDATE_MS = 10_000;
const DAY_MS = 24 * 3600 * 1000;
const STATE_FILE = 'authority.json';
const LOCK_FILE = 'rotate.lock';
const STALE_LOCK_MS = 30_000;

interface StoredSlot {
  id: string;
  state: SlotState;
  notBefore: string;
  notAfter: string;
  /** Relative to the CA directory. */
  keyFile: string;
}

interface StoredCa extends StoredSlot {
  certPem: string;
}

interface StoredRoot extends StoredCa {
  upstream: boolean;
  /** Upstream certificates above the imported CA, as given; the last one is the bundle's anchor. */
  chainPem: string;
}

interface StoredState {
  version: 1;
  trustDomain: string;
  keyType: KeyType;
  issuer: string;
  caTtlSeconds: number;
  rootTtlSeconds: number;
  roots: StoredRoot[];
  signingCas: StoredCa[];
  jwtKeys: StoredSlot[];
}

interface LiveRoot {
  stored: StoredRoot;
  cert: ParsedCertificate;
  /** The root, then the upstream certificates above it; the last one is the bundle's anchor. */
  chain: ParsedCertificate[];
  key: KeyObject;
}

interface LiveCa {
  stored: StoredCa;
  cert: ParsedCertificate;
  signer: Signer;
  /** Precomputed parts of every leaf this CA signs. */
  issuerName: Buffer;
  akiExtension: Buffer;
  /** PEM of the CA and everything above it that a peer needs to build the path, except the bundle root. */
  chainTailPem: string;
}

// ---------------------------------------------------------------------------------------------------------
// Rotation schedule

function scheduleOf(slot: { notBefore: string; notAfter: string }): {
  prepareAt: number;
  activateAt: number;
} {
  const notBefore = Date.parse(slot.notBefore);
  const notAfter = Date.parse(slot.notAfter);
  const ttl = notAfter - notBefore;
  return {
    prepareAt: notAfter - Math.min(ttl / 2, 30 * DAY_MS),
    activateAt: notAfter - Math.min(ttl / 6, 7 * DAY_MS),
  };
}

/**
 * Applies one rotation step to a list of slots; `create` makes a new slot (its key already written).
 * `limitMs` caps how long any new slot can live (a signing CA ends with its root): a successor that could not
 * outlive the active slot is not made.
 */
async function rotateSlots<T extends StoredSlot>(
  slots: T[],
  nowMs: number,
  create: (state: SlotState) => Promise<T>,
  limitMs = Number.POSITIVE_INFINITY,
): Promise<T[]> {
  let list = slots.filter((s) => s.state !== 'old' || Date.parse(s.notAfter) > nowMs);
  const live = (s: T) => Date.parse(s.notAfter) > nowMs;
  let active = list.find((s) => s.state === 'active');
  let prepared = list.find((s) => s.state === 'prepared');
  if (prepared && !live(prepared)) {
    list = list.filter((s) => s !== prepared);
    prepared = undefined;
  }
  if (active && !live(active)) {
    list = list.filter((s) => s !== active);
    active = undefined;
  }
  if (!active) {
    if (prepared) {
      prepared.state = 'active';
      return list;
    }
    return [...list, await create('active')];
  }
  const { prepareAt, activateAt } = scheduleOf(active);
  if (!prepared && nowMs >= prepareAt && Date.parse(active.notAfter) < limitMs) {
    prepared = await create('prepared');
    list = [...list, prepared];
  }
  if (prepared && nowMs >= activateAt) {
    active.state = 'old';
    prepared.state = 'active';
  }
  return list;
}

/** When the next rotation step is due: a prepare, an activation or an expiry, whichever comes first. */
function nextTransition(state: StoredState): number {
  let next = Number.POSITIVE_INFINITY;
  const consider = (slots: StoredSlot[], rotating: boolean, limitMs = Number.POSITIVE_INFINITY) => {
    for (const s of slots) {
      next = Math.min(next, Date.parse(s.notAfter));
      if (rotating && s.state === 'active' && Date.parse(s.notAfter) < limitMs) {
        const { prepareAt, activateAt } = scheduleOf(s);
        const hasPrepared = slots.some((p) => p.state === 'prepared');
        next = Math.min(next, hasPrepared ? activateAt : prepareAt);
      }
    }
  };
  const activeRoot = state.roots.find((r) => r.state === 'active');
  consider(state.roots, !state.roots.some((r) => r.upstream));
  consider(state.signingCas, true, activeRoot ? Date.parse(activeRoot.notAfter) : undefined);
  consider(state.jwtKeys, true);
  return next;
}

// ---------------------------------------------------------------------------------------------------------
// Certificates of the CA itself

function caName(kind: string, trustDomain: string, id: string): Buffer {
  return encodeName([
    ['O', 'SPIFFE'],
    ['CN', `${kind} ${trustDomain.slice(0, 32)} ${id.slice(0, 8)}`],
  ]);
}

function randomSerial(): Buffer {
  const serial = randomBytes(16);
  // Positive (top bit clear) and exactly 16 bytes in DER (next bit set, so no leading zero is trimmed).
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  return serial;
}

function caExtensions(spki: Buffer, trustDomain: string, pathLen: number | null, issuerKeyId: Buffer | null) {
  const bc =
    pathLen === null
      ? Buffer.from([0x30, 0x03, 0x01, 0x01, 0xff])
      : Buffer.from([0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, pathLen]);
  const exts = [
    extension(OID.basicConstraints, true, bc),
    extension(OID.keyUsage, true, keyUsageValue([KU.keyCertSign, KU.cRLSign])),
    subjectKeyIdExtension(spki),
    extension(OID.subjectAltName, false, subjectAltNameValue([`spiffe://${trustDomain}`], [])),
  ];
  if (issuerKeyId) exts.push(authorityKeyIdExtension(issuerKeyId));
  return exts;
}

// ---------------------------------------------------------------------------------------------------------
// Files

function stateError(dir: string, what: string): AuthorityError {
  return new AuthorityError(`CA directory ${dir}: ${what}`);
}

async function readState(dir: string): Promise<StoredState> {
  let text: string;
  try {
    text = await readFile(join(dir, STATE_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw stateError(
        dir,
        `no ${STATE_FILE} here: create the CA first with \`riptides-cli ca init --trust-domain TD --dir ${dir}\``,
      );
    throw stateError(dir, `cannot read ${STATE_FILE}: ${(err as Error).message}`);
  }
  let state: StoredState;
  try {
    state = JSON.parse(text) as StoredState;
  } catch {
    throw stateError(dir, `${STATE_FILE} is not valid JSON: restore it from a backup`);
  }
  if (state.version !== 1 || !Array.isArray(state.roots) || !Array.isArray(state.signingCas))
    throw stateError(dir, `${STATE_FILE} has an unknown format (version ${String(state.version)})`);
  return state;
}

async function writeState(dir: string, state: StoredState): Promise<void> {
  await writeFileAtomic(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`, 0o644);
}

async function readKey(dir: string, keyFile: string): Promise<KeyObject> {
  const path = join(dir, keyFile);
  let pem: string;
  try {
    pem = await readFile(path, 'utf8');
  } catch (err) {
    throw stateError(
      dir,
      `cannot read private key ${keyFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  try {
    return createPrivateKey(pem);
  } catch {
    throw stateError(
      dir,
      `private key ${keyFile} is not a readable PEM private key: restore it from a backup`,
    );
  }
}

async function writeKey(dir: string, id: string, key: KeyObject): Promise<string> {
  const keyFile = join('keys', `${id}.key.pem`);
  await writeFileAtomic(join(dir, keyFile), privateKeyPem(key), 0o600);
  return keyFile;
}

/** Serialises rotations across processes that share the directory; a lock older than 30s is abandoned. */
async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; ; attempt++) {
    try {
      await (await open(path, 'wx', 0o600)).close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const info = await stat(path).catch(() => null);
      if (info && Date.now() - info.mtimeMs > STALE_LOCK_MS) await rm(path, { force: true });
      else if (attempt > 300) throw stateError(dir, `${LOCK_FILE} is held by another rotation; retry later`);
      else await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Validation helpers

function normaliseIssuer(issuer: string): string {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new AuthorityError(`issuer "${issuer}" is not a URL: use e.g. https://oidc.example.com/oidc`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new AuthorityError(
      `issuer "${issuer}" must be an https URL (AWS STS and Vault fetch discovery over https)`,
    );
  if (url.search || url.hash || url.username || url.password)
    throw new AuthorityError(`issuer "${issuer}" may not carry a query, fragment or credentials`);
  return url.href.replace(/\/+$/, '');
}

function positiveSeconds(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0)
    throw new AuthorityError(`${what} must be a positive whole number of seconds (got ${String(v)})`);
  return v;
}

const DNS_NAME_RE = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

function checkCsrKey(key: KeyObject): void {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1' || curve === 'secp384r1') return;
    throw new AuthorityError(`CSR key uses EC curve ${curve ?? 'unknown'}: generate a P-256 or P-384 key`);
  }
  if (key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) return;
  throw new AuthorityError(
    `CSR key type ${key.asymmetricKeyType ?? 'unknown'} is not accepted: use EC P-256 or RSA ≥ 2048 bits`,
  );
}

async function parseUpstream(certPem: string, keyPem: string, nowMs: number) {
  let certs: ParsedCertificate[];
  try {
    certs = parseCertificatesPem(certPem);
  } catch (err) {
    throw new AuthorityError(`upstream certificate: cannot parse it (${(err as Error).message})`);
  }
  const [cert] = certs;
  if (!cert) throw new AuthorityError('upstream certificate: no CERTIFICATE PEM block found in the file');
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new AuthorityError('upstream key: not a readable PEM private key (PKCS#8, PKCS#1 or SEC1)');
  }
  if (!spkiOf(key).equals(cert.spki))
    throw new AuthorityError(
      'upstream key does not match the upstream certificate: pass the key of that certificate',
    );
  try {
    checkSigningCertificate(cert);
  } catch (err) {
    throw new AuthorityError(
      `upstream certificate cannot sign CAs: ${(err as Error).message.replace(/^x509svid: /, '')}`,
    );
  }
  if (cert.notAfter.getTime() <= nowMs + DAY_MS)
    throw new AuthorityError(
      `upstream certificate expires ${cert.notAfter.toISOString()}: import one valid for more than a day`,
    );
  signerFor(key);
  return { cert, key, rest: certs.slice(1) };
}

/** A root (or upstream CA) followed by the upstream certificates above it; the last one is the anchor. */
function chainAboveCa(root: StoredRoot): ParsedCertificate[] {
  return parseCertificatesPem(root.certPem + root.chainPem);
}

// ---------------------------------------------------------------------------------------------------------

class FileAuthority implements Authority {
  readonly jwt: JwtMinter;
  private roots = new Map<string, LiveRoot>();
  private signingCas = new Map<string, LiveCa>();
  private jwtKeys = new Map<string, JwtSigningKey & { stored: StoredSlot }>();
  private nextTransitionMs = 0;
  private rotating: Promise<void> | null = null;
  private readonly leafSubject = encodeName([['O', 'SPIFFE']]);

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
    for (const stored of this.state.roots) {
      const cached = this.roots.get(stored.id);
      const chain = cached?.chain ?? chainAboveCa(stored);
      roots.set(stored.id, {
        stored,
        cert: chain[0]!,
        chain,
        key: cached?.key ?? (await readKey(this.dir, stored.keyFile)),
      });
    }
    this.roots = roots;
    const signingCas = new Map<string, LiveCa>();
    for (const stored of this.state.signingCas) {
      const cached = this.signingCas.get(stored.id);
      if (cached) {
        signingCas.set(stored.id, { ...cached, stored });
        continue;
      }
      const cert = parseCertificate(pemBlocks(stored.certPem)[0]!.der);
      const issuerRoot = [...roots.values()].find((r) => cert.issuer.equals(r.cert.subject));
      const tail = issuerRoot ? issuerRoot.chain.slice(0, -1) : [];
      signingCas.set(stored.id, {
        stored,
        cert,
        signer: signerFor(await readKey(this.dir, stored.keyFile)),
        issuerName: cert.subject,
        akiExtension: authorityKeyIdExtension(cert.subjectKeyId ?? keyIdentifier(cert.spki)),
        chainTailPem: stored.certPem + tail.map((c) => toPem('CERTIFICATE', c.der)).join(''),
      });
    }
    this.signingCas = signingCas;
    const jwtKeys = new Map<string, JwtSigningKey & { stored: StoredSlot }>();
    for (const stored of this.state.jwtKeys) {
      const cached = this.jwtKeys.get(stored.id);
      if (cached) {
        jwtKeys.set(stored.id, { ...cached, stored });
        continue;
      }
      const privateKey = await readKey(this.dir, stored.keyFile);
      const { kty, crv, x, y } = privateKey.export({ format: 'jwk' });
      jwtKeys.set(stored.id, {
        kid: stored.id,
        privateKey,
        publicJwk: { kty, crv, x, y },
        notAfter: new Date(stored.notAfter),
        stored,
      });
    }
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
      const before = [...state.roots, ...state.signingCas, ...state.jwtKeys].map((s) => s.keyFile);
      const nowMs = this.now().getTime();
      const upstream = state.roots.some((r) => r.upstream);
      if (!upstream) {
        state.roots = await rotateSlots(state.roots, nowMs, async (slotState) => ({
          ...(await this.createRoot(state, nowMs)),
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
        async (slotState) => ({ ...(await this.createSigningCa(state, nowMs)), state: slotState }),
        activeRoot?.cert.notAfter.getTime(),
      );
      state.jwtKeys = await rotateSlots(state.jwtKeys, nowMs, async (slotState) => ({
        ...(await this.createJwtKey(state, nowMs)),
        state: slotState,
      }));
      await writeState(this.dir, state);
      this.state = state;
      await this.hydrate();
      // Keys of retired roots, CAs and JWT keys go once the state no longer names them.
      const kept = new Set([...state.roots, ...state.signingCas, ...state.jwtKeys].map((s) => s.keyFile));
      for (const keyFile of before)
        if (!kept.has(keyFile)) await rm(join(this.dir, keyFile), { force: true });
    });
  }

  private async createRoot(state: StoredState, nowMs: number): Promise<StoredRoot> {
    const id = randomBytes(8).toString('hex');
    const key = await generateKey(state.keyType);
    const signer = signerFor(key);
    const spki = spkiOf(key);
    const name = caName('root', state.trustDomain, id);
    const notBefore = new Date(nowMs - BACKDATE_MS);
    const notAfter = new Date(nowMs + state.rootTtlSeconds * 1000);
    const tbs = encodeTbs(
      {
        serial: randomSerial(),
        issuer: name,
        subject: name,
        notBefore,
        notAfter,
        spki,
        extensions: caExtensions(spki, state.trustDomain, null, null),
      },
      signer,
    );
    const keyFile = await writeKey(this.dir, id, key);
    return {
      id,
      state: 'active',
      notBefore: notBefore.toISOString(),
      notAfter: notAfter.toISOString(),
      keyFile,
      certPem: toPem('CERTIFICATE', signTbs(tbs, signer)),
      upstream: false,
      chainPem: '',
    };
  }

  private async createSigningCa(state: StoredState, nowMs: number): Promise<StoredCa> {
    const root = [...this.roots.values()].find((r) => r.stored.state === 'active');
    if (!root)
      throw stateError(this.dir, 'no active root CA to sign a new signing CA: run `riptides-cli ca rotate`');
    const id = randomBytes(8).toString('hex');
    const key = await generateKey(state.keyType);
    const spki = spkiOf(key);
    const signer = signerFor(root.key);
    const notBefore = new Date(nowMs - BACKDATE_MS);
    const notAfter = new Date(Math.min(nowMs + state.caTtlSeconds * 1000, root.cert.notAfter.getTime()));
    const tbs = encodeTbs(
      {
        serial: randomSerial(),
        issuer: root.cert.subject,
        subject: caName('signing', state.trustDomain, id),
        notBefore,
        notAfter,
        spki,
        extensions: caExtensions(
          spki,
          state.trustDomain,
          0,
          root.cert.subjectKeyId ?? keyIdentifier(root.cert.spki),
        ),
      },
      signer,
    );
    const keyFile = await writeKey(this.dir, id, key);
    return {
      id,
      state: 'active',
      notBefore: notBefore.toISOString(),
      notAfter: notAfter.toISOString(),
      keyFile,
      certPem: toPem('CERTIFICATE', signTbs(tbs, signer)),
    };
  }

  private async createJwtKey(state: StoredState, nowMs: number): Promise<StoredSlot> {
    const key = await generateKey('ec-p256');
    const { kty, crv, x, y } = key.export({ format: 'jwk' });
    const kid = await calculateJwkThumbprint({ kty, crv, x, y } as JWK);
    const keyFile = await writeKey(this.dir, `jwt-${kid}`, key);
    return {
      id: kid,
      state: 'active',
      notBefore: new Date(nowMs - BACKDATE_MS).toISOString(),
      notAfter: new Date(nowMs + state.caTtlSeconds * 1000).toISOString(),
      keyFile,
    };
  }

  x509Authorities(): ParsedCertificate[] {
    const nowMs = this.now().getTime();
    const out: ParsedCertificate[] = [];
    for (const r of this.roots.values()) {
      if (r.cert.notAfter.getTime() <= nowMs) continue;
      out.push(r.chain.at(-1)!);
    }
    for (const ca of this.signingCas.values()) if (ca.cert.notAfter.getTime() > nowMs) out.push(ca.cert);
    return out;
  }

  bundlePem(): string {
    return this.x509Authorities()
      .map((c) => toPem('CERTIFICATE', c.der))
      .join('');
  }

  async bundleJwks() {
    const x509 = this.x509Authorities().map((c) => {
      const { kty, crv, x, y, n, e } = publicKeyOf(c).export({ format: 'jwk' });
      return { use: 'x509-svid', kty, ...(crv ? { crv, x, y } : { n, e }), x5c: [c.der.toString('base64')] };
    });
    const jwt = (await this.jwt.jwks()).keys.map((k) => ({ ...k, use: 'jwt-svid' }));
    // SPIFFE bundle refresh hint: a fraction of the signing CA lifetime, so peers see a prepared CA early.
    return {
      keys: [...x509, ...jwt],
      spiffe_refresh_hint: Math.max(60, Math.floor(this.state.caTtlSeconds / 12)),
    };
  }

  status(): AuthorityStatus {
    const times = (s: StoredSlot) => ({
      state: s.state,
      notBefore: new Date(s.notBefore),
      notAfter: new Date(s.notAfter),
    });
    return {
      trustDomain: this.state.trustDomain,
      issuer: this.state.issuer,
      keyType: this.state.keyType,
      roots: this.state.roots.map((r) => ({ id: r.id, upstream: r.upstream, ...times(r) })),
      signingCas: this.state.signingCas.map((s) => ({ id: s.id, ...times(s) })),
      jwtKeys: this.state.jwtKeys.map((k) => ({ kid: k.id, ...times(k) })),
    };
  }

  async signX509Svid(req: SignX509SvidRequest): Promise<SignedX509Svid> {
    const block = pemBlocks(req.csrPem).find((b) => /CERTIFICATE REQUEST$/.test(b.type));
    if (!block)
      throw new AuthorityError(
        'CSR: no "CERTIFICATE REQUEST" PEM block found: pass a PEM encoded PKCS#10 request',
      );
    const csr = parseCsr(block.der);
    if (!csr.signatureValid)
      throw new AuthorityError(
        'CSR signature does not verify with the public key it carries: the request was altered or signed with another key; generate a new CSR',
      );
    checkCsrKey(csr.publicKey);
    if (csr.uris.length !== 1)
      throw new AuthorityError(
        `CSR must carry exactly one URI SAN (the SPIFFE ID), found ${csr.uris.length}: put the ID in the request's subjectAltName`,
      );
    const spiffeId = csr.uris[0]!;
    const parsed = parseSpiffeId(spiffeId);
    if (!parsed.ok) throw new AuthorityError(`CSR SPIFFE ID "${spiffeId}" ${parsed.message}`);
    if (parsed.id.trustDomain !== this.trustDomain)
      throw new AuthorityError(
        `CSR SPIFFE ID "${spiffeId}" is outside trust domain "${this.trustDomain}" of this CA: request an ID under spiffe://${this.trustDomain}/`,
      );
    if (parsed.id.path === '')
      throw new AuthorityError(
        `CSR SPIFFE ID "${spiffeId}" names the trust domain itself: a workload ID needs a path`,
      );
    if (req.authorize) {
      const verdict = req.authorize(spiffeId);
      if (verdict !== true)
        throw new AuthorityError(
          `not entitled to "${spiffeId}": ${typeof verdict === 'string' && verdict ? verdict : 'the caller is not authorised for this ID'}`,
        );
    }
    const dnsNames = req.dnsNames ?? [];
    for (const name of dnsNames)
      if (name.length > 253 || !DNS_NAME_RE.test(name))
        throw new AuthorityError(
          `DNS SAN "${name}" is not a valid DNS name (letters, digits, hyphens, dots; optional leading *.)`,
        );
    const ttl = positiveSeconds(req.ttlSeconds, DEFAULT_X509_SVID_TTL_SECONDS, 'X509-SVID TTL');

    await this.ensureCurrent();
    const ca = [...this.signingCas.values()].find((c) => c.stored.state === 'active');
    if (!ca) throw stateError(this.dir, 'no active signing CA: run `riptides-cli ca rotate`');
    const nowMs = this.now().getTime();
    const notAfter = new Date(Math.min(nowMs + ttl * 1000, ca.cert.notAfter.getTime()));
    const serial = randomSerial();
    const usage =
      csr.publicKey.asymmetricKeyType === 'rsa'
        ? [KU.digitalSignature, KU.keyEncipherment]
        : [KU.digitalSignature];
    const tbs = encodeTbs(
      {
        serial,
        issuer: ca.issuerName,
        subject: this.leafSubject,
        notBefore: new Date(nowMs - BACKDATE_MS),
        notAfter,
        spki: csr.spki,
        extensions: [
          LEAF_BASIC_CONSTRAINTS,
          usage.length === 1 ? LEAF_KEY_USAGE_EC : LEAF_KEY_USAGE_RSA,
          LEAF_EXT_KEY_USAGE,
          extension(OID.subjectAltName, false, subjectAltNameValue([spiffeId], dnsNames)),
          ca.akiExtension,
        ],
      },
      ca.signer,
    );
    const certPem = toPem('CERTIFICATE', signTbs(tbs, ca.signer));
    return {
      certPem,
      chainPem: certPem + ca.chainTailPem,
      spiffeId,
      serial: serial.toString('hex'),
      notAfter,
    };
  }
}

const LEAF_BASIC_CONSTRAINTS = extension(OID.basicConstraints, true, Buffer.from([0x30, 0x00]));
const LEAF_KEY_USAGE_EC = extension(OID.keyUsage, true, keyUsageValue([KU.digitalSignature]));
const LEAF_KEY_USAGE_RSA = extension(
  OID.keyUsage,
  true,
  keyUsageValue([KU.digitalSignature, KU.keyEncipherment]),
);
const LEAF_EXT_KEY_USAGE = extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth)));

// ---------------------------------------------------------------------------------------------------------

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
  const exists = await access(join(dir, STATE_FILE), constants.F_OK).then(
    () => true,
    () => false,
  );
  if (exists)
    throw stateError(
      dir,
      `a CA already lives here (${STATE_FILE} exists): use \`riptides-cli ca rotate --dir ${dir}\`, or choose an empty directory`,
    );
  await mkdir(join(dir, 'keys'), { recursive: true, mode: 0o700 });
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
  if (opts.upstreamCertPem !== undefined && opts.upstreamKeyPem !== undefined) {
    const upstream = await parseUpstream(opts.upstreamCertPem, opts.upstreamKeyPem, nowMs);
    const id = `upstream-${upstream.cert.serial.slice(0, 16)}`;
    state.roots.push({
      id,
      state: 'active',
      notBefore: upstream.cert.notBefore.toISOString(),
      notAfter: upstream.cert.notAfter.toISOString(),
      keyFile: await writeKey(dir, id, upstream.key),
      certPem: toPem('CERTIFICATE', upstream.cert.der),
      upstream: true,
      chainPem: upstream.rest.map((c) => toPem('CERTIFICATE', c.der)).join(''),
    });
  }
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

/** A key and a CSR for `spiffeId`, as an agent would make them (the CLI's `svid mint`, tests, benchmarks). */
export async function generateKeyAndCsr(
  spiffeId: string,
  keyType: KeyType = 'ec-p256',
): Promise<{ keyPem: string; csrPem: string }> {
  const key = await generateKey(keyType);
  return { keyPem: privateKeyPem(key), csrPem: toPem('CERTIFICATE REQUEST', createCsr(key, spiffeId)) };
}
