import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project root (this file lives in test/support/). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** ../shared/ beside the checkout, as on developer machines and in CI. */
export const sharedRoot = (() => {
  const candidates = [join(repoRoot, '..', 'shared')];
  const found = candidates.find((c) => existsSync(join(c, 'vectors')));
  if (!found)
    throw new Error(`../shared/vectors not found beside ${repoRoot}: the test vectors are read in place`);
  return found;
})();

export function vectorPath(...parts: string[]): string {
  return join(sharedRoot, 'vectors', ...parts);
}
