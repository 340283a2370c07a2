/**
 * Diagnostics as people and machines read them: compiler-style text, JSON, GitHub annotations, SARIF 2.1.0.
 * File names, messages, hints and resource names hold what the repository says, so each goes through the
 * escaping function of its format (encoding/escape.ts); JSON carries them as they are.
 */
import {
  annotationData,
  annotationProperty,
  escapeText,
  sarifText,
  sarifUri,
} from '../../encoding/escape.ts';
import { CODES, type Code, countBySeverity, type Diagnostic } from '../diagnostics.ts';
import { RULE_HELP } from './rule-help.ts';

export const DIAGNOSTIC_FORMATS = ['text', 'json', 'github', 'sarif'] as const;
export type DiagnosticFormat = (typeof DIAGNOSTIC_FORMATS)[number];

export interface ReportContext {
  /** e.g. "12 files, 31 resources" */
  summary?: string;
}

/** The closing line: `valid: 0 error(s), 2 warning(s) in 12 files, 31 resources`. */
export function formatSummary(diagnostics: readonly Diagnostic[], ctx: ReportContext = {}): string {
  const { errors, warnings } = countBySeverity(diagnostics);
  return `${errors ? 'invalid' : 'valid'}: ${errors} error(s), ${warnings} warning(s)${ctx.summary ? ` in ${ctx.summary}` : ''}\n`;
}

export function formatText(diagnostics: readonly Diagnostic[], ctx: ReportContext = {}): string {
  const lines: string[] = [];
  for (const d of diagnostics) {
    lines.push(
      `${escapeText(d.file)}:${d.line}:${d.column}: ${d.severity} ${d.code}: ${escapeText(d.message)}${d.resource ? ` [${escapeText(d.resource)}]` : ''}`,
    );
    if (d.hint) lines.push(`  hint: ${escapeText(d.hint)}`);
  }
  return `${lines.map((l) => `${l}\n`).join('')}${formatSummary(diagnostics, ctx)}`;
}

export function formatJson(diagnostics: readonly Diagnostic[], extra: Record<string, unknown> = {}): string {
  return `${JSON.stringify(
    {
      diagnostics: diagnostics.map((d) => ({
        code: d.code,
        severity: d.severity,
        message: d.message,
        hint: d.hint ?? null,
        file: d.file,
        line: d.line,
        column: d.column,
        resource: d.resource ?? null,
      })),
      ...extra,
    },
    null,
    2,
  )}\n`;
}

/** GitHub Actions workflow commands, one per diagnostic; properties and data escaped as the runner reads them. */
export function formatGithub(diagnostics: readonly Diagnostic[]): string {
  return diagnostics
    .map((d) => {
      const level = d.severity === 'error' ? 'error' : 'warning';
      const title = `${d.code} ${CODES[d.code as Code]?.title ?? ''}`.trim();
      const props = `file=${annotationProperty(d.file)},line=${d.line},col=${d.column},title=${annotationProperty(title)}`;
      const data = d.hint ? annotationData(d.message, d.hint) : annotationData(d.message);
      return `::${level} ${props}::${data}\n`;
    })
    .join('');
}

export function formatSarif(diagnostics: readonly Diagnostic[], toolVersion: string): string {
  const used = [...new Set(diagnostics.map((d) => d.code))].sort();
  const ruleIndex = new Map(used.map((c, i) => [c, i]));
  const log = {
    $schema: 'https://json.schemastore.org/sarif-2.1.0.json',
    version: '2.1.0',
    runs: [
      {
        tool: {
          driver: {
            name: 'riptides-cli',
            version: toolVersion,
            rules: used.map((code) => {
              const meta = CODES[code as Code];
              const help = RULE_HELP[code as Code];
              return {
                id: code,
                name: meta?.title ?? code,
                shortDescription: { text: meta?.title.replace(/-/g, ' ') ?? code },
                ...(help ? { help: { text: help.help }, helpUri: help.helpUri } : {}),
                defaultConfiguration: { level: meta?.severity === 'warning' ? 'warning' : 'error' },
              };
            }),
          },
        },
        results: diagnostics.map((d) => ({
          ruleId: d.code,
          ruleIndex: ruleIndex.get(d.code),
          level: d.severity === 'error' ? 'error' : 'warning',
          message: { text: sarifText(d.hint ? `${d.message} (${d.hint})` : d.message) },
          locations: [
            {
              physicalLocation: {
                artifactLocation: { uri: sarifUri(d.file), uriBaseId: '%SRCROOT%' },
                region: { startLine: d.line, startColumn: d.column },
              },
              ...(d.resource
                ? { logicalLocations: [{ fullyQualifiedName: sarifText(d.resource), kind: 'resource' }] }
                : {}),
            },
          ],
        })),
      },
    ],
  };
  return `${JSON.stringify(log, null, 2)}\n`;
}
