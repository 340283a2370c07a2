/**
 * Fingerprints: what stands in for a secret value wherever a person or a machine can read it. One family, two
 * members, told apart by their prefix:
 *
 * - `hmac-sha256:<16 hex>`: values that are not in git (live credentials in status, logs, `credentials check`
 *   and agents' reports). HMAC-SHA256 under the fingerprint key, so a reader who sees one cannot test guesses
 *   of a low-entropy secret (a plain digest of "hunter2" is one hash away). 64 bits, so that two values of a
 *   binding never share one in practice (the manager counts versions by fingerprint).
 * - `sha256:<8 hex>`: values committed to git, in plan diffs only. A plan is read by people who can read the
 *   repository it was made from (the pull request, its CI log), so a digest tells them nothing that the
 *   commit does not; it needs no key, so `plan` stays a dry run without any secret (forks' pull requests run
 *   it too), and the same value shows the same digest in every plan and on every machine. SOPS values are
 *   digested as their ciphertext.
 *
 * The key: `RIPTIDES_FINGERPRINT_KEY` (32 or more bytes, hex or base64) when set, which is how CI or an
 * operator's shell is given the reconciler's key so that fingerprints compare; otherwise `fingerprint.key`
 * in the reconciler's state directory (32 random bytes, created 0600, refused when group or others may read
 * it); otherwise a key made for this process alone, whose fingerprints match nothing outside it.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { makeDirsSync } from '../common/atomic-file.ts';

export const FINGERPRINT_KEY_ENV = 'RIPTIDES_FINGERPRINT_KEY';
export const FINGERPRINT_KEY_FILE = 'fingerprint.key';
const KEY_BYTES = 32;

/** The key live fingerprints are made with, and where it came from (shown so a mismatch can be explained). */
export interface FingerprintKey {
  readonly origin: 'env' | 'state-dir' | 'ephemeral';
  /** Not enumerable: never serialised or inspected. */
  readonly bytes: Buffer;
}

function makeKey(bytes: Buffer, origin: FingerprintKey['origin']): FingerprintKey {
  const key = { origin } as FingerprintKey;
  Object.defineProperty(key, 'bytes', { value: bytes, enumerable: false });
  return Object.freeze(key);
}

export class FingerprintKeyError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'FingerprintKeyError';
  }
}

/** A key for this process alone. */
export function ephemeralFingerprintKey(): FingerprintKey {
  return makeKey(randomBytes(KEY_BYTES), 'ephemeral');
}

/** Parses the environment variable's value: hex or base64 of at least 32 bytes. */
function parseKeyText(text: string, where: string): Buffer {
  const t = text.trim();
  const bytes =
    /^[0-9a-f]+$/i.test(t) && t.length % 2 === 0 ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
  if (bytes.length < KEY_BYTES)
    throw new FingerprintKeyError(
      `${where} holds ${bytes.length} byte(s) of key; at least ${KEY_BYTES} are needed`,
      `make one with: openssl rand -hex ${KEY_BYTES}`,
    );
  return bytes;
}

/**
 * Reads `DIR/fingerprint.key`, creating it when it does not exist: 32 random bytes as hex, written to a
 * temporary file created 0600 and fsynced, then hard-linked into place, which fails when another process
 * created the key first (its key is then read), so no crash leaves half a key and no race leaves two.
 * Throws FingerprintKeyError when the file may be read by group or others, or holds too short a key.
 */
export function stateDirFingerprintKey(dir: string): FingerprintKey {
  const path = join(dir, FINGERPRINT_KEY_FILE);
  if (!existsSync(path)) {
    makeDirsSync(dir, 0o700);
    const tmp = join(dir, `.${FINGERPRINT_KEY_FILE}.${randomBytes(6).toString('hex')}.tmp`);
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      writeSync(fd, `${randomBytes(KEY_BYTES).toString('hex')}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      unlinkSync(tmp);
    }
  }
  const mode = statSync(path).mode;
  if ((mode & 0o077) !== 0)
    throw new FingerprintKeyError(
      `${path} may be read by others (mode ${(mode & 0o777).toString(8)})`,
      `chmod 600 ${path}`,
    );
  return makeKey(parseKeyText(readFileSync(path, 'utf8'), path), 'state-dir');
}

/**
 * The fingerprint key in force: the environment's, else the state directory's (created when missing), else
 * an ephemeral one.
 */
export function resolveFingerprintKey(opts: { env?: NodeJS.ProcessEnv; stateDir?: string }): FingerprintKey {
  const fromEnv = opts.env?.[FINGERPRINT_KEY_ENV];
  if (fromEnv) return makeKey(parseKeyText(fromEnv, FINGERPRINT_KEY_ENV), 'env');
  if (opts.stateDir) return stateDirFingerprintKey(opts.stateDir);
  return ephemeralFingerprintKey();
}

/** A value that is not in git: `hmac-sha256:` and the first 16 hex of HMAC-SHA256(key, value). */
export function keyedFingerprint(key: FingerprintKey, value: string | Uint8Array): string {
  return `hmac-sha256:${createHmac('sha256', key.bytes).update(value).digest('hex').slice(0, 16)}`;
}

/** A value committed to git (plan diffs only): `sha256:` and the first 8 hex of its SHA-256. */
export function committedDigest(value: string | Uint8Array): string {
  return `sha256:${createHash('sha256').update(value).digest('hex').slice(0, 8)}`;
}
