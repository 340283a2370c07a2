/**
 * A plan as text (terminals), Markdown (pull-request comments) and JSON (machines). Every value that comes from
 * the repository (names, paths, field values, SPIFFE IDs, refs, messages that quote them) goes through the
 * escaping function of the format (encoding/escape.ts); JSON carries values as they are.
 */
import { escapeText, htmlText, markdownCode, markdownText } from '../encoding/escape.ts';
import { formatText as formatDiagnostics } from '../policy/report/diagnostics-report.ts';
import type { AccessDiff, AccessEdge, AttributeChange } from './access.ts';
import { accessLostSummary, hasChanges, headHasErrors, type Plan } from './plan.ts';
import type { FieldChange } from './resource-diff.ts';

/** GitHub refuses issue and pull-request comments longer than this (422 "Body is too long"). */
export const GITHUB_COMMENT_LIMIT = 65_536;

/**
 * Room a plan leaves under the limit for what a CI job puts around it: the README's examples add the
 * `<!-- riptides-plan -->` marker line, others a heading or a link to the run.
 */
export const COMMENT_HEADROOM = 1_024;

const short = (commit: string) => commit.slice(0, 8);
const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));

/** How a field change reads, with `value` (text or Markdown code) applied to every value from the repository. */
function fieldLine(f: FieldChange, value: (v: string) => string): string {
  const tag = f.secret ? ' (secret value; digests shown)' : '';
  const v = (x: unknown) => value(show(x));
  const path = value(f.path);
  if (f.added || f.removed) {
    const parts = [...(f.added ?? []).map((x) => `+${v(x)}`), ...(f.removed ?? []).map((x) => `-${v(x)}`)];
    return `${path}: ${parts.join(' ')}`;
  }
  if (f.before === undefined) return `${path}: + ${v(f.after)}${tag}`;
  if (f.after === undefined) return `${path}: - ${v(f.before)}${tag}`;
  return `${path}: ${v(f.before)} → ${v(f.after)}${tag}`;
}

/** `serverTls MUTUAL → PERMISSIVE`; for lists, what entered and what left. */
function attributeLine(c: AttributeChange, value: (v: string) => string): string {
  const b = c.before;
  const a = c.after;
  if (Array.isArray(b) && Array.isArray(a)) {
    const [inB, inA] = [new Set(b), new Set(a)];
    const added = a.filter((x) => !inB.has(x)).map((x) => `+${value(show(x))}`);
    const removed = b.filter((x) => !inA.has(x)).map((x) => `-${value(show(x))}`);
    if (added.length || removed.length) return `${c.attribute} ${[...added, ...removed].join(' ')}`;
  }
  const side = (x: unknown) => (x === undefined ? '(none)' : value(show(x)));
  return `${c.attribute} ${side(b)} → ${side(a)}`;
}

function edgeLine(e: AccessEdge, value: (v: string) => string, withAttributes = true): string {
  const attrs = withAttributes
    ? Object.entries(e.attributes)
        .filter(([k]) => k !== 'sourceSpec')
        .map(([k, v]) => `${k}=${value(show(v))}`)
        .join(' ')
    : '';
  return `${e.kind === 'credential' ? 'credential' : 'reach'} ${value(e.from)} → ${value(e.to)}${e.external ? ' [external]' : ''}${attrs ? ` (${attrs})` : ''}`;
}

/** A changed edge: the edge once, then only the attributes that changed. */
function changedEdgeLine(c: AccessDiff['changed'][number], value: (v: string) => string): string {
  return `${edgeLine(c.after, value, false)}: ${c.fields.map((f) => attributeLine(f, value)).join(', ')}`;
}

function counts(plan: Plan) {
  const by = (c: string) => plan.resources.filter((r) => r.change === c).length;
  return { created: by('created'), changed: by('changed'), deleted: by('deleted') };
}

