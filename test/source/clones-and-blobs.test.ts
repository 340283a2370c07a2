/**
 * Repositories as CI leaves them (single-branch and shallow clones) and blobs far over the cap, made with
 * the git CLI: plan must not compare head with itself, and must know a blob's size before inflating it.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { ObjectSizes } from '../../reconciler/source/object-size.ts';
import { runCliBounded } from '../support/bounded.ts';
import { capture } from '../support/cli.ts';
import { git } from '../support/git-fixtures.ts';
import { scratch } from './helpers.ts';

const CONFIG = 'trustDomain: example.com\n';
const service = (name: string) =>
  `apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  labels:\n    app: ${name}\n`;

describe('plan without --base in single-branch and shallow clones', () => {
  const tmp = scratch('clones');
  const origin = join(tmp.dir, 'origin');
  const env = { XDG_CACHE_HOME: join(tmp.dir, 'xdg') };

  beforeAll(async () => {
    mkdirSync(origin);
    await git(origin, 'init', '--quiet', '-b', 'main');
    writeFileSync(join(origin, 'riptides.config.yaml'), CONFIG);
    writeFileSync(join(origin, 'a.yaml'), service('a'));
    await git(origin, 'add', '--all');
    await git(origin, 'commit', '--quiet', '-m', 'base');
    await git(origin, 'checkout', '--quiet', '-b', 'feature');
    writeFileSync(join(origin, 'b.yaml'), service('b'));
    await git(origin, 'add', '--all');
    await git(origin, 'commit', '--quiet', '-m', 'add b');
    await git(origin, 'checkout', '--quiet', 'main');
  });
  afterAll(() => tmp.cleanup());

  const plan = async (repo: string, ...args: string[]) => {
    const out = capture(tmp.dir, env);
    const code = await main(['plan', '--repo', repo, ...args], out.io);
    return { code, ...out };
  };

  it('exits 2 and says how to fetch the base, instead of "no changes", for `git clone --depth 1 --branch feature`', async () => {
    const clone = join(tmp.dir, 'shallow');
    await git(tmp.dir, 'clone', '--quiet', '--depth', '1', '--branch', 'feature', `file://${origin}`, clone);
    const byName = await plan(clone, '--head', 'feature');
    expect(byName.code).toBe(2);
    expect(byName.stdout).toBe('');
    expect(byName.stderr).toContain(
      `riptides-cli plan: ${clone}: cannot tell which branch feature merges into: this shallow clone holds only feature, origin/feature`,
    );
    expect(byName.stderr).toContain(
      'hint: fetch the branch it merges into, e.g. `git fetch --unshallow origin main:refs/remotes/origin/main` (in GitHub Actions: actions/checkout with fetch-depth: 0), or pass --base REF',
    );
    // The same by commit id, as CI passes it.
    const sha = await git(clone, 'rev-parse', 'HEAD');
    expect((await plan(clone, '--head', sha)).code).toBe(2);

    // Doing what the hint says makes the plan work, and it sees the change.
    await git(clone, 'fetch', '--quiet', '--unshallow', 'origin', 'main:refs/remotes/origin/main');
    const fixed = await plan(clone, '--head', 'feature');
    expect(fixed.code).toBe(1);
    expect(fixed.stdout).toContain('Service/riptides-system/b');
    expect(fixed.stderr).toContain('rendering base merge-base(origin/main)');
  });

  it('says the history is cut when a shallow clone holds the base branch but not where they meet', async () => {
    const clone = join(tmp.dir, 'both-shallow');
    await git(tmp.dir, 'clone', '--quiet', '--depth', '1', '--no-single-branch', `file://${origin}`, clone);
    await git(clone, 'checkout', '--quiet', 'feature');
    const r = await plan(clone, '--head', 'feature');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('the history of this shallow clone ends before feature and');
    expect(r.stderr).toContain('git fetch --unshallow origin main:refs/remotes/origin/main');
  });

  it('single-branch without being shallow: the same refusal, then --base works', async () => {
    const clone = join(tmp.dir, 'single');
    await git(
      tmp.dir,
      'clone',
      '--quiet',
      '--single-branch',
      '--branch',
      'feature',
      `file://${origin}`,
      clone,
    );
    const r = await plan(clone, '--head', 'feature');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'cannot tell which branch feature merges into: this clone holds only feature, origin/feature',
    );
    const base = await git(origin, 'rev-parse', 'main');
    expect((await plan(clone, '--head', 'feature', '--base', base)).code).toBe(1);
  });

  it('a full clone still finds the merge base with the default branch', async () => {
    const clone = join(tmp.dir, 'full');
    await git(tmp.dir, 'clone', '--quiet', `file://${origin}`, clone);
    await git(clone, 'checkout', '--quiet', 'feature');
    const r = await plan(clone, '--head', 'feature');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('rendering base merge-base(main)');
  });
});

describe('blob sizes from object headers', () => {
  const tmp = scratch('blob-size');
  const repo = join(tmp.dir, 'repo');

  beforeAll(async () => {
    mkdirSync(repo);
    await git(repo, 'init', '--quiet', '-b', 'main');
    const big = 'policy: 1\n'.repeat(20_000);
    writeFileSync(join(repo, 'big.yaml'), big);
    writeFileSync(join(repo, 'small.yaml'), 'a: 1\n');
    await git(repo, 'add', '--all');
    await git(repo, 'commit', '--quiet', '-m', 'one');
    // A second version that git stores as a delta against the first once packed.
    writeFileSync(join(repo, 'big.yaml'), `${big}extra: 2\n`);
    await git(repo, 'add', '--all');
    await git(repo, 'commit', '--quiet', '-m', 'two');
  });
  afterAll(() => tmp.cleanup());

  /** Every object git holds, with the size `git cat-file` reports. */
  const catFile = () =>
    execFileSync('git', ['cat-file', '--batch-all-objects', '--batch-check=%(objectname) %(objectsize)'], {
      cwd: repo,
      encoding: 'utf8',
    })
      .trim()
      .split('\n')
      .map((l) => l.split(' ') as [string, string]);

  it('reads the size of loose objects, and of packed objects and deltas, as git does', async () => {
    const loose = catFile();
    const sizes = new ObjectSizes(join(repo, '.git'));
    for (const [oid, size] of loose) expect(await sizes.size(oid)).toBe(Number(size));

    await git(repo, 'gc', '--quiet', '--aggressive');
    const packed = catFile();
    // The pack does hold a delta (git verify-pack lists its chain), so that path is exercised too.
    const pack = readdirSync(join(repo, '.git', 'objects', 'pack')).find((f) => f.endsWith('.idx'))!;
    const listing = execFileSync('git', ['verify-pack', '-v', join('.git', 'objects', 'pack', pack)], {
      cwd: repo,
      encoding: 'utf8',
    });
    expect(listing).toMatch(/chain length = 1: \d+ object/);
    const fresh = new ObjectSizes(join(repo, '.git'));
    for (const [oid, size] of packed) expect(await fresh.size(oid)).toBe(Number(size));
    expect(await fresh.size('0'.repeat(40))).toBeUndefined();

    // A pack added later (what each fetch does) is read by the same reader, next to the one it read before;
    // and once git replaces both with one pack, the objects are found in that one.
    writeFileSync(join(repo, 'later.yaml'), 'b: 2\n');
    await git(repo, 'add', '--all');
    await git(repo, 'commit', '--quiet', '-m', 'three');
    await git(repo, 'repack', '--quiet', '-d');
    const packs = () => readdirSync(join(repo, '.git', 'objects', 'pack')).filter((f) => f.endsWith('.idx'));
    expect(packs()).toHaveLength(2);
    const later = catFile();
    for (const [oid, size] of later) expect(await fresh.size(oid)).toBe(Number(size));
    await git(repo, 'repack', '--quiet', '-a', '-d');
    expect(packs()).toHaveLength(1);
    for (const [oid, size] of later) expect(await fresh.size(oid)).toBe(Number(size));
  });
});

