/**
 * Graceful shutdown on SIGTERM (and SIGINT): the steps run in order — stop the triggers and let the running
 * pass end, stop accepting requests and finish those in flight, flush the store, release the state directory —
 * under one overall deadline (default 20 s, inside Kubernetes' 30 s terminationGracePeriodSeconds). Exit 0 when
 * every step finished; exit 2 with a one-line message when the deadline passed or a step failed, or when a second
 * signal asks to stop at once.
 */
import type { Logger } from 'pino';

export interface ShutdownStep {
  name: string;
  run: () => Promise<void>;
}

export interface ShutdownOptions {
  timeoutMs?: number;
  signals?: NodeJS.Signals[];
  logger?: Logger;
  /** Injectable for tests; default process.exit. */
  exit?: (code: number) => void;
}

/** Installs the handlers; returns a function that removes them. */
export function onTermination(steps: readonly ShutdownStep[], opts: ShutdownOptions = {}): () => void {
  const signals = opts.signals ?? ['SIGTERM', 'SIGINT'];
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const timeoutMs = opts.timeoutMs ?? 20_000;
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      opts.logger?.warn({ signal }, 'second signal: stopping now');
      exit(2);
      return;
    }
    stopping = true;
    opts.logger?.info({ signal }, 'shutting down');
    let current = 'start';
    const deadline = setTimeout(() => {
      opts.logger?.error({ step: current, timeoutMs }, 'shutdown deadline passed');
      exit(2);
    }, timeoutMs);
    deadline.unref();
    (async () => {
      for (const step of steps) {
        current = step.name;
        await step.run();
      }
    })().then(
      () => {
        clearTimeout(deadline);
        opts.logger?.info('stopped');
        exit(0);
      },
      (err: unknown) => {
        clearTimeout(deadline);
        opts.logger?.error({ err, step: current }, 'shutdown step failed');
        exit(2);
      },
    );
  };
  for (const s of signals) process.on(s, handler);
  return () => {
    for (const s of signals) process.off(s, handler);
  };
}

/**
 * Runs a long-lived service from start to a signal, with the handlers installed BEFORE `start` runs: a
 * SIGTERM while it is still starting (Kubernetes sends one whenever it likes) waits for the start to settle
 * and then stops what started, instead of the signal's default action killing the process with a Vault lease
 * held or an nftables redirect installed. Resolves with the exit code of onTermination (0, or 2 past the
 * deadline or on a second signal; the process then ends 500 ms later even if handles stay open); rejects with
 * start's error when start fails.
 */
export async function serveUntilSignal<T>(
  name: string,
  start: () => Promise<T>,
  stop: (service: T) => Promise<void>,
  opts: Omit<ShutdownOptions, 'exit'> = {},
): Promise<number> {
  const starting = start();
  let remove = () => {};
  const stopped = new Promise<number>((resolve) => {
    remove = onTermination(
      [
        {
          name,
          run: async () => {
            const service = await starting.catch(() => null);
            if (service !== null) await stop(service);
          },
        },
      ],
      {
        ...opts,
        exit: (code) => {
          remove();
          resolve(code);
          if (code !== 0) setTimeout(() => process.exit(code), 500).unref();
        },
      },
    );
  });
  try {
    await starting;
  } catch (err) {
    remove();
    throw err;
  }
  return stopped;
}
