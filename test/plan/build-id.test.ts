/**
 * Caches follow the code: the parse cache and the record of validated revisions are keyed by a hash of the
 * build, so a changed rule re-checks files and revisions it has seen before, with no version to bump by hand.
 * The end-to-end case runs a copy of this project's sources (through tsx, as an edited checkout runs) and
 * edits a rule in the copy between two plans that share one cache directory.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeBuildId } from '../../reconciler/build-id.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { scratch, tempDir } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';
import { H } from './plan-helpers.ts';

describe('build id', () => {
  it('changes when any module or a dependency version changes, and only then', () => {
    const root = tempDir('build-id');
    mkdirSync(join(root, 'reconciler', 'policy'), { recursive: true });
    writeFileSync(join(root, 'reconciler', 'policy', 'rule.ts'), 'export const limit = 253;\n');
    writeFileSync(join(root, 'reconciler', 'notes.md'), 'not code\n');
    const deps = { yaml: '2.9.1' };
    const first = computeBuildId(root, '.ts', deps);
    expect(computeBuildId(root, '.ts', { ...deps })).toBe(first);
    writeFileSync(join(root, 'reconciler', 'notes.md'), 'still not code\n');
    expect(computeBuildId(root, '.ts', deps)).toBe(first);
    expect(computeBuildId(root, '.ts', { yaml: '2.9.2' })).not.toBe(first);
    writeFileSync(join(root, 'reconciler', 'policy', 'rule.ts'), 'export const limit = 63;\n');
    expect(computeBuildId(root, '.ts', deps)).not.toBe(first);
  });
});

const services = (extra = '') => `${H}kind: Service
metadata:
  name: billing-api
spec:
  addresses:
    - address: billing.internal
      port: 9000
  labels:
    app: billing
${extra}`;
const client = `${H}kind: WorkloadIdentity
metadata:
  name: client
spec:
  workloadID: apps/client
  scope:
    daemonGroup:
      id: g
  selectors:
    - process:name: client
  egress:
    - selectors:
        - app: billing
    - selectors:
        - app: ledger
`;
const ledger = `---\n${H}kind: Service\nmetadata:\n  name: ledger\nspec:\n  labels:\n    app: ledger\n`;

let tmp: ReturnType<typeof scratch>;
let project: string;
let work: WorkClone;

beforeAll(async () => {
  tmp = scratch('build-id-e2e');
  // A copy of the product as an edited checkout has it: sources, no dist/, dependencies shared.
  project = join(tmp.dir, 'project');
  for (const part of ['bin', 'reconciler', 'agent', 'kernel-module', 'package.json', 'tsconfig.json'])
    cpSync(join(repoRoot, part), join(project, part), { recursive: true });
  symlinkSync(join(repoRoot, 'node_modules'), join(project, 'node_modules'));
  // Base: the client's second egress rule selects nothing (RT045, a warning). Head adds that Service.
  const bare = await createBareRepo(tmp.dir, 'policy');
  work = await WorkClone.create(bare, join(tmp.dir, 'work'));
  await work
    .write({
      'policy/riptides.config.yaml': 'trustDomain: example.com\n',
      'policy/services.yaml': services(),
      'policy/identities.yaml': client,
    })
    .commit('base');
  await work.git('checkout', '--quiet', '-b', 'head');
  await work.write({ 'policy/services.yaml': services(ledger) }).commit('add the ledger service');
});

afterAll(() => tmp?.cleanup());

function plan() {
  const r = spawnSync(
    process.execPath,
    [
      join(project, 'bin', 'riptides-cli.mjs'),
      'plan',
      '--repo',
      work.dir,
      '--path',
      'policy',
      '--base',
      'main',
      '--head',
      'head',
      '--cache-dir',
      join(tmp.dir, 'cache'),
    ],
    { encoding: 'utf8', timeout: 60_000, env: { ...process.env, XDG_CACHE_HOME: join(tmp.dir, 'xdg') } },
  );
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function editRule(file: string, from: string, to: string) {
  const path = join(project, 'reconciler', file);
  const text = readFileSync(path, 'utf8');
  if (!text.includes(from)) throw new Error(`${file} no longer contains ${from}`);
  writeFileSync(path, text.replace(from, to));
}

describe('a rule change invalidates what the caches hold', () => {
  it('re-checks a base recorded as valid, and re-parses files cached as clean', () => {
    const cold = plan();
    expect(cold.code, cold.stderr).toBe(1);
    expect(cold.stdout).not.toContain('does not validate');
    const warm = plan();
    expect(warm.stderr).toMatch(/parsed 0 file\(s\)/);

    // A cross-resource rule changes: a selector matching no Service becomes an error. The base was recorded
    // as validated clean; with the rule changed it no longer is, and the plan must say so.
    editRule(
      'policy/diagnostics.ts',
      "RT045: { title: 'selector-matches-no-service', severity: 'warning' }",
      "RT045: { title: 'selector-matches-no-service', severity: 'error' }",
    );
    const crossRule = plan();
    expect(crossRule.code, crossRule.stderr).toBe(1);
    expect(crossRule.stdout).toContain('note: base main does not validate itself');

    // A per-file rule changes: names longer than 6 characters are refused. Both files were cached clean.
    editRule(
      'policy/kinds/common.ts',
      ".max(253, { error: 'must be at most 253 characters' })",
      ".max(6, { error: 'must be at most 6 characters' })",
    );
    const fileRule = plan();
    expect(fileRule.code, fileRule.stderr).toBe(2);
    expect(fileRule.stdout).toMatch(
      /policy\/services\.yaml:\d+:\d+: error RT023: .*must be at most 6 characters/,
    );
  });
});