export function planText(plan: Plan): string {
  const t = escapeText;
  const out: string[] = [
    `plan ${t(plan.base.ref)} (${short(plan.base.commit)}) → ${t(plan.head.ref)} (${short(plan.head.commit)}), path ${t(plan.path || '.')}`,
  ];
  if (headHasErrors(plan)) {
    out.push(
      `head does not validate; nothing would be applied:`,
      formatDiagnostics(plan.diagnostics).trimEnd(),
    );
    return `${out.join('\n')}\n`;
  }
  for (const n of plan.notes) out.push(`note: ${t(n)}`);
  if (plan.diagnostics.length) out.push(formatDiagnostics(plan.diagnostics).trimEnd());
  if (!hasChanges(plan)) {
    out.push('no changes');
    return `${out.join('\n')}\n`;
  }
  const lost = accessLostSummary(plan.accessLost);
  if (lost) out.push('', `Access removed: ${lost}: ${plan.accessLost.workloads.map(t).join(', ')}`);
  if (plan.risks.length) {
    out.push('', 'Risks:');
    for (const r of plan.risks) out.push(`  [${r.severity}] ${r.rule}: ${t(r.message)} (${t(r.resource)})`);
  }
  out.push('', 'Resources:');
  for (const r of plan.resources) {
    out.push(`► ${t(`${r.kind}/${r.namespace}/${r.name}`)} ${r.change}`);
    for (const f of r.fields) out.push(`    ${fieldLine(f, t)}`);
  }
  out.push('', 'Node programs:');
  for (const p of plan.programs) {
    out.push(`► ${t(p.scope)} ${p.change} (${p.baseHash ?? '-'} → ${p.headHash ?? '-'})`);
    for (const i of p.identities)
      out.push(`    ${i.change} ${t(i.spiffeId)}${i.parts ? `: ${i.parts.join(', ')}` : ''}`);
  }
  out.push('', 'Effective access:');
  for (const e of plan.access.added) out.push(`  + ${edgeLine(e, t)}`);
  for (const e of plan.access.removed) out.push(`  - ${edgeLine(e, t)}`);
  for (const c of plan.access.changed) out.push(`  ~ ${changedEdgeLine(c, t)}`);
  const c = counts(plan);
  out.push(
    '',
    `${c.created} created, ${c.changed} changed, ${c.deleted} deleted; ${plan.programs.length} node program(s) change; ${plan.risks.length} risk(s)`,
  );
  return `${out.join('\n')}\n`;
}

/**
 * The plan as a pull-request comment: at most `limit` characters (UTF-16 code units, never fewer than
 * GitHub's count) less COMMENT_HEADROOM, cut and saying so when it would be longer.
 */
