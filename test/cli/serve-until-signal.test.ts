/**
 * serveUntilSignal (reconciler/shutdown.ts), used by `reconciler` and `agent`: a SIGTERM that arrives while the
 * service is still starting waits for the start and stops what started, exit 0. The signal is delivered with
 * process.emit, which runs the installed handlers without the default action (the test process lives on).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { serveUntilSignal } from '../../reconciler/shutdown.ts';

const deferred = <T>() => {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
};

afterEach(() => {
  expect(process.listenerCount('SIGTERM')).toBe(0);
});

describe('serveUntilSignal', () => {
  it('a SIGTERM during start lets the start finish, then stops that service: exit 0', async () => {
    const start = deferred<{ name: string }>();
    const stopped: string[] = [];
    const code = serveUntilSignal(
      'svc',
      () => start.promise,
      async (s) => {
        stopped.push(s.name);
      },
      { signals: ['SIGTERM'] },
    );
    // Still starting: the handler is already there.
    expect(process.listenerCount('SIGTERM')).toBe(1);
    process.emit('SIGTERM', 'SIGTERM');
    await new Promise((r) => setTimeout(r, 20));
    expect(stopped).toEqual([]);
    start.resolve({ name: 'started' });
    expect(await code).toBe(0);
    expect(stopped).toEqual(['started']);
  });

  it('a SIGTERM after start stops the service; a failed start rejects with its error and removes the handler', async () => {
    const stopped: number[] = [];
    const code = serveUntilSignal(
      'svc',
      async () => 7,
      async (n) => {
        stopped.push(n);
      },
      { signals: ['SIGTERM'] },
    );
    await new Promise((r) => setTimeout(r, 10));
    expect(stopped).toEqual([]);
    process.emit('SIGTERM', 'SIGTERM');
    expect(await code).toBe(0);
    expect(stopped).toEqual([7]);

    const failing = deferred<number>();
    const refused = serveUntilSignal(
      'svc',
      () => failing.promise,
      async () => {},
      { signals: ['SIGTERM'] },
    );
    failing.reject(new Error('port in use'));
    await expect(refused).rejects.toThrow('port in use');
  });
});
