/**
 * Planning what is on disk: `plan --local` plans the working tree (uncommitted and untracked files included),
 * and a plan of the checked-out commit warns when the tree holds changes it does not include. And what a plan
 * prints while it works: one line redrawn on a terminal, a few lines in a CI log.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { capture } from '../support/cli.ts';
import { createBareRepo, git, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { scratch } from '../support/scratch.ts';
import { BASE, edit } from './plan-helpers.ts';

let tmp: ReturnType<typeof scratch>;
let server: GitServer;
let work: WorkClone;

const policy = (files: Record<string, string>) =>
  Object.fromEntries([
    ['policy/riptides.config.yaml', 'trustDomain: example.com\n'],
    ...Object.entries(files).map(([k, v]) => [`policy/${k}`, v]),
  ]);

beforeAll(async () => {
  tmp = scratch('plan-local');
  await createBareRepo(join(tmp.dir, 'srv'), 'policy');
  server = await startGitServer({ root: join(tmp.dir, 'srv') });
  work = await WorkClone.create(`${server.url}/policy.git`, join(tmp.dir, 'work'));
  await work.write(policy(BASE)).commit('base');
  await work.push('main');
  await work.git('checkout', '--quiet', '-b', 'feature');
  await work.write(policy(edit(BASE, 'services.yaml', 'port: 9000', 'port: 9001'))).commit('billing moves');
  await work.push('feature');
});

afterAll(async () => {
  await server?.close();
  tmp?.cleanup();
});

async function plan(args: string[], io: { tty?: boolean; cwd?: string } = {}) {
  const out = capture(io.cwd ?? process.cwd(), {});
  if (io.tty) out.io.stderrTTY = { columns: 100 };
  const code = await main(
    ['plan', '--path', 'policy', '--cache-dir', join(tmp.dir, 'cache', String(Math.random())), ...args],
    out.io,
  );
  return { code, ...out };
}

describe('plan --local: the working tree as head', () => {
  it('plans uncommitted and untracked changes against the base, and says so', async () => {
    work.write({
      'policy/services.yaml': edit(BASE, 'services.yaml', 'port: 9000', 'port: 9002')['services.yaml']!,
      'policy/extra.yaml':
        'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: scratch\nspec:\n  labels:\n    app: scratch\n',
    });
    try {
      const r = await plan(['--repo', work.dir, '--local', '--base', 'main', '--format', 'json']);
      expect(r.code, r.stderr).toBe(1);
      const json = JSON.parse(r.stdout);
      expect(json.head.ref).toBe('working tree');
      expect(json.notes[0]).toMatch(
        /^head is the working tree: [0-9a-f]{8} plus uncommitted changes to policy\/extra\.yaml, policy\/services\.yaml$/,
      );
      const billing = json.resources.find((c: { name: string }) => c.name === 'billing');
      expect(billing.fields).toEqual([{ path: 'spec.addresses[0].port', before: 9000, after: 9002 }]);
      expect(json.resources.find((c: { name: string }) => c.name === 'scratch').change).toBe('created');
      expect(r.stderr).not.toContain('warning:');
    } finally {
      await work.git('checkout', '--quiet', '--', '.');
      await work.git('clean', '--quiet', '-fd');
    }
  });

  it('warns that a plan of the checked-out commit leaves uncommitted changes out, and names them', async () => {
    writeFileSync(
      join(work.dir, 'policy', 'services.yaml'),
      edit(BASE, 'services.yaml', 'port: 9000', 'port: 9003')['services.yaml']!,
    );
    try {
      const dirty = await plan(['--repo', work.dir, '--base', 'main', '--head', 'HEAD', '--format', 'json']);
      expect(dirty.stderr).toMatch(
        /^warning: the working tree has uncommitted changes under policy that this plan of HEAD \([0-9a-f]{8}\) does not include: policy\/services\.yaml; pass --local to plan the working tree$/m,
      );
      // It plans the commit, as asked: 9001, not the 9003 on disk.
      expect(JSON.parse(dirty.stdout).resources[0].fields[0].after).toBe(9001);
      // Another branch than the one checked out is not about the working tree: no warning.
      const other = await plan(['--repo', work.dir, '--base', 'main', '--head', 'main']);
      expect(other.stderr).not.toContain('uncommitted');
    } finally {
      await work.git('checkout', '--quiet', '--', '.');
    }
    const clean = await plan(['--repo', work.dir, '--base', 'main', '--head', 'HEAD']);
    expect(clean.code).toBe(1);
    expect(clean.stderr).not.toContain('uncommitted');
  });

  it('follows the HEAD of a linked worktree, not the main checkout', async () => {
    const linked = join(tmp.dir, 'linked');
    await work.git('worktree', 'add', '--quiet', linked, 'main');
    try {
      writeFileSync(
        join(linked, 'policy', 'services.yaml'),
        edit(BASE, 'services.yaml', 'port: 9000', 'port: 9004')['services.yaml']!,
      );
      const r = await plan(['--repo', linked, '--local', '--base', 'main', '--format', 'json']);
      expect(r.code, r.stderr).toBe(1);
      const json = JSON.parse(r.stdout);
      expect(json.head.commit).toBe(await git(linked, 'rev-parse', 'HEAD'));
      expect(json.resources[0].fields[0]).toMatchObject({ before: 9000, after: 9004 });
    } finally {
      await work.git('worktree', 'remove', '--force', linked);
    }
  });

  it('refuses --local with --head, with a remote, or on a bare repository', async () => {
    const both = await plan(['--repo', work.dir, '--local', '--head', 'main']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--local plans the working tree as head');
    const remote = await plan(['--repo', `${server.url}/policy.git`, '--local']);
    expect(remote.code).toBe(2);
    expect(remote.stderr).toContain('--repo must be a local working copy');
    const bare = await plan(['--repo', join(tmp.dir, 'srv', 'policy.git'), '--local', '--base', 'main']);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain('--local needs a working copy');
  });
});

describe('progress of a cold plan over HTTP', () => {
  it('prints a few step lines in a log, none per percent', async () => {
    const r = await plan(['--repo', `${server.url}/policy.git`, '--base', 'main', '--head', 'feature']);
    expect(r.code).toBe(1);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toEqual([
      expect.stringMatching(/^fetching http:\/\/127\.0\.0\.1:\d+\/policy\.git$/),
      expect.stringMatching(
        /^fetched http:\/\/127\.0\.0\.1:\d+\/policy\.git: [\d.]+ KiB received in \d+ ms$/,
      ),
      expect.stringMatching(/^rendering head feature \([0-9a-f]{8}\)$/),
      expect.stringMatching(/^rendering base main \([0-9a-f]{8}\)$/),
      expect.stringMatching(/^read \d+ blob\(s\); parsed \d+ file\(s\)$/),
    ]);
    expect(r.stderr).not.toContain('\r');
  });

  it('draws one line in place on a terminal, and leaves only the final one', async () => {
    const r = await plan(['--repo', `${server.url}/policy.git`, '--base', 'main', '--head', 'feature'], {
      tty: true,
    });
    expect(r.code).toBe(1);
    // One line feed in all: every step before the last redrew the same line.
    expect(r.stderr.split('\n')).toHaveLength(2);
    expect(r.stderr).toContain('\r\x1b[Kfetching http://127.0.0.1:');
    // The transfer as a bar, not as lines.
    expect(r.stderr).toMatch(/\r\x1b\[Kfetching [^\r]*: Receiving objects \[#{20}\] 100%/);
    expect(r.stderr).toContain('\r\x1b[Krendering head feature');
    // What the terminal shows at the end: the text after the last carriage return.
    expect(r.stderr.split('\r').at(-1)).toMatch(/^\x1b\[Kread \d+ blob\(s\); parsed \d+ file\(s\)\n$/);
    // No frame is wider than the terminal.
    for (const frame of r.stderr.split(/\r\x1b\[K/))
      expect(frame.replace(/\n$/, '').length).toBeLessThan(100);
  });
});
