/**
 * STAND-IN for the project's one escaping module (`reconciler/encoding/escape.ts`, being written on branch
 * h-output): the same three function names and contracts, so that when it lands this file becomes
 * `export { escapeText, markdownCode, markdownText } from '../encoding/escape.ts';` and nothing else changes.
 * Every value from a repository, a server or a file name passes through one of these before it is printed.
 */

/** C0, DEL, C1, bidi and invisible format characters: they act on a terminal or reorder what is shown. */
const UNSAFE =
  /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;

function shown(ch: string): string {
  if (ch === '\n') return '\\n';
  if (ch === '\r') return '\\r';
  if (ch === '\t') return '\\t';
  const code = ch.charCodeAt(0);
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, '0')}`
    : `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * Terminal text: unsafe characters shown as escapes, so a value stays on its line and sends no terminal
 * sequence; a leading `::` or `##[` (a GitHub Actions workflow command) has its first character escaped.
 */
export function escapeText(value: string): string {
  return value
    .replace(UNSAFE, shown)
    .replace(
      /^(\s*)(::|##\[)/,
      (_, space: string, cmd: string) => `${space}${shown(cmd[0]!)}${cmd.slice(1)}`,
    );
}

/** A Markdown code span holding `value` literally: fenced one backtick longer than any run inside. */
export function markdownCode(value: string): string {
  const text = escapeText(value);
  if (text === '') return '` `';
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((r) => r.length));
  const fence = '`'.repeat(longest + 1);
  const pad = /^[` ]|[` ]$/.test(text) ? ' ' : '';
  return `${fence}${pad}${text}${pad}${fence}`;
}

/**
 * Markdown prose: every ASCII punctuation character backslash-escaped (no emphasis, link, HTML or table syntax
 * survives), and mentions, issue references and emoji codes broken with a zero-width space.
 */
export function markdownText(value: string): string {
  return escapeText(value).replace(/[!-/:-@[-`{-~]/g, (ch, at: number, s: string) => {
    const next = s[at + 1] ?? '';
    if (ch === '@') return '@&#8203;';
    if (ch === '#' && /\d/.test(next)) return '\\#&#8203;';
    if (ch === ':' && /[\w+-]/.test(next)) return '\\:&#8203;';
    return `\\${ch}`;
  });
}
