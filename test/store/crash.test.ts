import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { tempDir } from '../support/scratch.ts';
import {
  expectedApplied,
  expectedSerial,
  expectedStatus,
  serialKey,
  stepOfApplied,
  stepOfStatus,
} from './crash-shapes.ts';

const WRITER = join(import.meta.dirname, 'crash-writer.ts');
const KILLS = 24;

/** Starts the writer at step `start`, kills it with SIGKILL after a random number of acknowledged steps. */
function runAndKill(stateDir: string, start: number, killAfterAcks: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', WRITER, stateDir, String(start)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let lastAck = start - 1;
    let killed = false;
    const guard = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`writer made no progress: ${err}`));
    }, 20_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const lines = out.split('\n');
      out = lines.pop()!;
      for (const l of lines) if (l.startsWith('ack ')) lastAck = Number(l.slice(4));
      if (!killed && lastAck - start + 1 >= killAfterAcks) {
        killed = true;
        child.kill('SIGKILL'); // mid-write: the next step's writes are in flight right now
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    // 'close', not 'exit': every ack the writer printed before it died has been read by then.
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      if (signal === 'SIGKILL') resolve(lastAck);
      else reject(new Error(`writer exited ${code}: ${err}`));
    });
  });
}

describe('embedded store under SIGKILL', () => {
  it(`loses no acknowledged write and reads nothing torn, killed ${KILLS} times mid-write`, async () => {
    const stateDir = tempDir('crash');
    // Steps acknowledged by a writer, and steps that may have landed without their ack (cut by the kill).
    const acked: Array<[number, number]> = [];
    const maybe: Array<[number, number]> = [];
    const within = (ranges: Array<[number, number]>, n: number) => ranges.some(([a, b]) => n >= a && n <= b);
    let next = 0;
    for (let round = 0; round < KILLS; round++) {
      // Mostly early kills (during start-up, replay or the first compactions), some after long runs.
      const acks =
        round % 4 === 3 ? 150 + Math.floor(Math.random() * 300) : 1 + Math.floor(Math.random() * 60);
      const lastAck = await runAndKill(stateDir, next, acks);
      expect(lastAck).toBeGreaterThanOrEqual(next);
      acked.push([next, lastAck]);

      const store = await StateStore.open({ stateDir });
      try {
        const keys = [...store.serials.entries()].map(([k]) => Number.parseInt(k, 16));
        const highest = Math.max(lastAck, ...keys);
        if (highest > lastAck) maybe.push([lastAck + 1, highest]);
        // Every acknowledged step is there, exactly as written; its deletion too, once acknowledged.
        for (const [a, b] of acked)
          for (let n = a; n <= b; n++) {
            const got = store.serials.get(serialKey(n));
            const deletedBy = n % 7 === 0 ? n + 7 : -1;
            if (within(acked, deletedBy)) expect(got, `serial ${n} was deleted`).toBeUndefined();
            else if (!within(maybe, deletedBy)) expect(got, `serial ${n}`).toEqual(expectedSerial(n));
          }
        // Whatever else is there (written, not yet acknowledged) is whole, never torn.
        for (const [key, value] of store.serials.entries())
          expect(value).toEqual(expectedSerial(Number.parseInt(key, 16)));
        // The documents hold at least the last acknowledged step that wrote them (steps cut by a kill and
        // skipped afterwards may have written theirs or not).
        const lastAckedMultiple = (k: number) => {
          let best = -1;
          for (const [a, b] of acked) for (let n = a; n <= b; n++) if (n % k === 0) best = Math.max(best, n);
          return best;
        };
        const applied = store.applied.get()!;
        expect(applied).toEqual(expectedApplied(stepOfApplied(applied)));
        expect(stepOfApplied(applied)).toBeGreaterThanOrEqual(lastAckedMultiple(3));
        const status = store.status.get();
        if (lastAckedMultiple(5) >= 0) {
          expect(status).toEqual(expectedStatus(stepOfStatus(status!)));
          expect(stepOfStatus(status!)).toBeGreaterThanOrEqual(lastAckedMultiple(5));
        }
        next = highest + 1;
      } finally {
        await store.close();
      }
      // No temp file of the atomic writer outlives an open.
      expect(readdirSync(join(stateDir, 'store')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    }
  }, 180_000);
});
