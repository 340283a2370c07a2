/**
 * One policy file → its YAML documents, with the safety checks that come before any parsing: size cap,
 * strict UTF-8, alias bombs and nesting depth. Pure and deterministic, so callers may cache it by content id.
 */
import { type PendingDiagnostic, pending } from './diagnostics.ts';
import { lineStarts, offsetToPosition, readYaml, YamlReadError } from './yaml-events.ts';

export interface PolicyFile {
  /** Repository-relative, '/'-separated. */
  path: string;
  bytes: Uint8Array;
}

export interface ParsedFile {
  path: string;
  /** The decoded text, kept so positions can be resolved later; null when the file could not be read. */
  text: string | null;
  documents: unknown[];
  diagnostics: PendingDiagnostic[];
}

export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
const utf8Lenient = new TextDecoder('utf-8', { fatal: false, ignoreBOM: false });

/**
 * The text of a policy file exactly as parsePolicyFile decodes it (strict UTF-8, a BOM dropped), for a caller
 * that parsed it earlier and kept only the result; throws TypeError on bytes that are not UTF-8.
 */
export function decodePolicyText(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}

function failed(path: string, diagnostic: PendingDiagnostic): ParsedFile {
  return { path, text: null, documents: [], diagnostics: [diagnostic] };
}

export function parsePolicyFile(file: PolicyFile, maxFileBytes = DEFAULT_MAX_FILE_BYTES): ParsedFile {
  const { path, bytes } = file;
  if (bytes.byteLength > maxFileBytes) {
    return failed(
      path,
      pending(
        'RT001',
        `file is ${bytes.byteLength} bytes, over the ${maxFileBytes}-byte cap; nothing in it was read`,
        {
          file: path,
          line: 1,
          column: 1,
          hint: 'split it into smaller files, or raise the cap with --max-file-size if it is really policy',
        },
      ),
    );
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    const lenient = utf8Lenient.decode(bytes);
    const at = offsetToPosition(lineStarts(lenient), Math.max(0, lenient.indexOf('\uFFFD')));
    return failed(
      path,
      pending('RT002', 'file is not valid UTF-8; nothing in it was read', {
        file: path,
        ...at,
        hint: 're-encode the file as UTF-8 (YAML files must be UTF-8 here)',
      }),
    );
  }
  try {
    const { documents } = readYaml(text, path);
    return { path, text, documents, diagnostics: [] };
  } catch (err) {
    if (!(err instanceof YamlReadError)) throw err;
    const at = offsetToPosition(lineStarts(text), Math.min(err.offset, text.length));
    const code = err.kind === 'alias-bomb' ? 'RT004' : err.kind === 'too-deep' ? 'RT007' : 'RT003';
    const hint =
      err.kind === 'alias-bomb'
        ? 'write the values out instead of nesting aliases'
        : err.kind === 'too-deep'
          ? 'policy documents are never this deeply nested; check the indentation'
          : 'fix the YAML syntax at this position';
    return {
      path,
      text,
      documents: [],
      diagnostics: [pending(code, err.message, { file: path, ...at, hint })],
    };
  }
}
