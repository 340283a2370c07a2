/**
 * Bounded reads of the control tree: a file is opened without following a symlink (a hand edit must not point
 * the kernel side at /dev/zero or another file), its size is checked before anything is read, and no more than
 * the cap is ever read even if it grows meanwhile.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { ControlError } from './errors.ts';

/** The file's bytes, or null when it does not exist. */
export async function readCapped(path: string, cap: number): Promise<Buffer | null> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP')
      throw new ControlError(
        'unsafe-path',
        `${path} is a symlink`,
        `remove it; only the writer puts files in the control tree`,
      );
    throw new ControlError(
      'io',
      `cannot open ${path}: ${(err as Error).message}`,
      'check the permissions of the control tree',
    );
  }
  try {
    const st = await handle.stat();
    if (!st.isFile())
      throw new ControlError(
        'unsafe-path',
        `${path} is not a regular file`,
        'remove it; the writer recreates it',
      );
    if (st.size > cap)
      throw new ControlError(
        'too-large',
        `${path} is ${st.size} bytes, over the ${cap}-byte cap`,
        'the writer never writes this much; rewrite it from the agent',
      );
    const buf = Buffer.alloc(Math.min(cap + 1, Math.max(st.size, 0) + 1));
    let total = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buf, total, buf.length - total, total);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total === buf.length) {
        if (total > cap)
          throw new ControlError(
            'too-large',
            `${path} grew over the ${cap}-byte cap while being read`,
            'rewrite it from the agent',
          );
        break;
      }
    }
    return buf.subarray(0, total);
  } finally {
    await handle.close();
  }
}

/** Reads and parses a JSON file; null when it does not exist. */
export async function readJson(path: string, cap: number): Promise<unknown | null> {
  const data = await readCapped(path, cap);
  if (data === null) return null;
  try {
    return JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw new ControlError(
      'invalid',
      `${path} is not JSON: ${(err as Error).message}`,
      'rewrite it from the agent',
    );
  }
}
