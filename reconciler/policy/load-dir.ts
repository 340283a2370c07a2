/**
 * Reads a policy tree from the local file system: YAML files under <repo>/<path>, recursively, sorted, and the
 * root `riptides.config.yaml`. Every file goes through one guarded reader (`readRepoFile`).
 */
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readSync,
  realpathSync,
  statSync,
} from 'node:fs';
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

/** The policy path cannot be read at all (missing, outside the repository, an unreadable configuration). */
export class PolicyPathError extends Error {}

export function isPolicyFileName(name: string): boolean {
  return (name.endsWith('.yaml') || name.endsWith('.yml')) && name !== CONFIG_FILE;
}

function inside(root: string, target: string): boolean {
  return target === root || target.startsWith(root + sep);
}

export type RepoFileRead = { bytes: Buffer } | { diagnostic: PendingDiagnostic } | { missing: true };

/**
 * The one way a file of a repository on disk is read. `full` is the path as found in the tree, `shown` its
 * repository-relative name for messages. In order:
 *  - a symlink is resolved and must stay inside `root` (RT005; where it points is not read, nor echoed);
 *  - the file is opened without following a last-moment symlink and without blocking (O_NOFOLLOW |
 *    O_NONBLOCK), so a FIFO cannot hang the reader;
 *  - the open file must be a regular file (a FIFO, /dev/zero or a socket is refused: RT007);
 *  - its size must be within `maxBytes` (RT001), and at most `maxBytes` + 1 bytes are ever read, so a file
 *    that grows while it is read is refused too.
 * A file that does not exist is `{ missing: true }`.
 */
export function readRepoFile(root: string, full: string, shown: string, maxBytes: number): RepoFileRead {
  const at = { file: shown, line: 1, column: 1 };
  let real = full;
  let link: boolean;
  try {
    link = lstatSync(full).isSymbolicLink();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { missing: true };
    return { diagnostic: pending('RT007', `cannot read file: ${(err as NodeJS.ErrnoException).code}`, at) };
  }
  if (link) {
    try {
      real = realpathSync(full);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return {
        diagnostic: pending(
          'RT007',
          code === 'ENOENT' ? 'symlink points nowhere' : `cannot follow symlink: ${code}`,
          at,
        ),
      };
    }
  }
  if (!inside(root, real)) {
    return {
      diagnostic: pending('RT005', 'symlink leads outside the repository; it was not followed', {
        ...at,
        hint: 'policy must live in the repository itself; copy the file in instead of linking to it',
      }),
    };
  }
  let fd: number;
  try {
    fd = openSync(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { missing: true };
    const why = code === 'ELOOP' ? 'it became a symlink while being read' : (code ?? (err as Error).message);
    return { diagnostic: pending('RT007', `cannot read file: ${why}`, at) };
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) {
      const what = stats.isFIFO()
        ? 'a FIFO'
        : stats.isCharacterDevice() || stats.isBlockDevice()
          ? 'a device'
          : stats.isSocket()
            ? 'a socket'
            : 'something else';
      return {
        diagnostic: pending('RT007', `it is ${what}, not a regular file; nothing was read`, {
          ...at,
          hint: 'policy files must be regular files committed to the repository',
        }),
      };
    }
    if (stats.size > maxBytes) return { diagnostic: overCap(shown, stats.size, maxBytes) };
    const chunks: Buffer[] = [];
    let length = 0;
    while (length <= maxBytes) {
      // The first read asks for what stat said plus one byte, so a file that grew shows at once.
      const want = Math.min(maxBytes + 1 - length, length === 0 ? stats.size + 1 : 64 * 1024);
      const chunk = Buffer.allocUnsafe(want);
      const n = readSync(fd, chunk, 0, want, null);
      if (n === 0) break;
      chunks.push(chunk.subarray(0, n));
      length += n;
    }
    if (length > maxBytes) return { diagnostic: overCap(shown, length, maxBytes) };
    return { bytes: Buffer.concat(chunks, length) };
  } catch (err) {
    return { diagnostic: pending('RT007', `cannot read file: ${(err as Error).message}`, at) };
  } finally {
    closeSync(fd);
  }
}

function overCap(shown: string, size: number, maxBytes: number): PendingDiagnostic {
  return pending('RT001', `file is ${size} bytes, over the ${maxBytes}-byte cap; nothing in it was read`, {
    file: shown,
    line: 1,
    column: 1,
    hint: 'split it into smaller files, or raise the cap with --max-file-size if it is really policy',
  });
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

  const walk = (dir: string, shownDir: string) => {
    const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const entry of entries) {
      if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
      const full = join(dir, entry.name);
      const shown = `${shownDir}${shownDir ? '/' : ''}${entry.name}`;
      if (entry.isSymbolicLink() || entry.isDirectory()) {
        // Only directories are decided here; files (links included) go to the guarded reader.
        let real: string;
        try {
          real = realpathSync(full);
        } catch {
          if (isPolicyFileName(entry.name))
            tree.diagnostics.push(
              pending('RT007', 'symlink points nowhere', { file: shown, line: 1, column: 1 }),
            );
          continue;
        }
        if (inside(root, real) && statSync(real).isDirectory()) {
          if (visited.has(real)) continue;
          visited.add(real);
          walk(real, shown);
          continue;
        }
        if (!entry.isSymbolicLink()) continue;
      }
      if (!isPolicyFileName(entry.name)) continue;
      const read = readRepoFile(root, full, shown, maxFileBytes);
      if ('bytes' in read) tree.files.push({ path: shown, bytes: read.bytes });
      else if ('diagnostic' in read) tree.diagnostics.push(read.diagnostic);
    }
  };
  walk(realBase, rel(realBase));

  const configShown = rel(join(realBase, CONFIG_FILE));
  const config = readRepoFile(root, join(realBase, CONFIG_FILE), configShown, maxFileBytes);
  if ('diagnostic' in config) {
    // Without its configuration the policy cannot be read as intended: a could-not-run error, not a finding.
    throw new PolicyPathError(`${configShown}: ${config.diagnostic.message}`);
  }
  if ('bytes' in config) tree.config = { path: configShown, text: config.bytes.toString('utf8') };
  return tree;
}
