/**
 * Diagnostics: what the policy layer reports. Every one names a code, a severity, the file, line and column of
 * the offending node, the resource it concerns, and a hint that says what to do.
 */

export type Severity = 'error' | 'warning';

export interface Diagnostic {
  code: string;
  severity: Severity;
  message: string;
  hint?: string;
  /** Repository-relative, '/'-separated. */
  file: string;
  line: number;
  column: number;
  /** `Kind/namespace/name`, when the diagnostic is about one resource. */
  resource?: string;
}

/** A path into a YAML document: mapping keys and sequence indexes. */
export type NodePath = ReadonlyArray<string | number>;

/**
 * A diagnostic whose position is still a path into a document; positions are resolved afterwards, and only
 * for the files that have diagnostics, so a clean repository never pays for position tracking.
 */
export interface PendingDiagnostic {
  code: string;
  severity: Severity;
  message: string;
  hint?: string;
  file: string;
  resource?: string;
  /** Either an absolute position… */
  line?: number;
  column?: number;
  /** …or a document index and a path inside it; `at: 'key'` points at the mapping key instead of its value. */
  doc?: number;
  path?: NodePath;
  at?: 'key' | 'value';
}

/** The catalogue of codes: a stable title per code (SARIF rule names, docs) and its default severity. */
export const CODES = {
  RT001: { title: 'file-too-large', severity: 'error' },
  RT002: { title: 'not-utf8', severity: 'error' },
  RT003: { title: 'yaml-syntax', severity: 'error' },
  RT004: { title: 'yaml-alias-bomb', severity: 'error' },
  RT005: { title: 'symlink-outside-repository', severity: 'error' },
  RT006: { title: 'document-not-mapping', severity: 'error' },
  RT007: { title: 'unreadable-file', severity: 'error' },
  RT008: { title: 'too-many-diagnostics', severity: 'error' },
  RT010: { title: 'unknown-kind', severity: 'error' },
  RT011: { title: 'missing-kind', severity: 'error' },
  RT020: { title: 'unknown-field', severity: 'error' },
  RT021: { title: 'missing-field', severity: 'error' },
  RT022: { title: 'wrong-type', severity: 'error' },
  RT023: { title: 'invalid-value', severity: 'error' },
  RT024: { title: 'exactly-one-of', severity: 'error' },
  RT030: { title: 'invalid-spiffe-id', severity: 'error' },
  RT031: { title: 'invalid-workload-id', severity: 'error' },
  RT032: { title: 'lifetime-out-of-range', severity: 'error' },
  RT033: { title: 'malformed-role-arn', severity: 'error' },
  RT034: { title: 'malformed-url', severity: 'error' },
  RT035: { title: 'malformed-address', severity: 'error' },
  RT036: { title: 'unknown-selector-key', severity: 'error' },
  RT040: { title: 'duplicate-name', severity: 'error' },
  RT041: { title: 'duplicate-workload-id', severity: 'error' },
  RT042: { title: 'dangling-credential-source', severity: 'error' },
  RT043: { title: 'dangling-credential-name', severity: 'error' },
  RT044: { title: 'workload-id-without-identity', severity: 'error' },
  RT045: { title: 'selector-matches-no-service', severity: 'warning' },
  RT046: { title: 'mutual-tls-to-external-service', severity: 'error' },
  RT047: { title: 'process-claimed-twice', severity: 'error' },
  RT048: { title: 'allowed-id-without-identity', severity: 'warning' },
  RT049: { title: 'injection-without-intercept', severity: 'warning' },
  RT050: { title: 'plaintext-secret-in-git', severity: 'error' },
  RT051: { title: 'credential-source-not-supported', severity: 'warning' },
  RT052: { title: 'status-ignored', severity: 'warning' },
  RT053: { title: 'credential-workload-mismatch', severity: 'warning' },
  RT054: { title: 'plaintext-vault-address', severity: 'warning' },
  RT055: { title: 'allowed-id-in-foreign-trust-domain', severity: 'warning' },
  RT060: { title: 'invalid-config', severity: 'error' },
} as const satisfies Record<string, { title: string; severity: Severity }>;

export type Code = keyof typeof CODES;

/** Longest diagnostic message kept, in characters: messages quote values, and a value may be megabytes. */
export const MAX_MESSAGE_CHARS = 1000;

/** `message` cut in the middle to MAX_MESSAGE_CHARS, saying how much was left out. */
function clipMessage(message: string): string {
  if (message.length <= MAX_MESSAGE_CHARS) return message;
  const head = message.slice(0, 700);
  const tail = message.slice(-200);
  return `${head} … (${message.length - head.length - tail.length} characters left out) … ${tail}`;
}

export function pending(
  code: Code,
  message: string,
  where: Omit<PendingDiagnostic, 'code' | 'severity' | 'message'>,
  severity: Severity = CODES[code].severity,
): PendingDiagnostic {
  return { code, severity, message: clipMessage(message), ...where };
}

export function compareDiagnostics(a: Diagnostic, b: Diagnostic): number {
  if (a.file !== b.file) return a.file < b.file ? -1 : 1;
  return (
    a.line - b.line ||
    a.column - b.column ||
    (a.code < b.code ? -1 : a.code > b.code ? 1 : 0) ||
    (a.message < b.message ? -1 : a.message > b.message ? 1 : 0)
  );
}

export function countBySeverity(diagnostics: readonly Diagnostic[]): { errors: number; warnings: number } {
  let errors = 0;
  for (const d of diagnostics) if (d.severity === 'error') errors++;
  return { errors, warnings: diagnostics.length - errors };
}
