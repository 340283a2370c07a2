/** A git working copy holding `policies/support-assistant` under `policies/`, made with the git CLI. */
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { createBareRepo, WorkClone } from './git-fixtures.ts';
import { tempDir } from './scratch.ts';

/** In `root` when given (e.g. a scratch dir of a beforeAll), else in a temp dir removed after the test. */
export async function policyClone(
  label = 'wc',
  root = tempDir(label),
): Promise<{ clone: WorkClone; root: string; bare: string }> {
  const bare = await createBareRepo(root, 'origin');
  const clone = await WorkClone.create(bare, join(root, 'work'));
  cpSync('policies/support-assistant', join(clone.dir, 'policies'), { recursive: true });
  await clone.commit('support assistant policies');
  return { clone, root, bare };
}
