/**
 * Hostile repositories: shapes a pull request controls that once made validation hang, crash or run for
 * minutes. The CLI cases run in a child under `ulimit -v` and a timeout (support/bounded.ts); the speed of
 * the same shapes is measured in bench/policy.bench.ts, never timed here.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMPARISON_BUDGET } from '../../reconciler/policy/claims.ts';
import { MAX_MESSAGE_CHARS } from '../../reconciler/policy/diagnostics.ts';
import { loadPolicyDir, PolicyPathError } from '../../reconciler/policy/load-dir.ts';
import { MAX_DIAGNOSTICS_PER_FILE, renderPolicy } from '../../reconciler/policy/render.ts';
import { runCliBounded } from '../support/bounded.ts';
import { tempDir } from '../support/scratch.ts';

const TD = 'example.com';

function repo(files: Record<string, string> = {}): string {
  const dir = tempDir('hostile');
  writeFileSync(join(dir, 'riptides.config.yaml'), `trustDomain: ${TD}\n`);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

const identity = (i: number, selector: string) => `apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: w-${i}
spec:
  workloadID: apps/w-${i}
  scope:
    daemonGroup:
      id: g
  selectors:
    - ${selector}
`;

describe('one file of 80,000 documents (480 KB of "---\\n1\\n")', () => {
  const text = '---\n1\n'.repeat(80_000);

  it('shows the first diagnostics at their own lines and says how many were left out', () => {
    const result = renderPolicy([{ path: 'many.yaml', bytes: Buffer.from(text) }], { trustDomain: TD });
    expect(result.diagnostics).toHaveLength(MAX_DIAGNOSTICS_PER_FILE + 1);
    expect(result.diagnostics[0]).toMatchObject({
      code: 'RT008',
      severity: 'error',
      file: 'many.yaml',
      line: 1,
      message: `${80_000 - MAX_DIAGNOSTICS_PER_FILE} more diagnostic(s) in this file were left out (${80_000 - MAX_DIAGNOSTICS_PER_FILE} error(s), 0 warning(s)); only the first ${MAX_DIAGNOSTICS_PER_FILE} are shown`,
    });
    // Document n starts on line 2n: each position is its own, not the file's first.
    expect(result.diagnostics.slice(1, 4).map((d) => [d.code, d.line, d.column])).toEqual([
      ['RT006', 2, 1],
      ['RT006', 4, 1],
      ['RT006', 6, 1],
    ]);
    expect(result.diagnostics.at(-1)).toMatchObject({ code: 'RT006', line: 2 * MAX_DIAGNOSTICS_PER_FILE });
    expect(result.programs).toBeNull();
  });

  it('keeps errors over warnings when it has to leave some out', () => {
    // 150 warnings (status in git) first, then 150 errors: every error shown fits before any warning.
    const docs = [
      ...Array.from(
        { length: 150 },
        (_, i) =>
          `apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: s-${i}\nspec:\n  labels:\n    a: b\nstatus: {}\n`,
      ),
      ...Array.from({ length: 150 }, () => '1\n'),
    ];
    const result = renderPolicy([{ path: 'mixed.yaml', bytes: Buffer.from(docs.join('---\n')) }], {
      trustDomain: TD,
    });
    const shown = result.diagnostics.filter((d) => d.code !== 'RT008');
    expect(shown.filter((d) => d.severity === 'error')).toHaveLength(MAX_DIAGNOSTICS_PER_FILE);
    expect(result.diagnostics.find((d) => d.code === 'RT008')).toMatchObject({
      severity: 'error',
      message: expect.stringContaining('(50 error(s), 150 warning(s))'),
    });
  });

  it('validate finishes with exit 1 and the RT008 line, within bounds', async () => {
    const dir = repo({ 'many.yaml': text });
    const run = await runCliBounded(['validate', '--repo', dir]);
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(1);
    expect(run.stdout).toContain(
      `many.yaml:1:1: error RT008: ${80_000 - MAX_DIAGNOSTICS_PER_FILE} more diagnostic(s) in this file were left out`,
    );
    expect(run.stdout).toContain('many.yaml:4:1: error RT006: document 2 is an integer, not a resource map');
    expect(run.stdout.split('\n').length).toBeLessThan(2 * MAX_DIAGNOSTICS_PER_FILE + 10);
  });
});

describe('identities that all claim the same process', () => {
  it('reports each claimed selector once: n − 1 diagnostics for n identities, not n²/2', () => {
    const n = 3000;
    const files = Array.from({ length: n / 100 }, (_, f) => ({
      path: `f${String(f).padStart(2, '0')}.yaml`,
      bytes: Buffer.from(
        Array.from({ length: 100 }, (_, k) => identity(f * 100 + k, 'process:name: node')).join('---\n'),
      ),
    }));
    const result = renderPolicy(files, { trustDomain: TD });
    const claims = result.diagnostics.filter((d) => d.code === 'RT047');
    expect(claims).toHaveLength(n - 1);
    expect(claims[0]!.message).toContain('WorkloadIdentity/riptides-system/w-0');
  });

  it('still finds a narrower selector among many distinct ones', () => {
    const docs = Array.from({ length: 500 }, (_, i) =>
      identity(i, `process:name: node\n      k8s:label:app: app-${i}`),
    );
    docs.push(identity(999, 'process:name: node\n      k8s:label:app: app-7\n      k8s:pod:namespace: web'));
    const result = renderPolicy([{ path: 'a.yaml', bytes: Buffer.from(docs.join('---\n')) }], {
      trustDomain: TD,
    });
    const claims = result.diagnostics.filter((d) => d.code === 'RT047');
    expect(claims).toHaveLength(1);
    expect(claims[0]!.message).toContain('that WorkloadIdentity/riptides-system/w-7 claims');
    expect(COMPARISON_BUDGET).toBeGreaterThan(500);
  });
});

describe('every file is read through the guarded reader, riptides.config.yaml too', () => {
  it('refuses a FIFO as configuration instead of hanging', async () => {
    const dir = tempDir('fifo');
    execFileSync('mkfifo', [join(dir, 'riptides.config.yaml')]);
    const run = await runCliBounded(['validate', '--repo', dir], { timeoutMs: 20_000 });
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('riptides.config.yaml: it is a FIFO, not a regular file; nothing was read');
  });

  it('refuses a configuration symlinked to /dev/zero instead of aborting', async () => {
    const dir = tempDir('zero');
    symlinkSync('/dev/zero', join(dir, 'riptides.config.yaml'));
    const run = await runCliBounded(['validate', '--repo', dir]);
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('riptides.config.yaml: symlink leads outside the repository');
  });

  it('refuses a policy file symlinked to /dev/zero, in a subdirectory too', () => {
    const dir = repo();
    mkdirSync(join(dir, 'dev'));
    symlinkSync('/dev/zero', join(dir, 'dev', 'zero.yaml'));
    const tree = loadPolicyDir({ repo: dir });
    expect(tree.files).toEqual([]);
    expect(tree.diagnostics).toMatchObject([{ code: 'RT005', file: 'dev/zero.yaml', line: 1 }]);
  });

  it('does not follow, nor echo, a configuration that links outside the repository', () => {
    const outside = tempDir('outside');
    writeFileSync(join(outside, 'secret.txt'), 'trustDomain: leaked-value-4471.example\n');
    const dir = tempDir('cfg-link');
    symlinkSync(join(outside, 'secret.txt'), join(dir, 'riptides.config.yaml'));
    let error: unknown;
    try {
      loadPolicyDir({ repo: dir });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(PolicyPathError);
    expect((error as Error).message).toBe(
      'riptides.config.yaml: symlink leads outside the repository; it was not followed',
    );
  });

  it('reports a FIFO named like a policy file (RT007) and reads the rest', async () => {
    const dir = repo({ 'ok.yaml': identity(1, 'process:name: a') });
    execFileSync('mkfifo', [join(dir, 'pipe.yaml')]);
    const run = await runCliBounded(['validate', '--repo', dir], { timeoutMs: 20_000 });
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(1);
    expect(run.stdout).toContain(
      'pipe.yaml:1:1: error RT007: it is a FIFO, not a regular file; nothing was read',
    );
    expect(run.stdout).toContain('1 file(s), 1 resource(s)');
  });
});

describe('a committed symlink whose target is longer than any path', () => {
  it('plan reports it at its file (RT005) instead of stopping on a blob id', async () => {
    const dir = tempDir('long-link');
    const git = (...args: string[]) =>
      execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', ...args], {
        cwd: dir,
        encoding: 'utf8',
      }).trim();
    git('init', '--quiet', '-b', 'main');
    writeFileSync(join(dir, 'riptides.config.yaml'), `trustDomain: ${TD}\n`);
    git('add', '--all');
    git('commit', '--quiet', '-m', 'base');
    // git keeps a link's target as its blob; no checkout could create this one, a pushed tree can hold it.
    const target = execFileSync('git', ['hash-object', '-w', '--stdin'], {
      cwd: dir,
      input: 'a'.repeat(5000),
    })
      .toString()
      .trim();
    const tree = execFileSync('git', ['mktree'], {
      cwd: dir,
      input: `${git('ls-tree', 'HEAD')}\n120000 blob ${target}\tlong-link.yaml\n`,
    })
      .toString()
      .trim();
    git('branch', 'feature', git('commit-tree', tree, '-p', 'main', '-m', 'link'));
    const run = await runCliBounded(['plan', '--repo', dir, '--base', 'main', '--head', 'feature'], {
      env: { XDG_CACHE_HOME: join(dir, '.xdg') },
    });
    expect(run.status).toBe(2);
    expect(run.stdout).toContain(
      'long-link.yaml:1:1: error RT005: symlink target is 5000 bytes, longer than any path; it was not followed',
    );
  });
});

describe('a revision whose trees hold what git does not write', () => {
  /** A repository whose branch `odd` adds `entries` (mode, name, object id) to main's root tree, written raw. */
  function oddRepo(entries: (ids: { tree: string; blob: string }) => Array<[string, string, string]>) {
    const dir = tempDir('odd-tree');
    const run = (args: string[], input?: Buffer) =>
      execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { cwd: dir, input })
        .toString()
        .trim();
    run(['init', '--quiet', '-b', 'main']);
    writeFileSync(join(dir, 'riptides.config.yaml'), `trustDomain: ${TD}\n`);
    run(['add', '--all']);
    run(['commit', '--quiet', '-m', 'base']);
    const ids = {
      tree: run(['rev-parse', 'main^{tree}']),
      blob: run(['rev-parse', 'main:riptides.config.yaml']),
    };
    const all: Array<[string, string, string]> = [
      ['100644', 'riptides.config.yaml', ids.blob],
      ...entries(ids),
    ];
    all.sort((a, b) => (a[1] < b[1] ? -1 : 1));
    const raw = Buffer.concat(
      all.map(([mode, name, oid]) =>
        Buffer.concat([Buffer.from(`${mode} ${name}\0`), Buffer.from(oid, 'hex')]),
      ),
    );
    // git mktree checks types and modes; a pushed tree need not have been made by it.
    const tree = run(['hash-object', '-t', 'tree', '--literally', '-w', '--stdin'], raw);
    run(['branch', 'odd', run(['commit-tree', tree, '-p', 'main', '-m', 'odd'])]);
    return dir;
  }

  const plan = (dir: string) =>
    runCliBounded(['plan', '--repo', dir, '--base', 'main', '--head', 'odd'], {
      env: { XDG_CACHE_HOME: join(dir, '.xdg') },
    });

  it('names the fault of an entry mode isomorphic-git does not read (git once wrote 100664), not "internal error"', async () => {
    const dir = oddRepo(({ blob }) => [['100664', 'old-mode.yaml', blob]]);
    const run = await plan(dir);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(
      /riptides-cli plan: .*: revision [0-9a-f]{12}: a git object cannot be read: Unexpected GitTree entry mode: 100664\n {2}hint: git fsck names the object/,
    );
    expect(run.stderr).not.toContain('internal error');
  });

  it('names a file whose object is a tree', async () => {
    const dir = oddRepo(({ tree }) => [['100644', 'not-a-file.yaml', tree]]);
    const run = await plan(dir);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(
      /a file listed in the revision \(object ([0-9a-f]{40})\): a git object cannot be read: object \1 is a tree where a blob belongs/,
    );
  });
});

