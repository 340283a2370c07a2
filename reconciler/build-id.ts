/**
 * The identity of the code that is running, for keys of anything it leaves on disk (the parse cache, the
 * record of revisions already validated): a SHA-256 over every module of the build and the pinned versions of
 * the dependencies. When run from dist/, the build is dist/'s JavaScript; when run from the sources (tsx), it
 * is the TypeScript under the same folders. Any change to a rule, a schema or the compiler therefore changes
 * the id, and entries written by other code are never read back; no format string needs bumping by hand.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folders whose code ships (tsconfig.build.json's `include`). */
const CODE_DIRS = ['reconciler', 'agent', 'kernel-module'];

let cached: string | undefined;

function listCode(dir: string, ext: string, out: string[]): void {
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) listCode(path, ext, out);
    else if (e.isFile() && e.name.endsWith(ext)) out.push(path);
  }
}

/**
 * Hex SHA-256 of the code under `root` (files ending in `ext` inside reconciler/, agent/, kernel-module/,
 * by relative path and content, in sorted order) and of `dependencies` (package name → pinned version).
 */
export function computeBuildId(
  root: string,
  ext: '.js' | '.ts',
  dependencies: Record<string, string>,
): string {
  const files: string[] = [];
  for (const d of CODE_DIRS) listCode(join(root, d), ext, files);
  const h = createHash('sha256');
  h.update(JSON.stringify(Object.entries(dependencies).sort(([a], [b]) => (a < b ? -1 : 1))));
  for (const file of files.map((f) => relative(root, f).split(sep).join('/')).sort()) {
    h.update(`\u0000${file}\u0000`);
    h.update(readFileSync(join(root, file)));
  }
  return h.digest('hex');
}

/** The id of the running build (computed once per process, a few milliseconds). */
export function buildId(): string {
  if (cached) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  // This module is <root>/reconciler/build-id.ts, or <root>/dist/reconciler/build-id.js when compiled.
  const codeRoot = dirname(here);
  const compiled = import.meta.url.endsWith('.js');
  let pkgRoot = codeRoot;
  while (!existsSync(join(pkgRoot, 'package.json')) && dirname(pkgRoot) !== pkgRoot)
    pkgRoot = dirname(pkgRoot);
  let dependencies: Record<string, string> = {};
  try {
    dependencies =
      (
        JSON.parse(readFileSync(join(pkgRoot, 'package.json'), 'utf8')) as {
          dependencies?: Record<string, string>;
        }
      ).dependencies ?? {};
  } catch {
    // No package.json: the code alone identifies the build.
  }
  cached = computeBuildId(codeRoot, compiled ? '.js' : '.ts', dependencies);
  return cached;
}
