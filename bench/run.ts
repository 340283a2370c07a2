/**
 * `npm run bench [-- NAME...]`: runs every bench/*.bench.ts (or the named ones) one after another, each in
 * its own child process so that one benchmark's heap and peak RSS do not colour the next one's figures.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const all = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .sort();
const selected = wanted.length ? all.filter((f) => wanted.some((w) => f.includes(w))) : all;
if (selected.length === 0) {
  console.error(`no benchmark matches ${wanted.join(' ')}; available: ${all.join(', ')}`);
  process.exit(2);
}
// Benchmarks that run riptides-cli measure it as shipped: compiled, not through tsx.
const build = spawnSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
if (build.status !== 0) {
  console.error('npm run build failed; benchmarks would measure stale or uncompiled code');
  process.exit(2);
}
let failed = 0;
for (const file of selected) {
  console.log(`\n=== ${file} ===`);
  const result = spawnSync(process.execPath, ['--import', 'tsx', join(here, file)], { stdio: 'inherit' });
  if (result.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
