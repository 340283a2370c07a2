/**
 * riptides-cli as a long-running process (reconciler, agent) for end-to-end tests: its stderr is kept line by
 * line (JSON logs), waits are bounded, and every process is killed when the test ends.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';
import { repoRoot } from './shared.ts';

export const BIN = join(repoRoot, 'bin', 'riptides-cli.mjs');

export interface CliProcess {
  child: ChildProcess;
  /** Everything it wrote to stderr and stdout so far. */
  output(): string;
  /** JSON log lines parsed so far. */
  logs(): Array<Record<string, unknown>>;
  /** Resolves when a log line satisfies `pred`; rejects after `ms`. */
  waitForLog(
    pred: (l: Record<string, unknown>) => boolean,
    ms?: number,
    what?: string,
  ): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Every process a test started, so that the whole test run can check nothing leaked a value. */
export const allOutput: string[] = [];

/**
 * Starts riptides-cli. It is killed when the current test finishes, or, with `keep` (processes a file's
 * beforeAll starts for several tests), when the caller stops it.
 */
export function startCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  opts: { keep?: boolean } = {},
): CliProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const entry = allOutput.push('') - 1;
  const listeners = new Set<() => void>();
  const onData = (b: Buffer) => {
    text += b.toString('utf8');
    allOutput[entry] = text;
    for (const l of [...listeners]) l();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const logs = () =>
    text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
  const proc: CliProcess = {
    child,
    output: () => text,
    logs,
    waitForLog: (pred, ms = 20_000, what = 'log line') =>
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = logs().find(pred);
          if (hit) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve(hit);
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`timed out after ${ms} ms waiting for ${what}; output:\n${text.slice(-3000)}`));
        }, ms);
        listeners.add(check);
        check();
      }),
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  if (!opts.keep)
    onTestFinished(async () => {
      await proc.stop('SIGKILL');
    });
  return proc;
}

/** Runs riptides-cli to completion. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [BIN, ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
}

/** Polls an async probe until it returns a value other than undefined/false; rejects after `ms`. */
export async function eventually<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  ms = 20_000,
  what = 'condition',
): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end)
      throw new Error(
        `timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}
