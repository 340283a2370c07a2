import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { BlobCache, credentialsFromEnv, userCacheDir } from '../../reconciler/source/index.ts';
import { isBranchRef } from '../../reconciler/source/remote.ts';
import { normalizeSubdir } from '../../reconciler/source/tree.ts';
import { capture } from '../support/cli.ts';
import { tempDir } from '../support/scratch.ts';
import { sourceError } from './helpers.ts';

describe('BlobCache', () => {
  it('evicts the least recently used entry past its bound', () => {
    const cache = new BlobCache<number>(2);
    cache.set('a', 1);
    cache.set('b', 2);
    expect(cache.get('a')).toBe(1); // a is now the most recent
    cache.set('c', 3);
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBe(1);
    expect(cache.get('c')).toBe(3);
    expect(cache.size).toBe(2);
    expect(cache.stats()).toEqual({ hits: 3, misses: 1, size: 2 });
  });

  it('loads a missing entry once', async () => {
    const cache = new BlobCache<string>(10);
    let loads = 0;
    const load = (oid: string) => {
      loads++;
      return `parsed ${oid}`;
    };
    expect(await cache.getOrLoad('x', load)).toBe('parsed x');
    expect(await cache.getOrLoad('x', load)).toBe('parsed x');
    expect(loads).toBe(1);
  });

  it('refuses a bound that is not a positive integer', () => {
    expect(() => new BlobCache(0)).toThrow(RangeError);
    expect(() => new BlobCache(1.5)).toThrow(RangeError);
  });
});

describe('credentialsFromEnv', () => {
  const url = 'https://git.example.test/org/policy.git';

  it('prefers a token, then username + password, then the credentials file', () => {
    expect(credentialsFromEnv(url, { RIPTIDES_GIT_TOKEN: 't0k3n', RIPTIDES_GIT_PASSWORD: 'p' })).toEqual({
      token: 't0k3n',
      username: undefined,
    });
    expect(credentialsFromEnv(url, { RIPTIDES_GIT_USERNAME: 'u', RIPTIDES_GIT_PASSWORD: 'p' })).toEqual({
      username: 'u',
      password: 'p',
    });
    expect(credentialsFromEnv(url, {})).toBeUndefined();
  });

  it('names an unreadable credentials file without reading anything else', async () => {
    const file = join('/nonexistent', 'git-credentials');
    const err = await sourceError(
      Promise.resolve().then(() => credentialsFromEnv(url, { RIPTIDES_GIT_CREDENTIALS_FILE: file })),
    );
    expect(err.code).toBe('auth');
    expect(err.message).toContain(file);
    expect(err.message).toContain('ENOENT');
  });
});

describe('normalizeSubdir', () => {
  it('cleans relative paths and refuses ones that escape the repository', () => {
    expect(normalizeSubdir(undefined)).toBe('');
    expect(normalizeSubdir('.')).toBe('');
    expect(normalizeSubdir('./policies//prod/')).toBe('policies/prod');
    expect(normalizeSubdir('/etc')).toBeNull();
    expect(normalizeSubdir('policies/../..')).toBeNull();
    expect(normalizeSubdir('a\\b')).toBeNull();
  });
});

describe('userCacheDir', () => {
  it("lives under the user's own cache directory, 0700, one per repository", () => {
    const home = tempDir('xdg');
    const env = { XDG_CACHE_HOME: home };
    const a = userCacheDir('git', 'https://git.example.com/a.git', env);
    const b = userCacheDir('git', 'https://git.example.com/b.git', env);
    expect(a.startsWith(join(home, 'riptides', 'git'))).toBe(true);
    expect(a).not.toBe(b);
    expect(userCacheDir('git', 'https://git.example.com/a.git', env)).toBe(a);
    expect(statSync(a).mode & 0o777).toBe(0o700);
  });
});

describe('hints name flags that exist', () => {
  it('every riptides-cli flag a git-source message names is a flag of plan (git commands shown are git’s own)', async () => {
    const dir = join(import.meta.dirname, '..', '..', 'reconciler', 'source');
    const named = new Set<string>();
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
      const text = readFileSync(join(dir, file), 'utf8');
      // String and template literals only (comments may mention anything).
      for (const literal of text.matchAll(/'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`/g)) {
        // A git command quoted for the user (`git fetch --unshallow …`) names git's flags, not ours.
        const ours = literal[0]
          .replace(/\\?`git [^`\\]*(?:\\.[^`\\]*)*\\?`/g, '')
          .replace(/git clone [^`]*/g, '');
        for (const flag of ours.matchAll(/--[a-z][a-z-]+/g)) named.add(flag[0]);
      }
    }
    expect([...named].sort()).toEqual([
      '--base',
      '--ca-file',
      '--cache-dir',
      '--max-repo-size',
      '--repo',
      '--timeout',
    ]);
    const help = capture();
    await main(['plan', '--help'], help.io);
    for (const flag of named) expect(help.stdout).toContain(flag);
  });
});

describe('isBranchRef (the remote HEAD a cache may point at)', () => {
  it('takes branch names and refuses what would leave refs/heads or break git', () => {
    for (const ok of [
      'refs/heads/main',
      'refs/heads/feature/x',
      'refs/heads/release-1.2',
      'refs/heads/ünïcode',
    ])
      expect(isBranchRef(ok), ok).toBe(true);
    for (const bad of [
      'refs/heads/',
      'refs/tags/v1',
      'refs/heads/../../../x',
      'refs/heads/a//b',
      'refs/heads/.hidden',
      'refs/heads/a/.b',
      'refs/heads/a.lock',
      'refs/heads/a/',
      'refs/heads/a.',
      'refs/heads/a b',
      'refs/heads/a\nb',
      'refs/heads/a@{1}',
      'refs/heads/a~1',
      'refs/heads/a\\b',
      'HEAD',
    ])
      expect(isBranchRef(bad), bad).toBe(false);
  });
});
