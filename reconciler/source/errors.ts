/**
 * Errors of the git source: `SourceError` with a stable code and a hint, and the mapping of whatever a
 * fetch throws (guard failures, isomorphic-git's errors, node's socket and TLS errors) onto it.
 */
import type { Redactor } from '../common/redact.ts';

/** Every failure of the git source carries one of these codes, so callers (plan, the reconciler loop) can map
 * them to exit codes and conditions without parsing messages. */
export type SourceErrorCode =
  | 'unreachable'
  | 'auth'
  | 'redirect'
  | 'unknown-ref'
  | 'force-push'
  | 'too-large'
  | 'not-a-repo'
  | 'bad-path'
  | 'bad-object'
  /** Another process holds the cache's lock longer than this one may wait. */
  | 'busy';

export class SourceError extends Error {
  override readonly name = 'SourceError';
  constructor(
    readonly code: SourceErrorCode,
    message: string,
    /** What the operator can do about it. */
    readonly hint: string,
  ) {
    super(message);
  }
}

/** A blob over the size the caller accepts, known from its object header before anything was inflated. */
export class BlobTooLargeError extends SourceError {
  constructor(
    readonly oid: string,
    readonly size: number,
    readonly limit: number,
  ) {
    super(
      'too-large',
      `blob ${oid} is ${size} bytes, over the ${limit}-byte cap; it was not read`,
      'keep large files out of the policy path',
    );
  }
}

/**
 * Why isomorphic-git could not read an object of a revision as git wrote it, or undefined when `err` is
 * something else: a tree entry of a mode it does not read (git's legacy 100664, or one git never wrote), an
 * entry whose object is of another type (a "file" that is a tree), an object that does not parse. A pushed
 * tree can hold any of these, so they are a fault of the revision, not of this program.
 */
export function objectFault(err: unknown): string | undefined {
  const e = err as {
    code?: string;
    data?: { message?: unknown; oid?: string; actual?: string; expected?: string };
  } | null;
  if (e?.code === 'InternalError' && typeof e.data?.message === 'string') return e.data.message;
  if (e?.code === 'ObjectTypeError' && e.data)
    return `object ${e.data.oid} is a ${e.data.actual} where a ${e.data.expected} belongs`;
  return undefined;
}

export const OBJECT_FAULT_HINT =
  'git fsck names the object; write the revision with git itself (a tree made by hand or by another tool can hold what git does not read); nothing from it was applied';

export const CREDENTIAL_ENV_HINT =
  'set RIPTIDES_GIT_TOKEN, or RIPTIDES_GIT_USERNAME and RIPTIDES_GIT_PASSWORD, or RIPTIDES_GIT_CREDENTIALS_FILE (git-credentials format)';

/** git's scp-like SSH syntax, `git@github.com:org/repo.git`: a remote, never a directory name. */
export function isScpLikeRemote(repo: string): boolean {
  return /^[^/\\]+@[^/\\]+:/.test(repo);
}

/** An SSH remote (scp-like or ssh://): refused, saying what to use instead. */
export function sshUnsupported(shown: string): SourceError {
  return new SourceError(
    'not-a-repo',
    `${shown}: SSH remotes are not supported`,
    'use the https:// URL of the repository with a token in RIPTIDES_GIT_TOKEN, or a local clone',
  );
}

/** The message of anything thrown, for wrapping into a SourceError. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * What a failed fetch means, in words an operator can act on. `guard` is the first failure of the HTTP
 * guards (timeouts, caps, redirects), which isomorphic-git may have wrapped; server text passes `redactor`.
 */
export function networkError(
  err: unknown,
  where: string,
  ctx: { guard: SourceError | undefined; redactor: Redactor; hasCredentials: boolean },
): SourceError {
  if (ctx.guard) return ctx.guard;
  if (err instanceof SourceError) return err;
  const e = err as { code?: string; data?: { statusCode?: number; statusMessage?: string } };
  const r = (s: string) => ctx.redactor.redact(s);
  if (e.code === 'HttpError') {
    const status = e.data?.statusCode ?? 0;
    if (status === 401 || status === 403) {
      return new SourceError(
        'auth',
        ctx.hasCredentials
          ? `${where}: the server refused the credentials (HTTP ${status})`
          : `${where}: the server requires credentials (HTTP ${status}) and none were given`,
        CREDENTIAL_ENV_HINT,
      );
    }
    if (status === 404) {
      return new SourceError(
        'not-a-repo',
        `${where}: no git repository at this URL (HTTP 404)`,
        'check the repository URL; a private repository may also answer 404 without credentials',
      );
    }
    return new SourceError(
      'unreachable',
      `${where}: the server answered HTTP ${status} ${r(e.data?.statusMessage ?? '').slice(0, 200)}`.trim(),
      'check the git server; retry later if it is overloaded',
    );
  }
  if (e.code === 'NotFoundError' && (err as { data?: { what?: string } }).data?.what === 'HEAD') {
    // isomorphic-git cannot fetch at all when the remote's HEAD names a branch that does not exist.
    return new SourceError(
      'unknown-ref',
      `${where}: the remote's HEAD names a branch that does not exist, so its default branch is unknown`,
      'on the server, point HEAD at an existing branch (git symbolic-ref HEAD refs/heads/main in the bare repository, or the default-branch setting of the hosting service)',
    );
  }
  if (e.code === 'SmartHttpError') {
    return new SourceError(
      'not-a-repo',
      `${where}: the server did not answer as a git smart-HTTP server`,
      'check the repository URL (it usually ends in .git)',
    );
  }
  if (e.code && /CERT|SSL|TLS|SELF_SIGNED|VERIFY|ISSUER/.test(e.code)) {
    return new SourceError(
      'unreachable',
      `${where}: TLS verification of the server failed (${e.code})`,
      'for a self-hosted server with its own CA, pass that CA bundle with --ca-file (caFile)',
    );
  }
  if (e.code && /^E[A-Z]+$/.test(e.code)) {
    return new SourceError(
      'unreachable',
      `${where}: cannot connect (${e.code})`,
      'check the URL and that the git server is running and reachable from here',
    );
  }
  return new SourceError(
    'unreachable',
    `${where}: fetch failed: ${r(messageOf(err)).slice(0, 300)}`,
    'check the URL and the git server',
  );
}
