/**
 * The daemon registry (reconciler/agents/registry.ts): an eviction holds against the writes that were under
 * way when it happened, and a new join of the same ID lifts it.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type DaemonRecord, DaemonRegistry, daemonRecordFile } from '../../reconciler/agents/registry.ts';

const dir = mkdtempSync(join(tmpdir(), 'riptides-registry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const record = (daemonId: string, serial: string): DaemonRecord => ({
  daemonId,
  spiffeId: `spiffe://example.org/riptides/daemon/${daemonId}`,
  daemonGroup: 'g',
  joinedAt: '2026-12-01T00:00:00Z',
  tokenId: '00000000',
  svidSerials: [serial],
});

describe('an evicted daemon', () => {
  it('is not brought back by a renewal recorded after the eviction, nor by a restart; a new join brings it back', async () => {
    const registry = await DaemonRegistry.open(join(dir, 'daemons'));
    await registry.add(record('n1', 'aa'));
    expect(registry.get('n1')?.svidSerials).toEqual(['aa']);
    await registry.addSerial('n1', 'bb');
    expect(registry.get('n1')?.svidSerials).toEqual(['bb', 'aa']);

    await registry.add(record('n2', 'ee'));
    const file = daemonRecordFile(join(dir, 'daemons'), 'n1');
    const text = readFileSync(file, 'utf8');
    // A second view of the registry that has not swept yet (a renewal finishing in it).
    const unswept = await DaemonRegistry.open(join(dir, 'daemons'));

    expect(await DaemonRegistry.evict(join(dir, 'daemons'), 'n1')).toMatchObject({ daemonId: 'n1' });
    expect(await DaemonRegistry.evict(join(dir, 'daemons'), 'n2')).toMatchObject({ daemonId: 'n2' });
    // A renewal that was under way lands its write after the eviction: n1 is evicted all the same.
    writeFileSync(file, text);
    expect(registry.sweep().map((d) => d.daemonId)).toEqual(['n1', 'n2']);
    expect(registry.get('n1')).toBeUndefined();
    // One that is recorded after it writes nothing back.
    await unswept.addSerial('n2', 'ff');
    expect(existsSync(daemonRecordFile(join(dir, 'daemons'), 'n2'))).toBe(false);
    expect((await DaemonRegistry.open(join(dir, 'daemons'))).get('n1')).toBeUndefined();
    // Evicting it again finds nothing to evict.
    expect(await DaemonRegistry.evict(join(dir, 'daemons'), 'n1')).toBeNull();

    // A new join of the ID registers it again, with only the new SVID.
    await registry.add(record('n1', 'dd'));
    expect(registry.get('n1')?.svidSerials).toEqual(['dd']);
    expect((await DaemonRegistry.open(join(dir, 'daemons'))).get('n1')?.svidSerials).toEqual(['dd']);
    // n2's eviction stands; n1's marker is gone.
    expect(readdirSync(join(dir, 'daemons')).filter((f) => f.endsWith('.evicted'))).toHaveLength(1);
  });
});