describe('a value of 900 KB where a short one belongs', () => {
  it('is quoted in its diagnostic cut to a bounded length, saying how much was left out', () => {
    const kind = `K${'x'.repeat(900_000)}`;
    const result = renderPolicy(
      [
        {
          path: 'big.yaml',
          bytes: Buffer.from(`apiVersion: core.riptides.io/v1alpha1\nkind: ${kind}\nmetadata:\n  name: a\n`),
        },
      ],
      { trustDomain: TD },
    );
    const d = result.diagnostics.find((x) => x.code === 'RT010')!;
    expect(d).toMatchObject({ file: 'big.yaml', line: 2 });
    expect(d.message.length).toBeLessThanOrEqual(MAX_MESSAGE_CHARS + 60);
    expect(d.message).toMatch(/ … \(\d+ characters left out\) … /);
  });
});

describe('a kind named like a property every object has', () => {
  it('is an unknown kind at its line, not a crash of the render', () => {
    for (const kind of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const result = renderPolicy(
        [{ path: 'odd.yaml', bytes: Buffer.from(`kind: ${kind}\nmetadata:\n  name: a\nspec: {}\n`) }],
        { trustDomain: TD },
      );
      expect(result.diagnostics).toEqual([
        expect.objectContaining({
          code: 'RT010',
          file: 'odd.yaml',
          line: 1,
          message: `unknown kind "${kind}"`,
        }),
      ]);
      expect(result.programs).toBeNull();
    }
  });
});

describe('a process selector key named like a property every object has', () => {
  it('is an unknown selector key at its line, not a crash of the claims check', () => {
    for (const key of ['constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
      // `narrow` is compared with `broad` through their shared process:name; `a` and `b` make the key's
      // bucket the larger one, so the comparison walks into the key that `narrow` lacks.
      const text = [
        identity(0, `process:name: node\n      ${key}: x`),
        identity(1, `${key}: x\n      process:uid: 1`),
        identity(2, `${key}: x\n      process:uid: 2`),
        identity(3, 'process:name: node'),
      ].join('---\n');
      const result = renderPolicy([{ path: 'ids.yaml', bytes: Buffer.from(text) }], { trustDomain: TD });
      const unknown = result.diagnostics.filter((d) => d.code === 'RT036');
      expect(unknown.map((d) => [d.line, d.message])).toEqual([
        [12, `unknown selector key "${key}"`],
        [24, `unknown selector key "${key}"`],
        [37, `unknown selector key "${key}"`],
      ]);
      expect(result.programs).toBeNull();
    }
  });
});
