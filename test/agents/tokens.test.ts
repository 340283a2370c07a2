/**
 * The join token store (reconciler/agents/tokens.ts): a new token never takes the public id of one that is
 * pending or used, so a collision of the 8-hex ids cannot silently replace a token an operator handed out.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { JoinTokenStore } from '../../reconciler/agents/tokens.ts';

const dir = mkdtempSync(join(tmpdir(), 'riptides-tokens-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const PIN = 'ab'.repeat(32);

describe('join token ids', () => {
  it('skip the ids of pending and used tokens', async () => {
    const ids = ['aaaaaaaa', 'aaaaaaaa', 'bbbbbbbb', 'aaaaaaaa', 'bbbbbbbb', 'cccccccc'];
    const store = new JoinTokenStore(join(dir, 'tokens'), Date.now, () => ids.shift()!);
    await store.init();
    const first = await store.create({ pin: PIN, ttlSeconds: 600 });
    const second = await store.create({ pin: PIN, ttlSeconds: 600 });
    expect([first.record.id, second.record.id]).toEqual(['aaaaaaaa', 'bbbbbbbb']);
    // Both still work: the second did not replace the first.
    expect((await store.check(first.token)).daemonId).toBe(first.record.daemonId);
    expect((await store.check(second.token)).daemonId).toBe(second.record.daemonId);
    // Once used, an id is not handed out again either.
    await store.claim(await store.check(first.token));
    const third = await store.create({ pin: PIN, ttlSeconds: 600 });
    expect(third.record.id).toBe('cccccccc');
  });
});
