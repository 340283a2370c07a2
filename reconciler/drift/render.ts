/**
 * A drift report for people (Markdown: fits a PR comment, an issue or a chat message) and for machines (JSON).
 * Both say at the top whether anything drifted. Every value from a node or from git is escaped for Markdown;
 * the Markdown is cut, saying so, before GitHub's 65,536-character limit (the JSON is always whole).
 */
import { markdownCode, markdownCodeCell, markdownText } from '../encoding/escape.ts';
import { DRIFT_KINDS, type DriftReport, type NodeDrift } from './report.ts';

export const MAX_MARKDOWN_CHARS = 60_000;

export function renderJson(report: DriftReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

function short(rev: string | null | undefined): string {
  return rev ? rev.slice(0, 12) : '—';
}

function headline(report: DriftReport): string {
  const { nodes, nodesDrifted, counts } = report.summary;
  if (!report.drifted)
    return `**No drift**: ${nodes} node(s) run revision ${report.revision ? markdownCode(short(report.revision)) : '(none applied yet)'} as git says.`;
  const items = DRIFT_KINDS.reduce((n, k) => n + counts[k], 0);
  return `**Drift detected**: ${items} item(s) on ${nodesDrifted} of ${nodes} node(s), against revision ${report.revision ? markdownCode(short(report.revision)) : '(none applied yet)'}.`;
}

function healLines(report: DriftReport): string[] {
  const h = report.heal;
  if (!h) return [];
  const sentTo = new Map<string, number>();
  for (const a of h.actions) for (const what of a.sent) sentTo.set(what, (sentTo.get(what) ?? 0) + 1);
  const sent = [...sentTo].map(([what, n]) => `${what} to ${n} node(s)`).join(', ') || 'nothing';
  const items = DRIFT_KINDS.reduce((n, k) => n + h.after.counts[k], 0);
  const after = h.after.drifted
    ? `${items} item(s) on ${h.after.nodesDrifted} node(s) remain (below).`
    : 'no drift remains.';
  const lines = [`**Healed**: sent ${sent}; ${after}`, ''];
  for (const a of h.actions) if (a.note) lines.push(`- ${markdownText(a.node)}: ${markdownText(a.note)}`);
  if (h.actions.some((a) => a.note)) lines.push('');
  return lines;
}

function nodeSection(n: NodeDrift): string {
  const where = n.group ? ` (group ${markdownCode(n.group)})` : '';
  const state = n.reachable
    ? `program ${markdownCode(short(n.liveVersion))}, desired ${markdownCode(short(n.desiredVersion))}`
    : '**unreachable**';
  const lines = [
    `### ${markdownText(n.node)}${where}`,
    '',
    `${state}; last contact ${n.lastContact ? markdownCode(n.lastContact) : 'never'}.`,
    '',
  ];
  if (n.items.length) {
    lines.push('| kind | what | subject | detail |', '| --- | --- | --- | --- |');
    for (const i of n.items) {
      const versions =
        i.desired !== undefined || i.live !== undefined
          ? ` (desired ${markdownCodeCell(short(i.desired))}, live ${markdownCodeCell(short(i.live))})`
          : '';
      const expiry = i.expiresAt ? ` (expires ${markdownCodeCell(i.expiresAt)})` : '';
      lines.push(
        `| ${i.kind} | ${i.what} | ${markdownCodeCell(i.subject)} | ${markdownText(i.detail)}${versions}${expiry} |`,
      );
    }
    lines.push('');
  }
  return lines.join('\n');
}

export function renderMarkdown(report: DriftReport, maxChars = MAX_MARKDOWN_CHARS): string {
  const head = [
    `## Drift report`,
    '',
    headline(report),
    '',
    ...healLines(report),
    `Generated ${markdownCode(report.generatedAt)}; SVIDs and credentials expiring within ${report.staleThresholdSeconds} s count as stale${report.unreachableAfterSeconds !== undefined ? `, agents silent for over ${report.unreachableAfterSeconds} s as unreachable` : ''}.`,
    '',
    `| ${DRIFT_KINDS.join(' | ')} |`,
    `| ${DRIFT_KINDS.map(() => '---').join(' | ')} |`,
    `| ${DRIFT_KINDS.map((k) => report.summary.counts[k]).join(' | ')} |`,
    '',
    '',
  ].join('\n');
  let out = head;
  const drifted = report.nodes.filter((n) => n.items.length > 0);
  const remaining = report.heal?.remaining.filter((n) => n.items.length > 0) ?? [];
  const sections = [
    ...drifted.map((n) => `${nodeSection(n)}\n`),
    ...(remaining.length ? ['### After the heal\n\n'] : []),
    ...remaining.map((n) => `${nodeSection(n).replace(/^### /, '#### ')}\n`),
  ];
  for (let i = 0; i < sections.length; i++) {
    const section = sections[i]!;
    if (out.length + section.length > maxChars) {
      const left = sections.slice(i).filter((x) => x.startsWith('#') && !x.startsWith('### After')).length;
      out += `\n_${left} more node(s) with drift are left out to keep this short; the JSON report lists every item._\n`;
      return out;
    }
    out += section;
  }
  const clean = report.nodes.length - drifted.length;
  if (clean > 0) out += `${sections.length ? '\n' : ''}${clean} node(s) without drift.\n`;
  return out;
}
