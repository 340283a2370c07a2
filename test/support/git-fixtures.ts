/**
 * Git repositories for tests, made with the git CLI (never with the code under test): bare repos that the
 * test server serves, and work clones in which commits are made and pushed. Everything is async: the git
 * server runs in the test's own process, so a synchronous `git clone` of it would deadlock.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** A git environment that ignores the machine's config and never prompts. */
const GIT_ENV = {
  ...process.env,
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_TERMINAL_PROMPT: '0',
  GIT_AUTHOR_NAME: 'Test Author',
  GIT_AUTHOR_EMAIL: 'author@example.test',
  GIT_COMMITTER_NAME: 'Test Author',
  GIT_COMMITTER_EMAIL: 'author@example.test',
};

export function git(cwd: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('git', args, { cwd, env: GIT_ENV, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`git ${args.join(' ')} in ${cwd} failed: ${stderr || err.message}`));
      else resolve(stdout.trim());
    });
  });
}

/** `<root>/<name>.git`, bare, HEAD on main, accepting pushes over HTTP. */
export async function createBareRepo(root: string, name: string, defaultBranch = 'main'): Promise<string> {
  const path = join(root, `${name}.git`);
  mkdirSync(path, { recursive: true });
  await git(path, 'init', '--quiet', '--bare', '-b', defaultBranch);
  await git(path, 'config', 'http.receivepack', 'true');
  return path;
}

/** A non-bare clone in which a test writes files, commits and pushes to its remote. */
export class WorkClone {
  private constructor(readonly dir: string) {}

  /** Clones `remote` (a bare repo path or an http URL) into `dir`, on branch `branch`. */
  static async create(remote: string, dir: string, branch = 'main'): Promise<WorkClone> {
    mkdirSync(dirname(dir), { recursive: true });
    await git(dirname(dir), 'clone', '--quiet', remote, dir);
    // An empty remote gives a clone with no branch yet; name it so the first commit lands on `branch`.
    await git(dir, 'checkout', '--quiet', '-B', branch);
    return new WorkClone(dir);
  }

  git(...args: string[]): Promise<string> {
    return git(this.dir, ...args);
  }

  /** Writes (string) or deletes (null) files, relative to the work tree. */
  write(files: Record<string, string | null>): this {
    for (const [path, content] of Object.entries(files)) {
      const full = join(this.dir, path);
      if (content === null) rmSync(full);
      else {
        mkdirSync(dirname(full), { recursive: true });
        writeFileSync(full, content);
      }
    }
    return this;
  }

  /** Stages everything and commits; returns the new commit id. */
  async commit(message: string): Promise<string> {
    await this.git('add', '--all');
    await this.git('commit', '--quiet', '--allow-empty', '-m', message);
    return this.git('rev-parse', 'HEAD');
  }

  async push(...refs: string[]): Promise<void> {
    await this.git('push', '--quiet', 'origin', ...(refs.length ? refs : ['HEAD']));
  }
}
