/** The data plane's flags shared by `agent` and `up` (reconciler/cli/node-flags.ts): the pooled-sessions switch. */
import { parseArgs } from 'node:util';
import { describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { NODE_FLAGS, nodeOptionsFromFlags } from '../../reconciler/cli/node-flags.ts';
import { capture } from '../support/cli.ts';

describe('--no-pooled-sessions', () => {
  const options = (args: string[]) =>
    nodeOptionsFromFlags(parseArgs({ args, options: NODE_FLAGS, strict: true }).values, capture().io);

  it('turns pooled sessions off; without it they are on', async () => {
    expect((await options(['--no-pooled-sessions'])).pooledSessions).toBe(false);
    expect((await options([])).pooledSessions).toBe(true);
  });

  it('is in the help of agent and up', async () => {
    for (const cmd of ['agent', 'up']) {
      const out = capture();
      expect(await main([cmd, '--help'], out.io)).toBe(0);
      expect(out.stdout).toContain('--no-pooled-sessions');
    }
  });
});
