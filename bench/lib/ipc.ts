/**
 * A benchmark's helper processes (`bench/lib/*.ts` run with tsx) and the request/answer exchange over their IPC
 * channel: each request carries an id; the answer carries it back (or none, for a helper that answers one at a
 * time). Shared by the agents and drift benchmarks.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** Forks `bench/lib/<script>` under tsx; its stdout and stderr are the benchmark's. */
export function child(script: string, execArgv: string[] = []): ChildProcess {
  return fork(join(here, script), [], {
    execArgv: ['--import', 'tsx', ...execArgv],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

let nextId = 1;

/** Sends `m` with a fresh id and resolves with the answer carrying it (or with no id, not a `ready`). */
export function ask<T>(p: ChildProcess, m: Record<string, unknown>): Promise<T> {
  const id = nextId++;
  return new Promise((resolve) => {
    const on = (r: { id?: number } & Record<string, unknown>) => {
      if (r.id === id || (r.id === undefined && !('ready' in r))) {
        p.off('message', on);
        resolve(r as T);
      }
    };
    p.on('message', on);
    p.send({ ...m, id });
  });
}
