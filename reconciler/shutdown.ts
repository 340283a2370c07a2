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
