/**
 * The in-memory credential store: the analogue of the real module's `/dev/riptides` character device, through
 * which the daemon loads credentials into the kernel. The agent loads a value under its credential hash (the
 * rule table's `credentials[].hash`), the data plane looks it up per request. Values never touch disk here
 * (only `sysfs` propagation files do, and those are the writer's), and a loaded credential cannot leak through
 * serialisation: JSON.stringify, util.inspect, spreads and `change` events show metadata only.
 */
import { EventEmitter } from 'node:events';
import { inspect } from 'node:util';
import { headerSafe } from '../header-value.ts';

export type CredentialValue =
  | { kind: 'bearer'; token: string }
  | {
      kind: 'aws';
      accessKeyId: string;
      secretAccessKey: string;
      sessionToken: string;
      /** When the temporary keys stop working; null when the source did not say. */
      expiresAt: Date | null;
    };

export interface CredentialMeta {
  /** The binding (`<Kind>/<namespace>/<name>`) the value is for; shown in logs and the connections table. */
  binding: string;
  /** The fingerprint the reconciler reports for this value (live fingerprints are keyed: the agent cannot make them). */
  fingerprint: string;
  /** The reconciler's version counter for the binding's value. */
  version: number;
  /** Overrides the value's own expiry (bearer tokens with a known lifetime). */
  expiresAt?: Date | null;
}

/** What lookups, listings and events show: never the value. */
export interface CredentialInfo {
  hash: string;
  kind: 'bearer' | 'aws';
  binding: string;
  fingerprint: string;
  version: number;
  /** ISO 8601. */
  loadedAt: string;
  /** ISO 8601, or null. */
  expiresAt: string | null;
}

/** A loaded credential. The value is reachable only through `value()`, `token` and `aws`. */
export class LoadedCredential {
  readonly #value: CredentialValue;
  readonly #info: CredentialInfo;

  constructor(hash: string, value: CredentialValue, meta: CredentialMeta, loadedAt: Date) {
    this.#value = Object.freeze(value.kind === 'aws' ? { ...value } : { ...value });
    const expiresAt =
      meta.expiresAt !== undefined ? meta.expiresAt : value.kind === 'aws' ? value.expiresAt : null;
    this.#info = Object.freeze({
      hash,
      kind: value.kind,
      binding: meta.binding,
      fingerprint: meta.fingerprint,
      version: meta.version,
      loadedAt: loadedAt.toISOString(),
      expiresAt: expiresAt ? expiresAt.toISOString() : null,
    });
  }

  get info(): CredentialInfo {
    return this.#info;
  }

  get hash(): string {
    return this.#info.hash;
  }

  get kind(): 'bearer' | 'aws' {
    return this.#info.kind;
  }

  /** The bearer token; throws for another kind (a caller that guessed the kind wrong must not send nothing). */
  get token(): string {
    if (this.#value.kind !== 'bearer')
      throw new Error(`credential ${this.#info.hash} is ${this.#info.kind}, not bearer`);
    return this.#value.token;
  }

  /** AWS temporary keys; throws for another kind. */
  get aws(): { accessKeyId: string; secretAccessKey: string; sessionToken: string } {
    const v = this.#value;
    if (v.kind !== 'aws') throw new Error(`credential ${this.#info.hash} is ${this.#info.kind}, not aws`);
    return { accessKeyId: v.accessKeyId, secretAccessKey: v.secretAccessKey, sessionToken: v.sessionToken };
  }

  value(): CredentialValue {
    return this.#value;
  }

  /** True once `expiresAt` has passed. */
  expired(now: Date = new Date()): boolean {
    return this.#info.expiresAt !== null && Date.parse(this.#info.expiresAt) <= now.getTime();
  }

  toJSON(): CredentialInfo {
    return this.#info;
  }

  [inspect.custom](): string {
    return `LoadedCredential ${JSON.stringify(this.#info)}`;
  }

  toString(): string {
    return `[credential ${this.#info.binding} ${this.#info.fingerprint}]`;
  }
}

/** What a lookup found: the credential, or why there is none (a data plane answers 5xx with this reason). */
export type CredentialLookup =
  | { state: 'loaded'; credential: LoadedCredential }
  | { state: 'expired'; info: CredentialInfo }
  | { state: 'absent' };

export interface CredentialChange {
  type: 'load' | 'unload';
  info: CredentialInfo;
}

export interface CredentialStoreEvents {
  change: [CredentialChange];
}

function checkValue(value: CredentialValue): void {
  const nonEmpty = (s: unknown, what: string) => {
    if (typeof s !== 'string' || s.length === 0)
      throw new TypeError(`credential value: ${what} must be a non-empty string`);
    // A value that is not visible ASCII could split the HTTP header it is injected into: refuse it here, once.
    if (!headerSafe(s))
      throw new TypeError(
        `credential value: ${what} holds a character that is not visible ASCII (a line break, NUL, space or non-ASCII)`,
      );
  };
  if (value.kind === 'bearer') nonEmpty(value.token, 'token');
  else if (value.kind === 'aws') {
    nonEmpty(value.accessKeyId, 'accessKeyId');
    nonEmpty(value.secretAccessKey, 'secretAccessKey');
    nonEmpty(value.sessionToken, 'sessionToken');
  } else
    throw new TypeError(
      `credential value: unknown kind ${JSON.stringify((value as { kind: unknown }).kind)}`,
    );
}

export class CredentialStore extends EventEmitter<CredentialStoreEvents> {
  readonly #entries = new Map<string, LoadedCredential>();
  readonly #now: () => Date;

  constructor(opts: { now?: () => Date } = {}) {
    super();
    this.#now = opts.now ?? (() => new Date());
  }

  /**
   * Loads (or replaces) the value for a credential hash. The next lookup sees it: a rotation reaches the next
   * request without reconnecting. Throws TypeError for a malformed value (empty, or with a line break).
   */
  load(hash: string, value: CredentialValue, meta: CredentialMeta): LoadedCredential {
    checkValue(value);
    const loaded = new LoadedCredential(hash, value, meta, this.#now());
    this.#entries.set(hash, loaded);
    this.emit('change', { type: 'load', info: loaded.info });
    return loaded;
  }

  /** Removes a credential; later lookups answer `absent`. Returns whether there was one. */
  unload(hash: string): boolean {
    const existing = this.#entries.get(hash);
    if (!existing) return false;
    this.#entries.delete(hash);
    this.emit('change', { type: 'unload', info: existing.info });
    return true;
  }

  /** The credential when loaded and unexpired; undefined otherwise (see {@link lookup} for why). */
  get(hash: string): LoadedCredential | undefined {
    const found = this.lookup(hash);
    return found.state === 'loaded' ? found.credential : undefined;
  }

  lookup(hash: string): CredentialLookup {
    const c = this.#entries.get(hash);
    if (!c) return { state: 'absent' };
    if (c.expired(this.#now())) return { state: 'expired', info: c.info };
    return { state: 'loaded', credential: c };
  }

  /** Metadata of every loaded credential (for the agent's live-state report). */
  list(): CredentialInfo[] {
    return [...this.#entries.values()].map((c) => c.info);
  }

  get size(): number {
    return this.#entries.size;
  }
}
