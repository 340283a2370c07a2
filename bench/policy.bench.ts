import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeLargeRepo } from '../fixtures/generators/large-repo.ts';
import { fmt, median, runChild, type Sample, treeSize } from './lib/measure.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const dir = join(tmpdir(), 'riptides-bench-policy');
writeLargeRepo(dir, { teams: 2000 });

const { files, bytes } = treeSize(dir);
console.log(
  `repository: ${files} files, ${fmt(bytes / 1e6, 1)} MB, 10,000 resources (${RUNS} runs each, median; modes interleaved)`,
);

const child = new URL('./lib/policy-child.ts', import.meta.url).pathname;
const samples: Record<string, Sample[]> = { render: [], yaml: [], 'js-yaml': [] };
for (let i = 0; i < RUNS; i++)
  for (const mode of Object.keys(samples)) samples[mode]!.push(runChild(child, [mode, dir]));

const row = (name: string, list: Sample[]) => ({
  name,
  ms: median(list.map((s) => s.ms)),
  rss: median(list.map((s) => s.maxRssMB)),
});
const render = row('validate+compile (product)', samples.render!);
const yaml = row('yaml parseAllDocuments+toJS', samples.yaml!);
const jsy = row('js-yaml loadAll', samples['js-yaml']!);
for (const r of [render, yaml, jsy])
  console.log(`${r.name.padEnd(30)} ${fmt(r.ms).padStart(6)} ms   peak RSS ${fmt(r.rss).padStart(4)} MB`);
console.log(`ratio validate+compile / yaml parse:    ${fmt(render.ms / yaml.ms, 2)}`);
console.log(`ratio validate+compile / js-yaml parse: ${fmt(render.ms / jsy.ms, 2)}`);
console.log(
  `target: < 1500 ms and < 300 MB → ${render.ms < 1500 && render.rss < 300 ? 'met' : 'NOT met'} (${fmt(render.ms)} ms, ${fmt(render.rss)} MB)`,
);
console.log(`details: ${JSON.stringify(samples.render![0])}`);
