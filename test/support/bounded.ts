/**
 * Runs riptides-cli in a child process that cannot take the machine down: under `ulimit -v` (address space)
 * and a wall-clock timeout after which its whole process group is killed. For hostile-input tests: a
 * regression shows as a timeout or an out-of-memory death, which the test reports, never as a stuck CI job.
 * The child also reports its peak resident set size, so a test can assert the memory a user would notice.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './shared.ts';

export interface BoundedRun {
  /** Exit status; null when killed. */
  status: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** Peak RSS of the CLI process, in MiB (undefined if it died before reporting). */
  peakRssMiB: number | undefined;
}

export interface BoundedOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Wall clock before the child is killed; default 30 s. */
  timeoutMs?: number;
  /**
   * Address-space limit. Node with tsx needs under 2 GiB of address space before doing anything (with
   * WebAssembly's reservations kept small), so the default (3 GiB) leaves over 1 GiB of room: below the
   * gigabytes the bugs this guards against took.
   */
  virtualMemoryMiB?: number;
}

const child = join(repoRoot, 'test', 'support', 'cli-child.ts');
const PEAK = '\n@@riptides-peak-rss-mib ';

/** riptides-cli ARGS, bounded. */
export function runCliBounded(args: string[], opts: BoundedOptions = {}): Promise<BoundedRun> {
  return runTsBounded(child, args, opts);
}

/** Any TypeScript script, bounded; it may end by printing the peak-RSS line as cli-child.ts does. */
export function runTsBounded(script: string, args: string[], opts: BoundedOptions = {}): Promise<BoundedRun> {
  const kb = (opts.virtualMemoryMiB ?? 3 * 1024) * 1024;
  const proc = spawn(
    'bash',
    [
      '-c',
      `ulimit -v ${kb} && exec "$@"`,
      'bash',
      process.execPath,
      // WebAssembly (tsx's module lexer) otherwise reserves guard pages (10 GiB) and a 4 GiB range per
      // memory; with these the child needs under 2 GiB of address space before it does anything.
      '--disable-wasm-trap-handler',
      '--wasm-max-mem-pages=1024',
      '--import',
      // Resolved here: the child may run in a directory outside this project.
      import.meta.resolve('tsx'),
      script,
      ...args,
    ],
    {
      cwd: opts.cwd ?? repoRoot,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...opts.env },
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => {
    stdout += d.toString('utf8');
  });
  proc.stderr.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }, opts.timeoutMs ?? 30_000);
  return new Promise((resolve) => {
    proc.on('close', (status, signal) => {
      clearTimeout(timer);
      const at = stderr.lastIndexOf(PEAK);
      const peakRssMiB = at >= 0 ? Number(stderr.slice(at + PEAK.length).trim()) : undefined;
      resolve({
        status,
        signal,
        timedOut,
        stdout,
        stderr: at >= 0 ? stderr.slice(0, at + 1) : stderr,
        peakRssMiB,
      });
    });
  });
}
