/** A plan as text (terminals), Markdown (pull-request comments) and JSON (machines). */
import { formatText as formatDiagnostics } from '../policy/report/diagnostics-report.ts';
import type { AccessEdge } from './access.ts';
import { accessLostSummary, hasChanges, headHasErrors, type Plan } from './plan.ts';
import type { FieldChange } from './resource-diff.ts';

/** GitHub refuses issue and pull-request comments longer than this. */
export const GITHUB_COMMENT_LIMIT = 65_536;

const short = (commit: string) => commit.slice(0, 8);
const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));

function fieldLine(f: FieldChange): string {
  const tag = f.secret ? ' (secret value; fingerprints shown)' : '';
  if (f.added || f.removed) {
    const parts = [
      ...(f.added ?? []).map((v) => `+${show(v)}`),
      ...(f.removed ?? []).map((v) => `-${show(v)}`),
    ];
    return `${f.path}: ${parts.join(' ')}`;
  }
  if (f.before === undefined) return `${f.path}: + ${show(f.after)}${tag}`;
  if (f.after === undefined) return `${f.path}: - ${show(f.before)}${tag}`;
  return `${f.path}: ${show(f.before)} → ${show(f.after)}${tag}`;
}

function edgeLine(e: AccessEdge): string {
  const attrs = Object.entries(e.attributes)
    .filter(([k]) => k !== 'sourceSpec')
    .map(([k, v]) => `${k}=${show(v)}`)
    .join(' ');
  return `${e.kind === 'credential' ? 'credential' : 'reach'} ${e.from} → ${e.to}${e.external ? ' [external]' : ''}${attrs ? ` (${attrs})` : ''}`;
}

function counts(plan: Plan) {
  const by = (c: string) => plan.resources.filter((r) => r.change === c).length;
  return { created: by('created'), changed: by('changed'), deleted: by('deleted') };
}

export function planText(plan: Plan): string {
  const out: string[] = [
    `plan ${plan.base.ref} (${short(plan.base.commit)}) → ${plan.head.ref} (${short(plan.head.commit)}), path ${plan.path || '.'}`,
  ];
  if (headHasErrors(plan)) {
    out.push(
      `head does not validate; nothing would be applied:`,
      formatDiagnostics(plan.diagnostics).trimEnd(),
    );
    return `${out.join('\n')}\n`;
  }
  for (const n of plan.notes) out.push(`note: ${n}`);
  if (plan.diagnostics.length) out.push(formatDiagnostics(plan.diagnostics).trimEnd());
  if (!hasChanges(plan)) {
    out.push('no changes');
    return `${out.join('\n')}\n`;
  }
  const lost = accessLostSummary(plan.accessLost);
  if (lost) out.push('', `Access removed: ${lost}: ${plan.accessLost.workloads.join(', ')}`);
  if (plan.risks.length) {
    out.push('', 'Risks:');
    for (const r of plan.risks) out.push(`  [${r.severity}] ${r.rule}: ${r.message} (${r.resource})`);
  }
  out.push('', 'Resources:');
  for (const r of plan.resources) {
    out.push(`► ${r.kind}/${r.namespace}/${r.name} ${r.change}`);
    for (const f of r.fields) out.push(`    ${fieldLine(f)}`);
  }
  out.push('', 'Node programs:');
  for (const p of plan.programs) {
    out.push(`► ${p.scope} ${p.change} (${p.baseHash ?? '-'} → ${p.headHash ?? '-'})`);
    for (const i of p.identities)
      out.push(`    ${i.change} ${i.spiffeId}${i.parts ? `: ${i.parts.join(', ')}` : ''}`);
  }
  out.push('', 'Effective access:');
  for (const e of plan.access.added) out.push(`  + ${edgeLine(e)}`);
  for (const e of plan.access.removed) out.push(`  - ${edgeLine(e)}`);
  for (const c of plan.access.changed) out.push(`  ~ ${edgeLine(c.before)}\n    → ${edgeLine(c.after)}`);
  const c = counts(plan);
  out.push(
    '',
    `${c.created} created, ${c.changed} changed, ${c.deleted} deleted; ${plan.programs.length} node program(s) change; ${plan.risks.length} risk(s)`,
  );
  return `${out.join('\n')}\n`;
}

function escapeMd(s: string): string {
  return s.replace(/[|<>]/g, (ch) => ({ '|': '\\|', '<': '&lt;', '>': '&gt;' })[ch]!);
}

