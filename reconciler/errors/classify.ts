/**
 * Maps the errors the reconciler's parts throw onto the one shape (`ReconcileError`): `SourceError`,
 * `AuthorityError` and `CredentialError` by their stable codes, policy diagnostics into `ValidationFailed` with
 * file:line details, Node's system errors (errno codes) into network, timeout and disk failures. Anything else
 * is `Internal` and transient.
 */
import { CredentialError } from '../credentials/types.ts';
import { AuthorityError, type AuthorityErrorCode } from '../identity/errors.ts';
import type { Diagnostic } from '../policy/diagnostics.ts';
import { PolicyPathError } from '../policy/load-dir.ts';
import { SourceError, type SourceErrorCode } from '../source/errors.ts';
import {
  type ErrorCode,
  type ErrorDetail,
  isReconcileError,
  type ReconcileError,
  type Result,
  reconcileError,
} from './reconcile-error.ts';

const SOURCE_CODES: Record<SourceErrorCode, ErrorCode> = {
  unreachable: 'SourceUnreachable',
  auth: 'SourceAuthFailed',
  redirect: 'SourceRedirectRefused',
  'unknown-ref': 'SourceRefNotFound',
  'force-push': 'SourceHistoryRewritten',
  'too-large': 'SourceTooLarge',
  'not-a-repo': 'SourceNotARepository',
  'bad-path': 'SourcePathInvalid',
  'bad-object': 'SourceObjectInvalid',
  busy: 'SourceCacheBusy',
};

/** errno codes of a peer that is down, slow or unresolvable: worth a retry. */
const NETWORK_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);
const TIMEOUT_ERRNOS = new Set([
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);
const PERMISSION_ERRNOS = new Set(['EACCES', 'EPERM', 'EROFS']);
const SPACE_ERRNOS = new Set(['ENOSPC', 'EDQUOT']);

const AUTHORITY_CODES: Record<AuthorityErrorCode, ErrorCode> = {
  unavailable: 'AuthorityUnavailable',
  refused: 'IdentityRequestRefused',
  config: 'AuthorityConfigInvalid',
};

function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/** Anything thrown or rejected → its ReconcileError. A ReconcileError value passes through unchanged. */
export function classify(err: unknown): ReconcileError {
  if (isReconcileError(err)) return err;
  if (err instanceof SourceError)
    return reconcileError(SOURCE_CODES[err.code], err.message, { hint: err.hint });
  if (err instanceof PolicyPathError) return reconcileError('SourcePathInvalid', err.message);
  if (err instanceof AuthorityError) return reconcileError(AUTHORITY_CODES[err.code], err.message);
  if (err instanceof CredentialError) {
    if (err.code === 'withdrawn') return reconcileError('CredentialWithdrawn', err.message);
    if (err.code === 'misconfigured')
      return reconcileError('CredentialUnavailable', err.message, {
        terminal: true,
        hint: 'fix the CredentialSource (or the reconciler flags it needs) and push a new commit',
      });
    return reconcileError('CredentialUnavailable', err.message);
  }
  const errno = (err as { code?: unknown } | null)?.code;
  const name = (err as { name?: unknown } | null)?.name;
  if (typeof errno === 'string') {
    if (NETWORK_ERRNOS.has(errno)) return reconcileError('NetworkError', `${errno}: ${messageOf(err)}`);
    if (TIMEOUT_ERRNOS.has(errno)) return reconcileError('Timeout', `${errno}: ${messageOf(err)}`);
    if (PERMISSION_ERRNOS.has(errno))
      return reconcileError('StateDirUnusable', `${errno}: ${messageOf(err)}`);
    if (SPACE_ERRNOS.has(errno)) return reconcileError('DiskFull', `${errno}: ${messageOf(err)}`);
  }
  if (name === 'TimeoutError' || name === 'AbortError') return reconcileError('Timeout', messageOf(err));
  return reconcileError('Internal', messageOf(err));
}

/**
 * The errors among a render's diagnostics → `ValidationFailed` naming the first one by file:line:column, with
 * every error as a detail (bounded). Returns null when there is no error (warnings do not fail a commit).
 */
export function validationFailure(
  diagnostics: readonly Diagnostic[],
  revision?: string,
): ReconcileError | null {
  const errors = diagnostics.filter((d) => d.severity === 'error');
  const first = errors[0];
  if (!first) return null;
  const at = revision ? `commit ${revision.slice(0, 12)}` : 'the policy';
  const details: ErrorDetail[] = errors.map((d) => ({
    code: d.code,
    message: d.message,
    file: d.file,
    line: d.line,
    column: d.column,
    ...(d.resource ? { resource: d.resource } : {}),
  }));
  return reconcileError(
    'ValidationFailed',
    `${at} does not validate: ${errors.length} error(s), first ${first.file}:${first.line}:${first.column} ${first.code} ${first.message}`,
    { details },
  );
}

/** Runs `work` and returns its value or its classified failure: the bridge from throwing code to values. */
export async function attempt<T>(work: () => Promise<T> | T): Promise<Result<T>> {
  try {
    return { ok: true, value: await work() };
  } catch (err) {
    return { ok: false, error: classify(err) };
  }
}
