/**
 * makeDirs / makeDirsSync (kernel-module/control/make-dirs.ts), the one `mkdir -p` of the product: the levels
 * it creates get the mode asked for, existing ones are left alone, and a path that cannot be made fails at
 * once with the reason, including under /proc, where Node's own recursive mkdir loops forever.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeDirs, makeDirsSync } from '../../kernel-module/control/make-dirs.ts';

const dirs: string[] = [];
const scratch = () => {
  const d = mkdtempSync(join(tmpdir(), 'riptides-mkdirs-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const mode = (p: string) => statSync(p).mode & 0o777;

describe.each([
  ['makeDirs', (p: string, m?: number) => makeDirs(p, m)],
  ['makeDirsSync', async (p: string, m?: number) => makeDirsSync(p, m)],
] as const)('%s', (_, make) => {
  it('creates every missing level with the mode asked for, and leaves existing ones alone', async () => {
    const root = scratch();
    const before = mode(root);
    await make(join(root, 'a', 'b', 'c'), 0o700);
    expect([mode(join(root, 'a')), mode(join(root, 'a', 'b')), mode(join(root, 'a', 'b', 'c'))]).toEqual([
      0o700, 0o700, 0o700,
    ]);
    expect(mode(root)).toBe(before);
    // Again: nothing to do, no error.
    await make(join(root, 'a', 'b', 'c'), 0o700);
  });

  it('fails with the reason when a level is a file', async () => {
    const root = scratch();
    writeFileSync(join(root, 'file'), 'x');
    await expect(make(join(root, 'file', 'sub'), 0o700)).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  it('fails at once under /proc, where node:fs would loop forever', async () => {
    await expect(make('/proc/riptides-cache/parsed', 0o700)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
