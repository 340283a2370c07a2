/** The command users run: bin/riptides-cli.mjs as shipped (compiled dist/ after `npm ci`, else tsx). */
import { spawnSync } from 'node:child_process';
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
});
