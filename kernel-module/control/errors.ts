/** The control interface's one error type: a stable code, a message naming the file, and what to do about it. */
export type ControlErrorCode =
  /** A file of the tree does not hold what its ABI says (bad JSON, wrong shape, wrong abi). */
  | 'invalid'
  /** A file is larger than its cap; it was not read. */
  | 'too-large'
  /** A path of the tree is not what the writer made (a symlink, a file where a directory belongs). */
  | 'unsafe-path'
  /** A certificate and its key do not belong together, or do not say what the rule table says. */
  | 'svid-mismatch'
  /** Reading or writing the tree failed (permissions, disk). */
  | 'io';

export class ControlError extends Error {
  override readonly name = 'ControlError';
  constructor(
    readonly code: ControlErrorCode,
    message: string,
    /** What the operator can do about it. */
    readonly hint: string,
  ) {
    super(message);
  }
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
