/** A git working copy holding `policies/support-assistant` under `policies/`, made with the git CLI. */
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { createBareRepo, WorkClone } from './git-fixtures.ts';
import { tempDir } from './scratch.ts';

export async function policyClone(label = 'wc'): Promise<{ clone: WorkClone; root: string; bare: string }> {
  const root = tempDir(label);
  const bare = await createBareRepo(root, 'origin');
  const clone = await WorkClone.create(bare, join(root, 'work'));
  cpSync('policies/support-assistant', join(clone.dir, 'policies'), { recursive: true });
  await clone.commit('support assistant policies');
  return { clone, root, bare };
}