export function planMarkdown(plan: Plan, limit = GITHUB_COMMENT_LIMIT): string {
  const code = markdownCode;
  const text = markdownText;
  const head = `### Riptides plan: ${code(plan.base.ref)} (${short(plan.base.commit)}) → ${code(plan.head.ref)} (${short(plan.head.commit)})\n\n`;
  if (headHasErrors(plan)) {
    const errors = plan.diagnostics.filter((d) => d.severity === 'error');
    const lines = errors.map(
      (d) =>
        `- ${code(`${d.file}:${d.line}:${d.column}`)} **${d.code}** ${text(d.message)}${d.hint ? ` — ${text(d.hint)}` : ''}`,
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
  for (const n of plan.notes) summary += `> ${text(n)}\n\n`;
  if (!hasChanges(plan)) return `${summary}No changes.\n`;
  summary += '| | added / created | changed | removed / deleted |\n| --- | ---: | ---: | ---: |\n';
  summary += `| Resources | ${c.created} | ${c.changed} | ${c.deleted} |\n`;
  const pc = (ch: string) => plan.programs.filter((p) => p.change === ch).length;
  summary += `| Node programs | ${pc('added')} | ${pc('changed')} | ${pc('removed')} |\n`;
  summary += `| Access edges | ${plan.access.added.length} | ${plan.access.changed.length} | ${plan.access.removed.length} |\n\n`;
  // Risks have severities, not the table's added / changed / removed: a line of their own.
  summary += plan.risks.length
    ? `**Risks: ${high ? `:warning: ${high} high` : '0 high'}, ${plan.risks.length - high} medium**\n\n`
    : '**Risks: none**\n\n';
  const lost = accessLostSummary(plan.accessLost);
  if (lost) summary += `:no_entry: **Access removed: ${lost}** (see Risks, \`access-removed\`).\n\n`;
  const sections: Section[] = [];
  if (plan.risks.length) {
    sections.push({
      title: `Risks (${plan.risks.length})`,
      open: true,
      lines: plan.risks.map(
        (r) =>
          `- ${r.severity === 'high' ? ':warning: **high**' : 'medium'} \`${r.rule}\`: ${text(r.message)} (${code(r.resource)})`,
      ),
    });
  }
  if (plan.diagnostics.length) {
    sections.push({
      title: `Warnings (${plan.diagnostics.length})`,
      lines: plan.diagnostics.map((d) => `- ${code(`${d.file}:${d.line}`)} ${d.code} ${text(d.message)}`),
    });
  }
  sections.push({
    title: `Resource changes (${plan.resources.length})`,
    lines: plan.resources.flatMap((r) => [
      `- **${r.change}** ${code(`${r.kind}/${r.namespace}/${r.name}`)}`,
      ...r.fields.map((f) => `  - ${fieldLine(f, code)}`),
    ]),
  });
  sections.push({
    title: `Node program changes (${plan.programs.length})`,
    lines: plan.programs.flatMap((p) => [
      `- **${p.change}** ${code(p.scope)}`,
      ...p.identities.map(
        (i) => `  - ${i.change} ${code(i.spiffeId)}${i.parts ? `: ${i.parts.join(', ')}` : ''}`,
      ),
    ]),
  });
  sections.push({
    title: `Effective access (${plan.access.added.length} added, ${plan.access.changed.length} changed, ${plan.access.removed.length} removed)`,
    lines: [
      ...plan.access.added.map((e) => `- :heavy_plus_sign: ${edgeLine(e, code)}`),
      ...plan.access.removed.map((e) => `- :heavy_minus_sign: ${edgeLine(e, code)}`),
      ...plan.access.changed.map((ch) => `- :arrows_counterclockwise: ${changedEdgeLine(ch, code)}`),
    ],
  });
  return fitToLimit(summary, sections, limit);
}

interface Section {
  title: string;
  lines: string[];
  open?: boolean;
}

/**
 * Renders sections as collapsible blocks, cutting lines from the end of the later sections until the whole,
 * with COMMENT_HEADROOM to spare, fits within `limit`. Every section keeps its title and says how many of its
 * lines were cut, so a reader sees what is missing even when none of them fit.
 */
function fitToLimit(prefix: string, sections: Section[], limit: number): string {
  const render = (s: Section, lines: string[], cut: number) =>
    `<details${s.open ? ' open' : ''}><summary>${htmlText(s.title)}</summary>\n\n${lines.join('\n')}${cut ? `\n- … ${cut} more line(s) cut to fit the comment limit` : ''}\n\n</details>\n\n`;
  const max = limit - COMMENT_HEADROOM;
  const full = sections.map((s) => render(s, s.lines, 0));
  if (prefix.length + full.join('').length <= max) return prefix + full.join('');
  const note = `> This plan was cut to fit GitHub's ${limit}-character comment limit; run \`riptides-cli plan --format json\` for all of it.\n\n`;
  // Each section's frame, with the longest cut note it can have, is paid for before any line.
  const frames = sections.map((s) => render(s, [], s.lines.length).length);
  let budget = max - prefix.length - note.length - frames.reduce((a, b) => a + b, 0);
  const parts = sections.map((s) => {
    let kept = 0;
    while (kept < s.lines.length && s.lines[kept]!.length + 1 <= budget)
      budget -= s.lines[kept++]!.length + 1;
    return render(s, s.lines.slice(0, kept), s.lines.length - kept);
  });
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