describe('a blob of 200 MiB of one byte (under 1 MB in git)', () => {
  const tmp = scratch('huge-blob');
  const repo = join(tmp.dir, 'repo');

  beforeAll(async () => {
    mkdirSync(repo);
    await git(repo, 'init', '--quiet', '-b', 'main');
    writeFileSync(join(repo, 'riptides.config.yaml'), CONFIG);
    writeFileSync(join(repo, 'a.yaml'), service('a'));
    await git(repo, 'add', '--all');
    await git(repo, 'commit', '--quiet', '-m', 'base');
    await git(repo, 'checkout', '--quiet', '-b', 'feature');
    writeFileSync(join(repo, 'huge.yaml'), Buffer.alloc(200 * 1024 * 1024, 0x61));
    await git(repo, 'add', '--all');
    await git(repo, 'commit', '--quiet', '-m', 'huge');
  }, 60_000);
  afterAll(() => tmp.cleanup());

  it('is refused as RT001 from its header, without inflating it', async () => {
    const run = await runCliBounded(['plan', '--repo', repo, '--head', 'feature', '--base', 'main'], {
      env: { XDG_CACHE_HOME: join(tmp.dir, 'xdg') },
      timeoutMs: 60_000,
    });
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(2);
    expect(`${run.stdout}${run.stderr}`).toContain(
      'huge.yaml:1:1: error RT001: file is 209715200 bytes, over the 1048576-byte cap; nothing in it was read',
    );
    expect(run.peakRssMiB).toBeLessThan(200);
  });
});
