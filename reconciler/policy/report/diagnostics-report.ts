/** Diagnostics as people and machines read them: compiler-style text, JSON, GitHub annotations, SARIF 2.1.0. */
import { CODES, type Code, countBySeverity, type Diagnostic } from '../diagnostics.ts';

export const DIAGNOSTIC_FORMATS = ['text', 'json', 'github', 'sarif'] as const;
export type DiagnosticFormat = (typeof DIAGNOSTIC_FORMATS)[number];

export interface ReportContext {
  /** e.g. "12 files, 31 resources" */
  summary?: string;
}

export function formatText(diagnostics: readonly Diagnostic[], ctx: ReportContext = {}): string {
  const lines: string[] = [];
  for (const d of diagnostics) {
    lines.push(
      `${d.file}:${d.line}:${d.column}: ${d.severity} ${d.code}: ${d.message}${d.resource ? ` [${d.resource}]` : ''}`,
    );
    if (d.hint) lines.push(`  hint: ${d.hint}`);
  }
  const { errors, warnings } = countBySeverity(diagnostics);
  const verdict = errors ? 'invalid' : 'valid';
  lines.push(
    `${verdict}: ${errors} error(s), ${warnings} warning(s)${ctx.summary ? ` in ${ctx.summary}` : ''}`,
  );
  return `${lines.join('\n')}\n`;
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

/** GitHub Actions workflow commands; data and properties are escaped as the runner expects. */
function escapeData(s: string): string {
  return s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}
function escapeProperty(s: string): string {
  return escapeData(s).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

export function formatGithub(diagnostics: readonly Diagnostic[]): string {
  return diagnostics
    .map((d) => {
      const level = d.severity === 'error' ? 'error' : 'warning';
      const props = `file=${escapeProperty(d.file)},line=${d.line},col=${d.column},title=${escapeProperty(`${d.code} ${CODES[d.code as Code]?.title ?? ''}`.trim())}`;
      return `::${level} ${props}::${escapeData(d.hint ? `${d.message}\n${d.hint}` : d.message)}\n`;
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
              return {
                id: code,
                name: meta?.title ?? code,
                shortDescription: { text: meta?.title.replace(/-/g, ' ') ?? code },
                defaultConfiguration: { level: meta?.severity === 'warning' ? 'warning' : 'error' },
              };
            }),
          },
        },
        results: diagnostics.map((d) => ({
          ruleId: d.code,
          ruleIndex: ruleIndex.get(d.code),
          level: d.severity === 'error' ? 'error' : 'warning',
          message: { text: d.hint ? `${d.message} (${d.hint})` : d.message },
          locations: [
            {
              physicalLocation: {
                artifactLocation: { uri: d.file, uriBaseId: '%SRCROOT%' },
                region: { startLine: d.line, startColumn: d.column },
              },
              ...(d.resource
                ? { logicalLocations: [{ fullyQualifiedName: d.resource, kind: 'resource' }] }
                : {}),
            },
          ],
        })),
      },
    ],
  };
  return `${JSON.stringify(log, null, 2)}\n`;
}
