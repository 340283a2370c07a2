/** The command users run: bin/riptides-cli.mjs as shipped (compiled dist/ after `npm ci`, else tsx). */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../support/shared.ts';

const bin = join(repoRoot, 'bin', 'riptides-cli.mjs');
const run = (...args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 });

describe('riptides-cli, as installed', () => {
  it('does what `npm start` does: validates and compiles the sample repository', () => {
    const r = run('compile', '--repo', '.', '--path', 'policies');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^3 node program\(s\), 9 identities$/m);
    expect(r.stderr).toBe('');
  });

  it('tells a newcomer at a terminal what to try after `npm start`, and each suggestion runs', async () => {
    const { main } = await import('../../reconciler/cli/main.ts');
    const { capture } = await import('../support/cli.ts');
    const out = capture(repoRoot, {});
    out.io.stderrTTY = { columns: 100 };
    expect(await main(['compile', '--repo', '.', '--path', 'policies'], out.io)).toBe(0);
    const next = out.stderr.split('\n').filter((l) => l.startsWith('  riptides-cli '));
    expect(next.map((l) => l.split(/\s+/)[2])).toEqual(['plan', 'validate', 'reconciler']);
    for (const line of next) expect(line).toContain(' --repo . --path policies ');
    // The validate suggestion, run as printed (its flags up to the description), finds the tree valid.
    const validate = next[1]!
      .trim()
      .split(/\s{2,}/)[0]!
      .split(' ')
      .slice(1);
    const v = capture(repoRoot, {});
    expect(await main(validate, v.io), v.stderr).toBe(0);
    // Not in a log or a pipe: stderr stays quiet there, as the test above checks through the real binary.
  });

  it('lists its commands and exits 2 without one', () => {
    const r = run();
    expect(r.status).toBe(2);
    for (const c of ['validate', 'schema', 'compile', 'plan', 'credentials', 'ca', 'svid', 'jwt', 'bundle'])
      expect(r.stdout).toContain(`  ${c} `);
  });

  it('exits 1 with file:line:col on bad policy', () => {
    const r = run('validate', '--repo', join('fixtures', 'bad', 'unknown-field'));
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('identity.yaml:13:3: error RT020');
  });

  it('a second reconciler on a state directory in use: exit 2 and one line saying why (not a usage hint)', async () => {
    const state = mkdtempSync(join(tmpdir(), 'riptides-bin-lock-'));
    const args = [
      'reconciler',
      '--repo',
      'policies/quickstart',
      '--listen',
      '127.0.0.1:0',
      '--state-dir',
      state,
    ];
    const first = spawn(process.execPath, [bin, ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      let log = '';
      await new Promise<void>((resolve, reject) => {
        first.stderr.on('data', (b: Buffer) => {
          log += b;
          if (log.includes('"serving agents"')) resolve();
        });
        first.on('exit', () => reject(new Error(`the first reconciler exited: ${log}`)));
      });
      const second = run(...args);
      expect(second.status).toBe(2);
      expect(second.stderr).toMatch(
        /^riptides-cli reconciler: state directory is in use by another reconciler \(pid \d+, lock .+\); stop it, or give this one its own --state-dir\n$/,
      );
    } finally {
      first.kill('SIGTERM');
      await new Promise((r) => first.once('exit', r));
      rmSync(state, { recursive: true, force: true });
    }
  });
});
