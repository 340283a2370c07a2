/**
 * `npm run bench -- store`: the embedded store's journal (one appended line + a shared fdatasync per write)
 * against the naive shape it replaces (the whole table rewritten atomically on every write, with the project's
 * one atomic writer), for issued serials; then reopening (replay) a store of 10,000 serials and a status
 * of 10,000 resources written whole and then with one entry changed. This is the measured reason the store is a journal and not one JSON file, and
 * why no embedded database is needed at this scale.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../reconciler/common/atomic-file.ts';
import { StateStore } from '../reconciler/store/state-store.ts';
import { expectedSerial, expectedStatus, serialKey } from '../test/store/crash-shapes.ts';
import { fmt, median } from './lib/measure.ts';

const N = 10_000;
const dirs: string[] = [];
const scratch = () => {
  const d = mkdtempSync(join(tmpdir(), 'riptides-bench-store-'));
  dirs.push(d);
  return d;
};

async function journalSequential(n: number): Promise<number> {
  const store = await StateStore.open({ stateDir: scratch() });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await store.serials.put(serialKey(i), expectedSerial(i));
  const ms = performance.now() - t0;
  await store.close();
  return ms;
}

async function journalConcurrent(n: number, batch: number): Promise<number> {
  const store = await StateStore.open({ stateDir: scratch() });
  const t0 = performance.now();
  for (let i = 0; i < n; i += batch)
    await Promise.all(
      Array.from({ length: batch }, (_, k) => store.serials.put(serialKey(i + k), expectedSerial(i + k))),
    );
  const ms = performance.now() - t0;
  await store.close();
  return ms;
}

/** The naive shape: every write rewrites the whole table. Measured over the last `n` writes of a table of `size`. */
async function rewriteWhole(size: number, n: number): Promise<number> {
  const dir = scratch();
  const table: Record<string, unknown> = {};
  for (let i = 0; i < size - n; i++) table[serialKey(i)] = expectedSerial(i);
  const t0 = performance.now();
  for (let i = size - n; i < size; i++) {
    table[serialKey(i)] = expectedSerial(i);
    await writeFileAtomic(join(dir, 'serials.json'), JSON.stringify(table), { mode: 0o600 });
  }
  return performance.now() - t0;
}

async function reopen(): Promise<{ openMs: number; statusWriteMs: number; statusDeltaMs: number }> {
  const stateDir = scratch();
  const store = await StateStore.open({ stateDir });
  await Promise.all(Array.from({ length: N }, (_, i) => store.serials.put(serialKey(i), expectedSerial(i))));
  const big = expectedStatus(1);
  big.resources = Array.from({ length: 10_000 }, (_, i) => ({
    ...expectedStatus(1).resources[0]!,
    name: `svc-${i}`,
  }));
  const w0 = performance.now();
  await store.status.set(big);
  const statusWriteMs = performance.now() - w0;
  // The steady state: the next write, with one resource changed.
  big.resources[4321]!.observedRevision = 'changed';
  const d0 = performance.now();
  await store.status.set(big);
  const statusDeltaMs = performance.now() - d0;
  await store.close();
  const t0 = performance.now();
  const again = await StateStore.open({ stateDir });
  const openMs = performance.now() - t0;
  if (again.serials.size !== N) throw new Error('reopen lost serials');
  await again.close();
  return { openMs, statusWriteMs, statusDeltaMs };
}

const runs = 3;
const seq: number[] = [];
const conc: number[] = [];
const naive: number[] = [];
const opens: number[] = [];
const statusWrites: number[] = [];
const statusDeltas: number[] = [];
for (let r = 0; r < runs; r++) {
  seq.push(await journalSequential(2000));
  conc.push(await journalConcurrent(N, 100));
  naive.push(await rewriteWhole(N, 200));
  const o = await reopen();
  opens.push(o.openMs);
  statusWrites.push(o.statusWriteMs);
  statusDeltas.push(o.statusDeltaMs);
}
const perSeq = median(seq) / 2000;
const perConc = median(conc) / N;
const perNaive = median(naive) / 200;
console.log(`journal, one awaited put at a time (fdatasync each): ${fmt(perSeq * 1000)} µs/put`);
console.log(`journal, 100 puts in flight (group commit):          ${fmt(perConc * 1000)} µs/put`);
console.log(
  `baseline: whole 10,000-entry table rewritten per put: ${fmt(perNaive * 1000)} µs/put (${fmt(perNaive / perSeq, 1)}× the journal's sequential put)`,
);
console.log(`reopen (replay) of 10,000 serials:                   ${fmt(median(opens))} ms`);
console.log(`status of 10,000 resources, first write (every entry): ${fmt(median(statusWrites))} ms`);
console.log(`status of 10,000 resources, next write, one changed:  ${fmt(median(statusDeltas))} ms`);
for (const d of dirs) rmSync(d, { recursive: true, force: true });
