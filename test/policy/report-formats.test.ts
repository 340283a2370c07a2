/** Formats that tools accept: the GitHub annotations summary, SARIF URIs and rules as code scanning reads them. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { CODES } from '../../reconciler/policy/diagnostics.ts';
import { formatSarif } from '../../reconciler/policy/report/diagnostics-report.ts';
import { capture } from '../support/cli.ts';
import { tempDir } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';

const bad = join(repoRoot, 'fixtures', 'bad');

async function validate(...args: string[]) {
  const out = capture();
  const code = await main(['validate', ...args], out.io);
  return { code, ...out };
}

describe('validate --format github', () => {
  it('ends with a summary that counts the diagnostics it printed', async () => {
    const r = await validate('--repo', join(bad, 'unknown-field'), '--format', 'github');
    expect(r.code).toBe(1);
    expect(r.stdout.split('\n').filter(Boolean)).toHaveLength(1);
    expect(r.stderr).toBe('invalid: 1 error(s), 0 warning(s) in 1 file(s), 0 resource(s)\n');
    const clean = await validate('--repo', repoRoot, '--path', 'policies', '--format', 'github');
    expect(clean.code).toBe(0);
    expect(clean.stdout).toBe('');
    expect(clean.stderr).toMatch(
      /^valid: 0 error\(s\), 0 warning\(s\) in \d+ file\(s\), \d+ resource\(s\)\n$/,
    );
  });
});

describe('validate --format sarif', () => {
  it('percent-encodes each segment of artifactLocation.uri (the issue’s file name)', async () => {
    const dir = tempDir('sarif');
    writeFileSync(join(dir, 'riptides.config.yaml'), 'trustDomain: example.com\n');
    mkdirSync(join(dir, 'team a'));
    writeFileSync(
      join(dir, 'team a', 'db#1 100%.yaml'),
      'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: db\nspec:\n  labels:\n    app: db\n  bogus: 1\n',
    );
    const r = await validate('--repo', dir, '--format', 'sarif');
    const uri = JSON.parse(r.stdout).runs[0].results[0].locations[0].physicalLocation.artifactLocation.uri;
    expect(uri).toBe('team%20a/db%231%20100%25.yaml');
  });

  it('gives every rule help text and an absolute helpUri', () => {
    const all = Object.keys(CODES).map((code) => ({
      code,
      severity: CODES[code as keyof typeof CODES].severity,
      message: 'm',
      file: 'f.yaml',
      line: 1,
      column: 1,
    }));
    const rules = JSON.parse(formatSarif(all, '0.1.0')).runs[0].tool.driver.rules;
    expect(rules.map((r: { id: string }) => r.id)).toEqual(Object.keys(CODES).sort());
    for (const rule of rules) {
      expect(rule.help.text.length, rule.id).toBeGreaterThan(30);
      expect(new URL(rule.helpUri).protocol, rule.id).toBe('https:');
    }
  });
});
