/**
 * validate + compile of generated repositories, against bare YAML parses of the same files in the same run.
 * Shapes: the clean 10,000-resource repository; the same with one warning per identity (an allowed SPIFFE
 * ID one typo from a real one: "did you mean" runs every time) and with one error per team (a binding
 * whose workloadID is one typo off); all 10,000 resources in one file; and 80,000 documents `---\n1\n` in
 * one file (every one an error). Target for each: under 1.5 s, or within 1.5× of js-yaml on the same files.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LargeRepoOptions, writeLargeRepo } from '../fixtures/generators/large-repo.ts';
import { fmt, median, runChild, type Sample, treeSize } from './lib/measure.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const root = join(tmpdir(), 'riptides-bench-policy');

interface Shape {
  name: string;
  dir: string;
  maxFileBytes?: number;
}

const shapes: Shape[] = [];
const generated = (name: string, opts: Omit<LargeRepoOptions, 'teams'>, maxFileBytes?: number) => {
  const dir = join(root, name);
  writeLargeRepo(dir, { teams: 2000, ...opts });
  shapes.push({ name, dir, ...(maxFileBytes ? { maxFileBytes } : {}) });
};
generated('clean', {});
generated('warning per identity', { defect: 'warning' });
generated('error per team', { defect: 'error' });
generated('10,000 resources in one file', { oneFile: true }, 16 * 1024 * 1024);
{
  const dir = join(root, 'many-docs');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'riptides.config.yaml'), 'trustDomain: bench.example.com\n');
  writeFileSync(join(dir, 'many.yaml'), '---\n1\n'.repeat(80_000));
  shapes.push({ name: '80,000 documents in one file', dir });
}

console.log(
  `${RUNS} runs per shape and mode, median; shapes and modes interleaved; each run a fresh process`,
);
const child = new URL('./lib/policy-child.ts', import.meta.url).pathname;
const modes = ['render', 'yaml', 'js-yaml'] as const;
const samples = shapes.map(() => ({
  render: [] as Sample[],
  yaml: [] as Sample[],
  'js-yaml': [] as Sample[],
}));
// Interleaved across shapes as well as modes, so that a change in the machine's load hits every shape alike.
for (let i = 0; i < RUNS; i++)
  shapes.forEach((shape, k) => {
    const extra = shape.maxFileBytes ? [String(shape.maxFileBytes)] : [];
    for (const mode of modes) samples[k]![mode].push(runChild(child, [mode, shape.dir, ...extra]));
  });
let allMet = true;
const cleanMs = median(samples[0]!.render.map((s) => s.ms));
shapes.forEach((shape, k) => {
  const { files, bytes } = treeSize(shape.dir);
  const ms = (m: (typeof modes)[number]) => median(samples[k]![m].map((s) => s.ms));
  const rss = (m: (typeof modes)[number]) => median(samples[k]![m].map((s) => s.maxRssMB));
  const render = ms('render');
  const jsy = ms('js-yaml');
  const met = render < 1500 || render < 1.5 * jsy;
  allMet &&= met;
  console.log(
    `\n${shape.name}: ${files} files, ${fmt(bytes / 1e6, 1)} MB; ${JSON.stringify(samples[k]!.render[0]!.diagnostics)}`,
  );
  console.log(
    `  validate+compile (product)   ${fmt(render).padStart(6)} ms   peak RSS ${fmt(rss('render')).padStart(4)} MB`,
  );
  console.log(
    `  yaml parseAllDocuments+toJS  ${fmt(ms('yaml')).padStart(6)} ms   peak RSS ${fmt(rss('yaml')).padStart(4)} MB`,
  );
  console.log(
    `  js-yaml loadAll              ${fmt(jsy).padStart(6)} ms   peak RSS ${fmt(rss('js-yaml')).padStart(4)} MB`,
  );
  console.log(
    `  ratio to js-yaml ${fmt(render / jsy, 2)}, to the clean repository ${fmt(render / cleanMs, 2)}; target < 1500 ms or < 1.5× js-yaml → ${met ? 'met' : 'NOT met'}`,
  );
});
console.log(`\nall shapes within target: ${allMet ? 'yes' : 'NO'}`);
