/**
 * One escaping function per output format, for every value that comes from a repository, a server or a file
 * name. Nothing such a value holds may act on the reader's terminal, forge a line of CI log, close a Markdown
 * code span, mention a team, inject HTML, or break the structure of an annotation or a SARIF log.
 *
 * | format | function | what it neutralises |
 * | --- | --- | --- |
 * | terminal text | `escapeText` | control characters (C0, DEL, C1), bidi controls (Trojan Source), invisible format characters, shown as `\n`, `\x1b`, `\u202e`; a leading `::` or `##[` that the GitHub Actions runner would read as a workflow command |
 * | Markdown code span | `markdownCode` | the above, and the span's end: fenced with more backticks than the longest run inside (CommonMark §6.1) |
 * | Markdown prose | `markdownText` | the above, Markdown syntax (every ASCII punctuation backslash-escaped, CommonMark §2.4), HTML, @-mentions |
 * | HTML (e.g. `<summary>`) | `htmlText` | the above, `& < > " '` |
 * | GitHub annotation message | `annotationData` | the above, then `%`, CR, LF percent-encoded as the runner decodes them (actions/toolkit `escapeData`) |
 * | GitHub annotation property | `annotationProperty` | as data, plus `:` and `,` (actions/toolkit `escapeProperty`) |
 * | SARIF text | `sarifText` | as terminal text (JSON.stringify makes it JSON) |
 * | SARIF artifact URI | `sarifUri` | each path segment percent-encoded (RFC 3986), so spaces, `#`, `%`, `?` stay part of the path |
 * | JSON | none | values stay exactly as they are: `JSON.stringify` is the escaping |
 *
 * A backslash in a value is printed as is: the escapes exist to keep characters from acting, not to make
 * text reversible (the JSON format is exact).
 */

/**
 * Characters that act instead of showing, or that hide or reorder what is shown: C0 controls, DEL, C1 controls,
 * Arabic letter mark, zero-width and directional marks, line and paragraph separators, bidi embeddings,
 * overrides and isolates, word joiner and invisible operators, the byte order mark.
 */
const UNSAFE =
  /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(ch: string): string {
  const named = NAMED[ch];
  if (named) return named;
  const code = ch.charCodeAt(0);
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, '0')}`
    : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** Unsafe characters shown as escapes; nothing else changed. */
function showControls(value: string): string {
  return value.replace(UNSAFE, escapeChar);
}

/**
 * Terminal text (and CI logs): control, bidi and invisible characters shown as escapes, so a value stays on its
 * line and cannot send terminal sequences; a value that would start a line with a GitHub Actions workflow
 * command (`::error …`, or the older `##[…]`) has its first character escaped, since the runner reads
 * commands from any line of a job's output.
 */
export function escapeText(value: string): string {
  return showControls(value).replace(/^(\s*)(::|##\[)/, (_, space: string, cmd: string) => {
    return `${space}${escapeChar(cmd[0]!)}${cmd.slice(1)}`;
  });
}

/** The longest run of backticks in `s`. */
function longestBacktickRun(s: string): number {
  let longest = 0;
  let run = 0;
  for (const ch of s) {
    run = ch === '`' ? run + 1 : 0;
    if (run > longest) longest = run;
  }
  return longest;
}

/**
 * A Markdown code span holding `value` literally: fenced with one backtick more than the longest run inside,
 * padded with a space where the value starts or ends with a backtick or a space (CommonMark strips one space
 * from each side when both are present), controls shown as escapes so no line break can end the paragraph.
 * Inside a code span Markdown, HTML and mentions are inert.
 */
export function markdownCode(value: string): string {
  const shown = escapeText(value);
  if (shown === '') return '` `'; // CommonMark has no empty code span; one space is the closest
  const fence = '`'.repeat(longestBacktickRun(shown) + 1);
  const pad = /^[` ]|[` ]$/.test(shown) ? ' ' : '';
  return `${fence}${pad}${shown}${pad}${fence}`;
}

/**
 * markdownCode for a cell of a GitHub Markdown table: a `|` splits the cell even inside a code span, unless it
 * is backslash-escaped, which the table parser removes before the span is read (GFM spec, tables).
 */
export function markdownCodeCell(value: string): string {
  return markdownCode(value).replace(/\|/g, '\\|');
}

/**
 * Markdown prose: controls shown as escapes and every ASCII punctuation character backslash-escaped (CommonMark
 * allows escaping any of them, so emphasis, links, autolinks, tables, HTML tags and entities are all inert).
 * GitHub links mentions, issue numbers and emoji shortcodes after rendering, where a backslash no longer
 * counts, so a zero-width space breaks them: after `@` (`@team`), after `#` before a digit (`#123`), after `:`
 * before a word character (`:warning:`).
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

/** HTML text or attribute content (e.g. a `<summary>`): controls shown as escapes, `& < > " '` as entities. */
export function htmlText(value: string): string {
  return escapeText(value).replace(
    /[&<>"'@]/g,
    (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '@': '@&#8203;' })[ch]!,
  );
}

/** `%`, CR and LF as the runner decodes them (actions/toolkit command.ts `escapeData`). */
function percentData(s: string): string {
  return s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/**
 * The message of a GitHub Actions annotation (`::error file=…::MESSAGE`): each of `lines` has its controls
 * shown as escapes (a newline inside a value cannot become a line break of the message), then the lines are
 * joined with real line breaks and `%`, CR, LF percent-encoded as the runner expects. The whole command stays
 * one line of log, so nothing in it can start another command.
 */
export function annotationData(...lines: string[]): string {
  return percentData(lines.map(showControls).join('\n'));
}

/**
 * A property of a GitHub Actions annotation (`file=`, `title=`): controls shown as escapes (a file name that
 * holds one then matches no file in the pull request, which is the price of never writing a raw escape into
 * the log), `%`, CR, LF, `:` and `,` percent-encoded (actions/toolkit `escapeProperty`).
 */
export function annotationProperty(value: string): string {
  return percentData(showControls(value)).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

/** SARIF `message.text` and names: plain text for code scanning UIs, with controls shown as escapes. */
export function sarifText(value: string): string {
  return showControls(value);
}

/**
 * A repository-relative, '/'-separated path as a SARIF `artifactLocation.uri` (a relative URI reference,
 * resolved against `%SRCROOT%`): each segment percent-encoded as UTF-8, so a space, `#`, `%` or `?` in a file
 * name stays part of the path instead of making the URI invalid or starting a fragment or query.
 */
export function sarifUri(path: string): string {
  return path
    .split('/')
    .map((seg) =>
      encodeURIComponent(seg).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
    )
    .join('/');
}
