import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { capture } from '../support/cli.ts';
import { tempDir } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';

const bad = join(repoRoot, 'fixtures', 'bad');

describe('riptides-cli validate', () => {
  it('exits 0 on the sample repository and says so', async () => {
    const out = capture();
    expect(await main(['validate', '--repo', repoRoot, '--path', 'policies'], out.io)).toBe(0);
    expect(out.stdout).toMatch(/^valid: 0 error\(s\), 0 warning\(s\) in \d+ file\(s\), \d+ resource\(s\)/m);
  });

  it('exits 0 with warnings only, and 1 with errors', async () => {
    const dir = tempDir('cli');
    writeFileSync(
      join(dir, 'svc.yaml'),
      'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: s\nspec:\n  labels:\n    a: b\nstatus:\n  x: 1\n',
    );
    const out = capture();
    expect(await main(['validate', '--repo', dir, '--trust-domain', 'example.com'], out.io)).toBe(0);
    expect(out.stdout).toContain('warning RT052');
    const out2 = capture();
    expect(await main(['validate', '--repo', join(bad, 'wrong-type')], out2.io)).toBe(1);
  });

  it('exits 2 when it cannot run, saying why and what to do: missing repo, unknown flag, bad format, no trust domain', async () => {
    const dir = tempDir('cli');
    const usage = '\nRun `riptides-cli validate --help` for usage.\n';
    for (const [argv, stderr] of [
      [['validate'], `riptides-cli validate: missing required flag --repo${usage}`],
      [['validate', '--repo', repoRoot, '--bogus'], `riptides-cli validate: unknown flag --bogus${usage}`],
      [
        ['validate', '--repo', repoRoot, '--path', 'policies', '--format', 'xml'],
        `riptides-cli validate: --format must be one of text, json, github, sarif (got "xml")${usage}`,
      ],
      [
        ['validate', '--repo', dir],
        'riptides-cli: no trust domain: pass --trust-domain, or write "trustDomain: <name>" into riptides.config.yaml at the root of the policy path\n',
      ],
      [
        ['validate', '--repo', join(dir, 'missing')],
        `riptides-cli: repository "${join(dir, 'missing')}" does not exist\n`,
      ],
    ] as const) {
      const out = capture();
      expect(await main([...argv], out.io), argv.join(' ')).toBe(2);
      // Nothing was validated, so nothing may look like a verdict on stdout.
      expect(out.stdout, argv.join(' ')).toBe('');
      expect(out.stderr, argv.join(' ')).toBe(stderr);
    }
  });

  it('prints JSON with the documented fields', async () => {
    const out = capture();
    await main(['validate', '--repo', join(bad, 'dangling-credential-source'), '--format', 'json'], out.io);
    const json = JSON.parse(out.stdout);
    expect(json.diagnostics[0]).toEqual({
      code: 'RT042',
      severity: 'error',
      message: expect.stringContaining('missing-source'),
      hint: null,
      file: 'binding.yaml',
      line: 20,
      column: 21,
      resource: 'CredentialBinding/riptides-system/b',
    });
  });

  it('prints GitHub annotations with escaped properties', async () => {
    const out = capture();
    await main(['validate', '--repo', join(bad, 'unknown-field'), '--format', 'github'], out.io);
    expect(out.stdout).toBe(
      '::error file=identity.yaml,line=13,col=3,title=RT020 unknown-field::unknown field "spec.conection"%0Adid you mean "connection"?\n',
    );
  });

  it('prints SARIF 2.1.0 with rules and physical locations', async () => {
    const out = capture();
    await main(['validate', '--repo', join(bad, 'duplicate-name'), '--format', 'sarif'], out.io);
    const sarif = JSON.parse(out.stdout);
    expect(sarif.version).toBe('2.1.0');
    const run = sarif.runs[0];
    expect(run.tool.driver.rules).toEqual([expect.objectContaining({ id: 'RT040', name: 'duplicate-name' })]);
    expect(run.results[0]).toMatchObject({
      ruleId: 'RT040',
      level: 'error',
      locations: [
        {
          physicalLocation: { artifactLocation: { uri: 'b.yaml' }, region: { startLine: 4, startColumn: 9 } },
        },
      ],
    });
  });

  it('has --help for every command', async () => {
    for (const cmd of ['validate', 'schema', 'compile']) {
      const out = capture();
      expect(await main([cmd, '--help'], out.io)).toBe(0);
      expect(out.stdout).toContain(`riptides-cli ${cmd}`);
    }
  });
});

describe('riptides-cli schema', () => {
  it('writes a JSON Schema per kind from the zod schemas, strict about unknown fields', async () => {
    const dir = tempDir('schema');
    const out = capture();
    expect(await main(['schema', '--out', dir], out.io)).toBe(0);
    expect(readdirSync(dir).sort()).toEqual([
      'CredentialBinding.json',
      'CredentialSource.json',
      'Secret.json',
      'Service.json',
      'WorkloadCredential.json',
      'WorkloadIdentity.json',
      'riptides.schema.json',
    ]);
    const wid = JSON.parse(readFileSync(join(dir, 'WorkloadIdentity.json'), 'utf8'));
    expect(wid.properties.kind).toMatchObject({ const: 'WorkloadIdentity' });
    expect(wid.additionalProperties).toBe(false);
    const spec = wid.properties.spec;
    expect(Object.keys(spec.properties)).toEqual(
      expect.arrayContaining([
        'workloadID',
        'scope',
        'selectors',
        'connection',
        'allowedSPIFFEIDs',
        'egress',
      ]),
    );
    expect(spec.properties.connection.properties.tls.properties.mode.enum).toEqual([
      'MUTUAL',
      'PERMISSIVE',
      'SIMPLE',
    ]);
    const all = JSON.parse(readFileSync(join(dir, 'riptides.schema.json'), 'utf8'));
    expect(
      all.allOf.map((b: { if: { properties: { kind: { const: string } } } }) => b.if.properties.kind.const),
    ).toEqual(Object.keys(all.definitions));
    expect(all.definitions.WorkloadIdentity).toEqual({ ...wid, $schema: undefined });
  });
});

describe('riptides-cli compile', () => {
  it('prints a summary per node program, and JSON that is stable across runs', async () => {
    const out = capture();
    expect(await main(['compile', '--repo', repoRoot, '--path', 'policies/mtls'], out.io)).toBe(0);
    expect(out.stdout).toContain('spiffe://example.com/myapp/app/backend-api  MUTUAL');
    const a = capture();
    const b = capture();
    await main(['compile', '--repo', repoRoot, '--path', 'policies', '--format', 'json'], a.io);
    await main(['compile', '--repo', repoRoot, '--path', 'policies', '--format', 'json'], b.io);
    expect(a.stdout).toBe(b.stdout);
    expect(JSON.parse(a.stdout).length).toBe(3);
  });

  it('compiles nothing and exits 1 on invalid policy', async () => {
    const out = capture();
    expect(await main(['compile', '--repo', join(bad, 'mutual-to-external')], out.io)).toBe(1);
    expect(out.stdout).toBe('');
    expect(out.stderr).toContain('RT046');
  });
});
