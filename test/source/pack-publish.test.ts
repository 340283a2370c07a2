/**
 * Processes sharing a remote's cache read objects without its lock (only refs are locked), so a fetch must
 * never show them a pack index being written: an empty or cut .idx makes the objects listed after it "not in
 * the repository". Packs and indexes appear whole, by rename.
 */
import * as fs from 'node:fs';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { openSource } from '../../reconciler/source/index.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { scratch } from './helpers.ts';

describe('a fetch publishes packs whole', () => {
  const tmp = scratch('git-pack-publish');
  let server: GitServer | undefined;
  afterAll(async () => {
    vi.restoreAllMocks();
    await server?.close();
    tmp.cleanup();
  });

  it('never writes a pack or its index in place under objects/pack', async () => {
    const root = join(tmp.dir, 'srv');
    await createBareRepo(root, 'policy');
    server = await startGitServer({ root });
    const work = await WorkClone.create(`${server.url}/policy.git`, join(tmp.dir, 'work'));
    work.write({ 'policies/a.yaml': 'kind: Service\n' });
    await work.commit('a');
    await work.push('HEAD:main');
    const cacheDir = join(tmp.dir, 'cache');
    const written: string[] = [];
    const writeFile = fs.promises.writeFile;
    vi.spyOn(fs.promises, 'writeFile').mockImplementation((path, ...rest) => {
      written.push(String(path));
      return writeFile(path, ...rest);
    });
    const source = await openSource({ repo: `${server.url}/policy.git`, cacheDir });
    await source.fetch();
    const packs = readdirSync(join(cacheDir, 'objects', 'pack'));
    expect(packs.filter((n) => n.endsWith('.idx'))).toHaveLength(1);
    expect(packs.filter((n) => n.endsWith('.pack'))).toHaveLength(1);
    expect(packs.filter((n) => n.endsWith('.tmp'))).toEqual([]);
    expect(written.filter((p) => /objects[\\/]pack[\\/]pack-[0-9a-f]+\.(pack|idx)$/.test(p))).toEqual([]);
    expect(await source.resolveRef('main')).toMatch(/^[0-9a-f]{40}$/);
  });

  it('removes what a fetch killed before its rename left in objects/pack, and reads on', async () => {
    const cacheDir = join(tmp.dir, 'cache');
    const left = join(cacheDir, 'objects', 'pack', `.pack-${'0'.repeat(40)}.pack.0123456789ab.tmp`);
    fs.writeFileSync(left, 'PACK cut short');
    const source = await openSource({ repo: `${server!.url}/policy.git`, cacheDir });
    expect(fs.existsSync(left)).toBe(false);
    await source.fetch();
    expect(await source.resolveRef('main')).toMatch(/^[0-9a-f]{40}$/);
  });
});
