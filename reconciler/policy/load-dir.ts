/**
 * Reads a policy tree from the local file system: YAML files under <repo>/<path>, recursively, sorted. Refuses
 * symlinks that leave the repository and files over the size cap before reading them.
 */
import { lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { CONFIG_FILE } from './config.ts';
import { type PendingDiagnostic, pending } from './diagnostics.ts';
import { DEFAULT_MAX_FILE_BYTES, type PolicyFile } from './parse-file.ts';

export interface LoadDirOptions {
  repo: string;
  path?: string;
  maxFileBytes?: number;
}

export interface LoadedTree {
  files: PolicyFile[];
  /** The root configuration file's text, if there is one. */
  config: { path: string; text: string } | null;
  diagnostics: PendingDiagnostic[];
}

export class PolicyPathError extends Error {}

export function isPolicyFileName(name: string): boolean {
  return (name.endsWith('.yaml') || name.endsWith('.yml')) && name !== CONFIG_FILE;
}

function inside(root: string, target: string): boolean {
  return target === root || target.startsWith(root + sep);
}

export function loadPolicyDir(opts: LoadDirOptions): LoadedTree {
  const maxFileBytes = opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  let root: string;
  try {
    root = realpathSync(resolve(opts.repo));
  } catch {
    throw new PolicyPathError(`repository "${opts.repo}" does not exist`);
  }
  const base = resolve(root, opts.path ?? '.');
  let realBase: string;
  try {
    realBase = realpathSync(base);
  } catch {
    throw new PolicyPathError(`path "${opts.path}" does not exist in repository "${opts.repo}"`);
  }
  if (!inside(root, realBase)) throw new PolicyPathError(`path "${opts.path}" leaves the repository`);
  if (!statSync(realBase).isDirectory())
    throw new PolicyPathError(`path "${opts.path ?? '.'}" is not a directory`);

  const tree: LoadedTree = { files: [], config: null, diagnostics: [] };
  const rel = (p: string) => relative(root, p).split(sep).join('/');
  const visited = new Set<string>([realBase]);
  const readFile = (shown: string, real: string, size: number) => {
    if (size > maxFileBytes) {
      tree.diagnostics.push(
        pending('RT001', `file is ${size} bytes, over the ${maxFileBytes}-byte cap; nothing in it was read`, {
          file: shown,
          line: 1,
          column: 1,
          hint: 'split it into smaller files, or raise the cap with --max-file-size if it is really policy',
        }),
      );
      return;
    }
    try {
      tree.files.push({ path: shown, bytes: readFileSync(real) });
    } catch (err) {
      tree.diagnostics.push(
        pending('RT007', `cannot read file: ${(err as Error).message}`, { file: shown, line: 1, column: 1 }),
      );
    }
  };

  const walk = (dir: string, shownDir: string) => {
    const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const entry of entries) {
      if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
      const full = join(dir, entry.name);
      const shown = `${shownDir}${shownDir ? '/' : ''}${entry.name}`;
      let real = full;
      let stats = lstatSync(full);
      if (stats.isSymbolicLink()) {
        try {
          real = realpathSync(full);
        } catch {
          tree.diagnostics.push(
            pending('RT007', 'symlink points nowhere', { file: shown, line: 1, column: 1 }),
          );
          continue;
        }
        if (!inside(root, real)) {
          tree.diagnostics.push(
            pending('RT005', `symlink leads outside the repository (to ${real}); it was not followed`, {
              file: shown,
              line: 1,
              column: 1,
              hint: 'policy must live in the repository itself; copy the file in instead of linking to it',
            }),
          );
          continue;
        }
        stats = statSync(real);
      }
      if (stats.isDirectory()) {
        if (visited.has(real)) continue;
        visited.add(real);
        walk(real, shown);
      } else if (stats.isFile() && isPolicyFileName(entry.name)) {
        readFile(shown, real, stats.size);
      }
    }
  };
  walk(realBase, rel(realBase));
  const configPath = join(realBase, CONFIG_FILE);
  let size: number | undefined;
  try {
    size = statSync(configPath).size;
  } catch {
    return tree;
  }
  if (size > maxFileBytes) {
    throw new PolicyPathError(
      `${rel(configPath)} is ${size} bytes, over the ${maxFileBytes}-byte cap; it holds one line`,
    );
  }
  tree.config = { path: rel(configPath), text: readFileSync(configPath, 'utf8') };
  return tree;
}
