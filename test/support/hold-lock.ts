/** Another process holding a lock (reconciler/common/file-lock.ts) on a path: what tests of waiting and refusal need. */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';

const CHILD = join(import.meta.dirname, 'lock-holder-child.ts');

/** Spawns a process that takes the lock on `path` (shared or exclusive) and keeps it; resolves once it holds it. */
export async function holdLock(path: string, opts: { shared?: boolean } = {}): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', CHILD, path, ...(opts.shared ? ['shared'] : [])],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (b: Buffer) => b.toString().includes('held') && resolve());
    child.once('exit', (code) => reject(new Error(`the lock holder exited with ${code}`)));
  });
  return child;
}
