/**
 * A corpus of hostile names and values (newlines, ANSI escapes, GitHub workflow commands, backticks with blank
 * lines, @-mentions, HTML, bidi overrides, file names with spaces, `#` and `%`) through every output format:
 * validate's text, JSON, GitHub annotations and SARIF (the shipped CLI, files on disk), and plan's text,
 * Markdown and JSON. Each format is read back the way its consumer reads it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { HtmlRenderer, Parser } from 'commonmark';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { escapeText } from '../../reconciler/encoding/escape.ts';
import { planJson, planMarkdown, planText } from '../../reconciler/plan/report.ts';
import { BASE, type Files, H, plan } from '../plan/plan-helpers.ts';
import { capture } from '../support/cli.ts';
import { scratch } from '../support/scratch.ts';

const HOSTILE = [
  'line\nbreak',
  '\u001b[31mred\u001b[0m\u001b[2J',
  '::error file=x,line=1::forged',
  '##[error]forged',
  '/bin/app`\n\n**pwned** @org/team',
  '<img src=x onerror=alert(1)><script>x</script>',
  'gnp\u202eexe.yaml\u2066',
  'team a/db#1 100%',
];

/** Characters that act on a terminal or reorder text; a newline is allowed only as our own line break. */
const RAW_CONTROL =
  /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/;
/** File i of the corpus: the hostile value first, so that it starts the lines of text output. */
const fileName = (v: string, i: number) => `${v.replace(/^\//, '')}-${i}.yaml`;
/** A name as annotation properties show it: controls as escapes (no line-start protection mid-line). */
const shownProperty = (f: string) =>
  escapeText(f)
    .replace(/^\\x3a/, ':')
    .replace(/^\\x23/, '#');

/** An identity whose workloadID is the hostile value, and one with a field of that name: two errors quoting it. */
const invalidDoc = (v: string) =>
  [
    `${H}kind: WorkloadIdentity\nmetadata:\n  name: w\nspec:\n  workloadID: ${JSON.stringify(v)}\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: x\n`,
    `${H}kind: WorkloadIdentity\nmetadata:\n  name: u\nspec:\n  workloadID: u\n  ${JSON.stringify(v)}: 1\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: y\n`,
  ].join('---\n');

/** A valid identity carrying the hostile value in a selector, and an egress selector that warns (RT045). */
const validDoc = (v: string, i: number) =>
  `${H}kind: WorkloadIdentity\nmetadata:\n  name: hostile-${i}\nspec:\n  workloadID: hostile/w${i}\n  scope:\n    daemonGroup:\n      id: h${i}\n  selectors:\n    - process:cmdline: ${JSON.stringify(v)}\n  egress:\n    - selectors:\n        - app: ${JSON.stringify(v)}\n`;

