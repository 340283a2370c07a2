/**
 * A finished command exits even when something left a handle open (runCli, reconciler/cli/main.ts): a
 * reconciler stopped by SIGTERM once lingered for minutes behind DNS lookups of an unreachable Vault queued in
 * libuv's pool. The leftover handle here is an interval that a preloaded module starts and never clears.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

describe('a finished command', () => {
  it('exits with its own code even when a handle stays open', () => {
    const run = (args: string[]) =>
      spawnSync(
        process.execPath,
        [
          '--import',
          'data:text/javascript,setInterval(() => {}, 60_000)',
          join(root, 'bin', 'riptides-cli.mjs'),
          ...args,
        ],
        { encoding: 'utf8', timeout: 20_000 },
      );
    const ok = run(['validate', '--repo', join(root, 'policies', 'quickstart')]);
    expect(ok.signal).toBeNull();
    expect(ok.status).toBe(0);
    // Its exit code is kept: a usage error stays 2.
    const bad = run(['validate', '--no-such-flag']);
    expect(bad.signal).toBeNull();
    expect(bad.status).toBe(2);
  });
});
