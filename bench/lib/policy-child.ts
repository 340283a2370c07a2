/**
 * One measurement in a fresh process, so peak RSS is its own: `render` (load + validate + compile, the product
 * path), `yaml` (yaml.parseAllDocuments + toJS) or `js-yaml` (loadAll), each over the same files.
 * Arguments: MODE DIR [MAX_FILE_BYTES].
 */
import * as jsyaml from 'js-yaml';
import { parseAllDocuments } from 'yaml';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { maxRssMB } from './measure.ts';

const [mode, dir, max] = process.argv.slice(2) as [string, string, string | undefined];
const maxFileBytes = max ? Number(max) : undefined;
const start = performance.now();
let extra: Record<string, unknown> = {};
const tree = loadPolicyDir({ repo: dir, ...(maxFileBytes ? { maxFileBytes } : {}) });
if (mode === 'render') {
  const result = renderPolicy(
    tree.files,
    { trustDomain: 'bench.example.com', ...(maxFileBytes ? { maxFileBytes } : {}) },
    tree.diagnostics,
  );
  const counts: Record<string, number> = {};
  for (const d of result.diagnostics) counts[d.code] = (counts[d.code] ?? 0) + 1;
  extra = {
    resources: result.stats.resources,
    files: result.stats.files,
    programs: result.programs?.length ?? null,
    diagnostics: counts,
  };
} else {
  // The same file list the product reads, so only the parse path differs.
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
