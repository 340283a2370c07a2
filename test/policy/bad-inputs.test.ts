import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { capture } from '../support/cli.ts';
import { tempDir } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';

const badRoot = join(repoRoot, 'fixtures', 'bad');
const classes = readdirSync(badRoot).sort();

async function render(dir: string, opts: { maxFileBytes?: number } = {}) {
  const tree = loadPolicyDir({ repo: dir, ...opts });
  return renderPolicy(tree.files, { trustDomain: 'example.com', ...opts }, tree.diagnostics);
}

describe('every class of bad input is rejected at the right file, line and column, and nothing compiles', () => {
  it('has a fixture per class', async () => {
    expect(classes.length).toBeGreaterThanOrEqual(30);
  });
  it.each(classes)('%s', async (name) => {
    const dir = join(badRoot, name);
    const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
    const result = await render(dir);
    const errors = result.diagnostics.filter((d) => d.severity === 'error');
    expect(errors.map(({ code, file, line, column }) => ({ code, file, line, column }))).toEqual(expected);
    expect(result.programs).toBeNull();
    for (const d of errors) {
      expect(d.message.length).toBeGreaterThan(10);
    }
  });
});

describe('bad inputs made at test time', () => {
  const policyDir = () => {
    const dir = tempDir('bad');
    writeFileSync(join(dir, 'riptides.config.yaml'), 'trustDomain: example.com\n');
    return dir;
  };

  it('refuses a file over the size cap without reading it, naming the cap', async () => {
    const dir = policyDir();
    writeFileSync(join(dir, 'huge.yaml'), `# ${'x'.repeat(2 * 1024 * 1024)}\n`);
    const result = await render(dir);
    expect(result.diagnostics).toMatchObject([{ code: 'RT001', file: 'huge.yaml', line: 1, column: 1 }]);
    expect(result.diagnostics[0]!.message).toContain('1048576');
    expect(result.programs).toBeNull();
    expect((await render(dir, { maxFileBytes: 4 * 1024 * 1024 })).diagnostics).toEqual([]);
  });

  it('refuses symlinks that leave the repository, and follows those that stay inside', async () => {
    const outside = tempDir('outside');
    writeFileSync(join(outside, 'stolen.yaml'), 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n');
    const dir = policyDir();
    symlinkSync(join(outside, 'stolen.yaml'), join(dir, 'link.yaml'));
    mkdirSync(join(dir, 'real'));
    writeFileSync(
      join(dir, 'real', 'svc.yaml'),
      'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: s\nspec:\n  labels:\n    a: b\n',
    );
    symlinkSync(join(dir, 'real'), join(dir, 'alias'));
    const result = await render(dir);
    expect(result.diagnostics.filter((d) => d.severity === 'error')).toMatchObject([
      { code: 'RT005', file: 'link.yaml', line: 1 },
    ]);
    expect(result.resources.services).toHaveLength(1);
  });

  it('reads a 1 MiB file of ten thousand tiny documents without trouble', async () => {
    const dir = policyDir();
    writeFileSync(join(dir, 'many.yaml'), '---\n{}\n'.repeat(10_000));
    const result = await render(dir);
    // Every document lacks a kind: the first 100 are shown at their own lines, the rest counted.
    expect(result.diagnostics[0]).toMatchObject({
      code: 'RT008',
      file: 'many.yaml',
      line: 1,
      message: expect.stringContaining('9900 more diagnostic(s)'),
    });
    expect(result.diagnostics[1]).toMatchObject({ code: 'RT011', file: 'many.yaml', line: 2 });
    expect(result.diagnostics[2]).toMatchObject({ code: 'RT011', file: 'many.yaml', line: 4 });
  });

  it('refuses an oversized configuration file without reading it', async () => {
    const dir = tempDir('bad');
    writeFileSync(
      join(dir, 'riptides.config.yaml'),
      `trustDomain: example.com\n# ${'x'.repeat(2 * 1024 * 1024)}\n`,
    );
    const out = capture();
    expect(await main(['validate', '--repo', dir], out.io)).toBe(2);
    expect(out.stderr).toMatch(/riptides\.config\.yaml: file is \d+ bytes, over the 1048576-byte cap/);
  });

  it('ignores files that are not YAML', async () => {
    const dir = policyDir();
    writeFileSync(join(dir, 'README.md'), '# not policy: {{{');
    writeFileSync(join(dir, 'data.json'), '{');
    expect((await render(dir)).diagnostics).toEqual([]);
  });
});

describe('the validate command on bad input', () => {
  it('exits 1 with compiler-style text naming file:line:col, code and hint', async () => {
    const out = capture();
    const code = await main(['validate', '--repo', join(badRoot, 'unknown-field')], out.io);
    expect(code).toBe(1);
    expect(out.stdout).toContain('identity.yaml:13:3: error RT020: unknown field "spec.conection"');
    expect(out.stdout).toContain('hint: did you mean "connection"?');
  });

  it('never prints a plaintext Secret value, in any format', async () => {
    const secret = 'FIXTURE-NOT-A-REAL-TOKEN-6f1c';
    for (const format of ['text', 'json', 'github', 'sarif']) {
      const out = capture();
      const code = await main(
        ['validate', '--repo', join(badRoot, 'plaintext-secret'), '--format', format],
        out.io,
      );
      expect(code).toBe(1);
      expect(out.stdout + out.stderr).toContain('RT050');
      expect(out.stdout + out.stderr).not.toContain(secret);
    }
  });

  it('accepts plaintext Secrets only with --allow-plaintext-secrets', async () => {
    const out = capture();
    expect(
      await main(
        ['validate', '--repo', join(badRoot, 'plaintext-secret'), '--allow-plaintext-secrets'],
        out.io,
      ),
    ).toBe(0);
  });
});