export function planMarkdown(plan: Plan, limit = GITHUB_COMMENT_LIMIT): string {
  const head = `### Riptides plan: \`${escapeMd(plan.base.ref)}\` (${short(plan.base.commit)}) → \`${escapeMd(plan.head.ref)}\` (${short(plan.head.commit)})\n\n`;
  if (headHasErrors(plan)) {
    const errors = plan.diagnostics.filter((d) => d.severity === 'error');
    const lines = errors.map(
      (d) =>
        `- \`${escapeMd(d.file)}:${d.line}:${d.column}\` **${d.code}** ${escapeMd(d.message)}${d.hint ? ` — ${escapeMd(d.hint)}` : ''}`,
    );
    return fitToLimit(
      `${head}:x: **Head does not validate: ${errors.length} error(s). Nothing would be applied.**\n\n`,
      [{ title: 'Errors', lines, open: true }],
      limit,
    );
  }
  const c = counts(plan);
  const high = plan.risks.filter((r) => r.severity === 'high').length;
  let summary = head;
  for (const n of plan.notes) summary += `> ${escapeMd(n)}\n\n`;
  if (!hasChanges(plan)) return `${summary}No changes.\n`;
  summary += '| | added / created | changed | removed / deleted |\n| --- | ---: | ---: | ---: |\n';
  summary += `| Resources | ${c.created} | ${c.changed} | ${c.deleted} |\n`;
  const pc = (ch: string) => plan.programs.filter((p) => p.change === ch).length;
  summary += `| Node programs | ${pc('added')} | ${pc('changed')} | ${pc('removed')} |\n`;
  summary += `| Access edges | ${plan.access.added.length} | ${plan.access.changed.length} | ${plan.access.removed.length} |\n`;
  summary += `| Risks | ${high} high | ${plan.risks.length - high} medium | |\n\n`;
  const lost = accessLostSummary(plan.accessLost);
  if (lost) summary += `:no_entry: **Access removed: ${lost}** (see Risks, \`access-removed\`).\n\n`;
  const sections: Section[] = [];
  if (plan.risks.length) {
    sections.push({
      title: `Risks (${plan.risks.length})`,
      open: true,
      lines: plan.risks.map(
        (r) =>
          `- ${r.severity === 'high' ? ':warning: **high**' : 'medium'} \`${r.rule}\`: ${escapeMd(r.message)} (\`${escapeMd(r.resource)}\`)`,
      ),
    });
  }
  if (plan.diagnostics.length) {
    sections.push({
      title: `Warnings (${plan.diagnostics.length})`,
      lines: plan.diagnostics.map(
        (d) => `- \`${escapeMd(d.file)}:${d.line}\` ${d.code} ${escapeMd(d.message)}`,
      ),
    });
  }
  sections.push({
    title: `Resource changes (${plan.resources.length})`,
    lines: plan.resources.flatMap((r) => [
      `- **${r.change}** \`${r.kind}/${r.namespace}/${r.name}\``,
      ...r.fields.map((f) => `  - \`${escapeMd(fieldLine(f))}\``),
    ]),
  });
  sections.push({
    title: `Node program changes (${plan.programs.length})`,
    lines: plan.programs.flatMap((p) => [
      `- **${p.change}** \`${escapeMd(p.scope)}\``,
      ...p.identities.map(
        (i) => `  - ${i.change} \`${i.spiffeId}\`${i.parts ? `: ${i.parts.join(', ')}` : ''}`,
      ),
    ]),
  });
  sections.push({
    title: `Effective access (${plan.access.added.length} added, ${plan.access.changed.length} changed, ${plan.access.removed.length} removed)`,
    lines: [
      ...plan.access.added.map((e) => `- :heavy_plus_sign: ${escapeMd(edgeLine(e))}`),
      ...plan.access.removed.map((e) => `- :heavy_minus_sign: ${escapeMd(edgeLine(e))}`),
      ...plan.access.changed.map(
        (ch) =>
          `- :arrows_counterclockwise: ${escapeMd(edgeLine(ch.before))} → ${escapeMd(edgeLine(ch.after))}`,
      ),
    ],
  });
  return fitToLimit(summary, sections, limit);
}

interface Section {
  title: string;
  lines: string[];
  open?: boolean;
}

/** Renders sections as collapsible blocks, cutting lines from the end until the whole fits within `limit`. */
function fitToLimit(prefix: string, sections: Section[], limit: number): string {
  const render = (s: Section, lines: string[], cut: number) =>
    `<details${s.open ? ' open' : ''}><summary>${escapeMd(s.title)}</summary>\n\n${lines.join('\n')}${cut ? `\n- … ${cut} more line(s) cut to fit the comment limit` : ''}\n\n</details>\n\n`;
  const full = sections.map((s) => render(s, s.lines, 0));
  if (prefix.length + full.join('').length <= limit) return prefix + full.join('');
  const note = `> This plan was cut to fit GitHub's ${limit}-character comment limit; run \`riptides-cli plan --format json\` for all of it.\n\n`;
  let budget = limit - prefix.length - note.length;
  const parts: string[] = [];
  for (const s of sections) {
    const overhead = render(s, [], 1).length + 20;
    let kept = 0;
    let used = overhead;
    while (kept < s.lines.length && used + s.lines[kept]!.length + 1 <= budget)
      used += s.lines[kept++]!.length + 1;
    if (budget < overhead) break;
    const block = render(s, s.lines.slice(0, kept), s.lines.length - kept);
    parts.push(block);
    budget -= block.length;
  }
  return prefix + note + parts.join('');
}

export function planJson(plan: Plan): string {
  return `${JSON.stringify(
    {
      base: plan.base,
      head: plan.head,
      path: plan.path,
      valid: !headHasErrors(plan),
      changes: hasChanges(plan),
      notes: plan.notes,
      diagnostics: plan.diagnostics,
      resources: plan.resources,
      programs: plan.programs,
      access: plan.access,
      risks: plan.risks,
      accessLost: plan.accessLost,
    },
    null,
    2,
  )}\n`;
}
