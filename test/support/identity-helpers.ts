import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh directory under os.tmpdir(); call the returned cleanup in afterAll/afterEach. */
export function tempDir(prefix = 'riptides-identity-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Runs the real openssl CLI in a scratch directory holding `files`; returns stdout+stderr and the exit
 * status instead of throwing.
 */
export function openssl(args: string[], files: Record<string, string> = {}) {
  const scratch = tempDir('riptides-openssl-');
  try {
    for (const [name, content] of Object.entries(files)) writeFileSync(join(scratch.dir, name), content);
    const result = spawnSync('openssl', args, { cwd: scratch.dir, encoding: 'utf8', timeout: 10_000 });
    return { status: result.status, out: `${result.stdout}${result.stderr}` };
  } finally {
    scratch.cleanup();
  }
}

/** A clock tests move by hand. */
export function fakeClock(start: Date | string | number) {
  let t = new Date(start).getTime();
  return {
    now: () => new Date(t),
    set: (d: Date | string | number) => {
      t = new Date(d).getTime();
    },
    advance: (ms: number) => {
      t += ms;
    },
  };
}

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
