/**
 * The CA directory on disk:
 *
 *   authority.json   trust domain, settings, and every root, signing CA and JWT key with its state
 *   keys/*.pem       private keys, 0600, written atomically; never logged, never in an error message
 *   rotate.lock      held while a rotation rewrites the directory
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { constants } from 'node:fs';
import { access, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeDirs, writeFileAtomic } from '../common/atomic-file.ts';
import { LockBusyError, withFileLock } from '../common/file-lock.ts';
import { stateError } from './errors.ts';
import { type KeyType, privateKeyPem } from './x509.ts';

export type SlotState = 'prepared' | 'active' | 'old';

export interface StoredSlot {
  id: string;
  state: SlotState;
  notBefore: string;
  notAfter: string;
  /** Relative to the CA directory. */
  keyFile: string;
}

export interface StoredCa extends StoredSlot {
  certPem: string;
}

export interface StoredRoot extends StoredCa {
  upstream: boolean;
  /** Upstream certificates above the imported CA, as given; the last one is the bundle's anchor. */
  chainPem: string;
}

export interface StoredState {
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

export const STATE_FILE = 'authority.json';
const LOCK_FILE = 'rotate.lock';
const LOCK_WAIT_MS = 30_000;

/** Makes `dir` ready for a new CA; refuses a directory that already holds one. */
export async function createCaDir(dir: string): Promise<void> {
  const exists = await access(join(dir, STATE_FILE), constants.F_OK).then(
    () => true,
    () => false,
  );
  if (exists)
    throw stateError(
      dir,
      `a CA already lives here (${STATE_FILE} exists): use \`riptides-cli ca rotate --dir ${dir}\`, or choose an empty directory`,
    );
  await makeDirs(join(dir, 'keys'), 0o700);
}

export async function readState(dir: string): Promise<StoredState> {
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

export async function writeState(dir: string, state: StoredState): Promise<void> {
  await writeFileAtomic(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o644 });
}

export async function readKey(dir: string, keyFile: string): Promise<KeyObject> {
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

export async function writeKey(dir: string, id: string, key: KeyObject): Promise<string> {
  const keyFile = join('keys', `${id}.key.pem`);
  await writeFileAtomic(join(dir, keyFile), privateKeyPem(key), { mode: 0o600 });
  return keyFile;
}

/** Every key file `state` names. */
export function keyFilesOf(state: StoredState): string[] {
  return [...state.roots, ...state.signingCas, ...state.jwtKeys].map((s) => s.keyFile);
}

/** Deletes those of `keyFiles` that `state` no longer names. */
export async function removeUnnamedKeys(dir: string, keyFiles: string[], state: StoredState): Promise<void> {
  const kept = new Set(keyFilesOf(state));
  for (const keyFile of keyFiles) if (!kept.has(keyFile)) await rm(join(dir, keyFile), { force: true });
}

/**
 * Serialises rotations across processes that share the directory (the reconciler, `riptides-cli ca`). The lock
 * goes with its holder however it exits, so none is ever stale; one still held after LOCK_WAIT_MS fails.
 */
export async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await withFileLock(
      join(dir, LOCK_FILE),
      {
        waitMs: LOCK_WAIT_MS,
        busyMessage: (pid) =>
          `${LOCK_FILE} is held by another rotation${pid ? ` (pid ${pid})` : ''}; retry later`,
      },
      fn,
    );
  } catch (err) {
    if (err instanceof LockBusyError) throw stateError(dir, err.message);
    throw err;
  }
}
