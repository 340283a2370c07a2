/**
 * One measurement in a fresh process, so peak RSS is its own: `render` (load + validate + compile, the product
 * path), `yaml` (yaml.parseAllDocuments + toJS) or `js-yaml` (loadAll), each over the same files.
 */
import * as jsyaml from 'js-yaml';
import { parseAllDocuments } from 'yaml';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { maxRssMB } from './measure.ts';

const [mode, dir] = process.argv.slice(2) as [string, string];
const start = performance.now();
let extra: Record<string, unknown> = {};
if (mode === 'render') {
  const tree = loadPolicyDir({ repo: dir });
  const result = renderPolicy(tree.files, { trustDomain: 'bench.example.com' }, tree.diagnostics);
  if (!result.programs)
    throw new Error(`generated repository did not validate: ${result.diagnostics[0]?.message}`);
  extra = { resources: result.stats.resources, files: result.stats.files, programs: result.programs.length };
} else {
  // The same file list the product reads, so only the parse path differs.
  const tree = loadPolicyDir({ repo: dir });
  let docs = 0;
  for (const f of tree.files) {
    const text = Buffer.from(f.bytes).toString('utf8');
    if (mode === 'yaml') {
      for (const d of parseAllDocuments(text)) {
        d.toJS();
        docs++;
      }
    } else {
      docs += jsyaml.loadAll(text).length;
    }
  }
  extra = { docs };
}
console.log(JSON.stringify({ ms: performance.now() - start, maxRssMB: maxRssMB(), ...extra }));