function expectSafeText(out: string, what: string) {
  expect(out, what).not.toMatch(RAW_CONTROL);
  for (const line of out.split('\n'))
    expect(line.trimStart(), `${what}: a line that the Actions runner reads as a command`).not.toMatch(
      /^(::|##\[)/,
    );
}

/** The runner's reading of a property value (actions/runner ActionCommand unescaping). */
const unescapeProperty = (s: string) =>
  s
    .replace(/%3A/g, ':')
    .replace(/%2C/g, ',')
    .replace(/%0D/g, '\r')
    .replace(/%0A/g, '\n')
    .replace(/%25/g, '%');

async function validate(dir: string, format: string) {
  const out = capture();
  const code = await main(
    ['validate', '--repo', dir, '--trust-domain', 'example.com', '--format', format],
    out.io,
  );
  return { code, ...out };
}

describe('hostile names and values through every validate format', () => {
  const files = HOSTILE.map(fileName);
  let tmp: ReturnType<typeof scratch>;
  let dir: string;
  beforeAll(() => {
    tmp = scratch('hostile');
    dir = tmp.dir;
    files.forEach((f, i) => {
      mkdirSync(dirname(join(dir, f)), { recursive: true });
      writeFileSync(join(dir, f), invalidDoc(HOSTILE[i]!));
    });
  });
  afterAll(() => tmp?.cleanup());

  it('text: one line per diagnostic and hint, no raw control character, no workflow command', async () => {
    const r = await validate(dir, 'text');
    expect(r.code).toBe(1);
    expectSafeText(r.stdout + r.stderr, 'validate text');
    const json = JSON.parse((await validate(dir, 'json')).stdout);
    const lines =
      json.diagnostics.length + json.diagnostics.filter((d: { hint: unknown }) => d.hint).length + 1;
    expect(r.stdout.split('\n').length - 1).toBe(lines);
    expect(r.stdout).toContain(`${escapeText(files[0]!)}:`);
    expect(r.stdout).toContain('\n\\x3a:error file=x,line=1::forged-2.yaml:');
    expect(r.stdout).toContain(`workloadID "${escapeText(HOSTILE[1]!)}"`);
  });

  it('JSON: the exact names and values, as JSON', async () => {
    const json = JSON.parse((await validate(dir, 'json')).stdout);
    expect(new Set(json.diagnostics.map((d: { file: string }) => d.file))).toEqual(new Set(files));
    expect(json.diagnostics.some((d: { message: string }) => d.message.includes(HOSTILE[4]!))).toBe(true);
  });

  it('GitHub annotations: one command per diagnostic, properties that decode to the shown name', async () => {
    const r = await validate(dir, 'github');
    const json = JSON.parse((await validate(dir, 'json')).stdout);
    const lines = r.stdout.split('\n').slice(0, -1);
    expect(lines).toHaveLength(json.diagnostics.length);
    const shownFiles = new Set<string>();
    for (const line of lines) {
      expect(line).not.toMatch(RAW_CONTROL);
      const m = line.match(/^::(error|warning) file=([^,:]*),line=\d+,col=\d+,title=([^,:]*)::(.*)$/);
      expect(m, line).not.toBeNull();
      shownFiles.add(unescapeProperty(m![2]!));
    }
    expect(shownFiles).toEqual(new Set(files.map(shownProperty)));
    expectSafeText(r.stderr, 'github summary');
  });

  it('SARIF: artifact URIs that parse and decode segment by segment to the file name', async () => {
    const sarif = JSON.parse((await validate(dir, 'sarif')).stdout);
    const results = sarif.runs[0].results;
    const uris = new Set<string>();
    for (const res of results) {
      const uri: string = res.locations[0].physicalLocation.artifactLocation.uri;
      const url = new URL(uri, 'file:///src/');
      expect(url.hash + url.search, uri).toBe('');
      expect(uri).toMatch(/^[A-Za-z0-9\-._~%/]+$/);
      uris.add(uri.split('/').map(decodeURIComponent).join('/'));
      expect(res.message.text).not.toMatch(RAW_CONTROL);
    }
    expect(uris).toEqual(new Set(files));
    for (const rule of sarif.runs[0].tool.driver.rules) {
      expect(rule.help.text.length, rule.id).toBeGreaterThan(20);
      expect(new URL(rule.helpUri).protocol).toBe('https:');
    }
  });
});

describe('hostile names and values through every plan format', () => {
  const head: Files = { ...BASE };
  HOSTILE.forEach((v, i) => {
    head[fileName(v, i)] = validDoc(v, i);
  });
  const p = plan(BASE, head);

  it('has something to show: the values are in the plan', () => {
    expect(p.diagnostics.filter((d) => d.severity === 'error')).toEqual([]);
    expect(p.resources.filter((r) => r.change === 'created')).toHaveLength(HOSTILE.length);
    expect(
      JSON.parse(planJson(p)).resources.flatMap((r: { fields: { after: unknown }[] }) =>
        r.fields.map((f) => f.after),
      ),
    ).toEqual(expect.arrayContaining(HOSTILE));
  });

  it('text: no raw control character, no workflow command, values on their own line', () => {
    const out = planText(p);
    expectSafeText(out, 'plan text');
    for (const v of HOSTILE) expect(out).toContain(escapeText(v));
  });

  it('Markdown: code spans hold each value whole; no markup, HTML or mention reaches the reader', () => {
    const md = planMarkdown(p);
    expectSafeText(md, 'plan markdown');
    const html = new HtmlRenderer().render(new Parser().parse(md));
    const code = [...html.matchAll(/<code>(.*?)<\/code>/gs)].map((m) => m[1]);
    const escapeHtml = (s: string) =>
      s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
    for (const v of HOSTILE) expect(code, v).toContain(escapeHtml(escapeText(v)));
    const strong = [...html.matchAll(/<strong>(.*?)<\/strong>/gs)].map((m) => m[1]);
    for (const s of strong) expect(s).toMatch(/^(created|changed|deleted|added|removed|high|Risks: .*)$/);
    const outsideCode = html.replace(/<code>.*?<\/code>/gs, '');
    expect(outsideCode).not.toMatch(/<(img|script)\b/);
    expect(outsideCode).not.toMatch(/@org/);
  });

  it('JSON: values exactly as committed', () => {
    const json = JSON.parse(planJson(p));
    const files = json.resources.map((r: { file: string }) => r.file);
    for (const [i, v] of HOSTILE.entries()) expect(files).toContain(fileName(v, i));
  });
});
