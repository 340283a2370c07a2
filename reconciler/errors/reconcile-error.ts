/**
 * The one error shape of the reconciler: every step's failure becomes a `ReconcileError` value, so the loop,
 * status conditions, metrics, logs and `ctl` all say the same thing the same way.
 *
 * - `code`: stable, CamelCase, one of `ERROR_CODES`. It doubles as the reason of the resource's condition, as
 *   Flux's reasons do (`GitOperationFailed`, `BuildFailed`), so it is what alerts and scripts match on.
 * - `reason`: one line saying what happened, naming the thing (file:line, URL without credentials, source
 *   name) a person has to look at. Never a secret value: the producers redact before they throw.
 * - `hint`: what to do about it.
 * - `terminal`: true when retrying the same input cannot help (Flux's `Stalled`: a commit that does not
 *   validate, a missing branch); the loop then waits for the next trigger (a new commit, a webhook, the poll)
 *   instead of backing off and retrying. False (transient): retried with the one retry policy's backoff.
 *
 * No imports: every folder of reconciler/ may depend on this file.
 */

export const ERROR_CODES = {
  // source (the git repository)
  SourceUnreachable: {
    step: 'source',
    terminal: false,
    hint: 'check that the git server is up and reachable; the reconciler retries with backoff',
  },
  SourceCacheBusy: {
    step: 'source',
    terminal: false,
    hint: 'another riptides-cli process is fetching into the same git cache; wait for it, or give this run its own --cache-dir',
  },
  SourceAuthFailed: {
    step: 'source',
    terminal: true,
    hint: 'fix the git credentials (RIPTIDES_GIT_TOKEN, or RIPTIDES_GIT_USERNAME and RIPTIDES_GIT_PASSWORD, or RIPTIDES_GIT_CREDENTIALS_FILE) and restart',
  },
  SourceRefNotFound: {
    step: 'source',
    terminal: true,
    hint: 'push the tracked branch, or start the reconciler with the branch that exists',
  },
  SourceHistoryRewritten: {
    step: 'source',
    terminal: true,
    hint: 'the tracked branch no longer contains the applied revision (force-push); the applied revision stays in force until the new history is accepted',
  },
  SourceTooLarge: {
    step: 'source',
    terminal: true,
    hint: 'the repository is over the size cap; raise the cap or move large files out of it',
  },
  SourceNotARepository: {
    step: 'source',
    terminal: true,
    hint: 'point --repo at a git working copy, a bare repository or an http(s) URL',
  },
  SourceRedirectRefused: {
    step: 'source',
    terminal: true,
    hint: 'point --repo at the final URL of the repository: redirects to another scheme or origin are not followed, so credentials never leave the origin named',
  },
  SourcePathInvalid: {
    step: 'source',
    terminal: true,
    hint: 'point --path at a directory that exists at the tracked revision',
  },
  SourceObjectInvalid: {
    step: 'source',
    terminal: true,
    hint: 'the revision holds a git object that cannot be read (git fsck names it); push a revision written by git itself; the last good revision stays in force',
  },
  // render (load, validate, compile)
  ValidationFailed: {
    step: 'render',
    terminal: true,
    hint: 'fix the errors listed (file:line) and push a new commit; the last good revision stays in force',
  },
  // identity (the trust domain's authority)
  AuthorityUnavailable: {
    step: 'identity',
    terminal: true,
    hint: 'repair or restore the CA directory (riptides-cli ca init / ca rotate)',
  },
  AuthorityConfigInvalid: {
    step: 'identity',
    terminal: true,
    hint: 'fix the identity settings (trust domain, key type, issuer, upstream CA) and restart',
  },
  IdentityRequestRefused: {
    step: 'identity',
    terminal: true,
    hint: 'the request (CSR, SPIFFE ID) was refused as given; it must change before it can succeed',
  },
  // credentials
  CredentialUnavailable: {
    step: 'credentials',
    terminal: false,
    hint: 'check the credential backend (Vault, STS, Kubernetes); the reconciler retries with backoff',
  },
  CredentialWithdrawn: {
    step: 'credentials',
    terminal: true,
    hint: 'the backend says the credential is gone (Secret or key deleted); restore it or remove the binding',
  },
  // agents
  AgentUnreachable: {
    step: 'agents',
    terminal: false,
    hint: 'check the node and its agent; the program is pushed again when it reconnects',
  },
  ProgramRejected: {
    step: 'agents',
    terminal: true,
    hint: 'the agent refused this program version (NACK) and keeps its previous one; fix the policy and push a new commit',
  },
  // anywhere
  NetworkError: {
    step: 'internal',
    terminal: false,
    hint: 'a network call failed; the reconciler retries with backoff',
  },
  Timeout: {
    step: 'internal',
    terminal: false,
    hint: 'an operation ran past its deadline; the reconciler retries with backoff',
  },
  StateDirUnusable: {
    step: 'store',
    terminal: true,
    hint: 'make the state directory writable by the reconciler (0700, owned by its user)',
  },
  DiskFull: {
    step: 'store',
    terminal: false,
    hint: "free space on the state directory's file system; the reconciler retries",
  },
  Internal: {
    step: 'internal',
    terminal: false,
    hint: 'an unexpected failure; the reconciler retries. If it persists, report it with the log line',
  },
} as const satisfies Record<string, { step: Step; terminal: boolean; hint: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** Which step of the pass failed (DESIGN.md §3). */
export type Step = 'source' | 'render' | 'identity' | 'credentials' | 'agents' | 'store' | 'internal';

/** One place a failure points at, e.g. a diagnostic of a commit that does not validate. */
export interface ErrorDetail {
  code: string;
  message: string;
  file?: string;
  line?: number;
  column?: number;
  resource?: string;
}

export interface ReconcileError {
  code: ErrorCode;
  step: Step;
  reason: string;
  hint: string;
  terminal: boolean;
  /** At most `MAX_DETAILS`; `omittedDetails` says how many were left out. */
  details?: ErrorDetail[];
  omittedDetails?: number;
}

/** Bounds on what an error carries, so status and logs stay small whatever the input. */
export const MAX_REASON_CHARS = 500;
export const MAX_DETAILS = 50;

/** `text` cut to `max` characters, saying so. */
export function clip(text: string, max = MAX_REASON_CHARS): string {
  const oneLine = text.replace(/\s*\n\s*/g, ' ').trim();
  return oneLine.length <= max ? oneLine : `${oneLine.slice(0, max - 1)}…`;
}

/**
 * Makes a ReconcileError of `code`; the hint and terminal flag default to the code's catalogue entry.
 * `details` beyond MAX_DETAILS are counted, not kept.
 */
export function reconcileError(
  code: ErrorCode,
  reason: string,
  opts: { hint?: string; terminal?: boolean; details?: readonly ErrorDetail[] } = {},
): ReconcileError {
  const entry = ERROR_CODES[code];
  const error: ReconcileError = {
    code,
    step: entry.step,
    reason: clip(reason),
    hint: clip(opts.hint ?? entry.hint),
    terminal: opts.terminal ?? entry.terminal,
  };
  if (opts.details?.length) {
    error.details = opts.details.slice(0, MAX_DETAILS).map((d) => ({ ...d, message: clip(d.message, 300) }));
    if (opts.details.length > MAX_DETAILS) error.omittedDetails = opts.details.length - MAX_DETAILS;
  }
  return error;
}

/** A step's typed result: the value, or why there is none (errors as values, as Flux's reconcilers return). */
export type Result<T> = { ok: true; value: T } | { ok: false; error: ReconcileError };

export function isReconcileError(value: unknown): value is ReconcileError {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<ReconcileError>;
  return (
    typeof v.code === 'string' &&
    v.code in ERROR_CODES &&
    typeof v.reason === 'string' &&
    typeof v.hint === 'string' &&
    typeof v.terminal === 'boolean'
  );
}

/** `code: reason (hint)`, one line, for logs and one-line CLI messages. */
export function formatError(e: ReconcileError): string {
  return `${e.code}: ${e.reason} (${e.hint})`;
}
