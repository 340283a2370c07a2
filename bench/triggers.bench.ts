/**
 * `npm run bench -- triggers`: how fast the loop's triggers notice and how little they cost.
 *  - ref watch: from `git update-ref` moving the tracked branch of a local repository to the watch's report
 *    (p50, p95 over 20 moves; target under 2 s), against a bare fs.watch on the same directory in the same run
 *    (the floor the operating system sets);
 *  - webhook: signature verification of a 25 KB push payload against a bare HMAC-SHA256 of it;
 *  - coalescing trigger: cost of one fire() within a burst of 100,000.
 */
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchLocalRef } from '../reconciler/loop/ref-watch.ts';
import { CoalescingTrigger } from '../reconciler/loop/trigger.ts';
import { verifySignature } from '../reconciler/loop/webhook.ts';
import { fmt, median } from './lib/measure.ts';

const MOVES = 20;
const dir = mkdtempSync(join(tmpdir(), 'riptides-bench-triggers-'));
const git = (...args: string[]) =>
  execFileSync('git', args, {
    cwd: dir,
    env: {
      ...process.env,
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_AUTHOR_NAME: 'b',
      GIT_AUTHOR_EMAIL: 'b@x',
      GIT_COMMITTER_NAME: 'b',
      GIT_COMMITTER_EMAIL: 'b@x',
    },
  })
    .toString()
    .trim();
git('init', '-q', '-b', 'main');
writeFileSync(join(dir, 'a.yaml'), 'a: 0\n');
git('add', '.');
git('commit', '-qm', '0');
const tree = git('rev-parse', 'HEAD^{tree}');
const commits = Array.from({ length: 2 * MOVES }, (_, i) => git('commit-tree', tree, '-m', `c${i}`));
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.ceil(xs.length * 0.95) - 1]!;

async function measure(
  label: string,
  start: () => Promise<{ next: () => Promise<void>; close: () => Promise<void> | void }>,
  offset: number,
) {
  const w = await start();
  const times: number[] = [];
  for (let i = 0; i < MOVES; i++) {
    const t0 = performance.now();
    const seen = w.next();
    git('update-ref', 'refs/heads/main', commits[offset + i]!);
    await seen;
    times.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 100)); // let the previous move settle
  }
  await w.close();
  console.log(`${label}: p50 ${fmt(median(times))} ms, p95 ${fmt(p95(times))} ms`);
  return median(times);
}

const waiter = () => {
  let resolve: (() => void) | null = null;
  return {
    fire: () => {
      resolve?.();
      resolve = null;
    },
    next: () => new Promise<void>((r) => (resolve = r)),
  };
};

const raw = await measure(
  'baseline: bare fs.watch on refs/heads',
  async () => {
    const w = waiter();
    const watcher = watch(join(dir, '.git', 'refs', 'heads'), () => w.fire());
    return { next: w.next, close: () => watcher.close() };
  },
  0,
);
const ours = await measure(
  'ref watch (chokidar, re-read of the branch, 50 ms settle)',
  async () => {
    const w = waiter();
    const rw = await watchLocalRef({ repo: dir, branch: 'main', onCommit: () => w.fire() });
    return { next: w.next, close: () => rw.close() };
  },
  MOVES,
);
console.log(`  → ${fmt(ours - raw)} ms over the bare watch; target under 2000 ms`);

const payload = Buffer.from(
  JSON.stringify({
    ref: 'refs/heads/main',
    commits: Array.from({ length: 20 }, (_, i) => ({
      id: `${i}`.repeat(40).slice(0, 40),
      message: 'x'.repeat(1000),
    })),
  }),
);
const secret = 'bench-webhook-secret-0123456789';
const headers = {
  'x-hub-signature-256': `sha256=${createHmac('sha256', secret).update(payload).digest('hex')}`,
};
const N = 20_000;
let t0 = performance.now();
for (let i = 0; i < N; i++) createHmac('sha256', secret).update(payload).digest();
const bare = (performance.now() - t0) / N;
t0 = performance.now();
for (let i = 0; i < N; i++)
  if (!verifySignature('github', headers, payload, secret).ok) throw new Error('bad');
const verify = (performance.now() - t0) / N;
console.log(
  `webhook signature check, ${payload.length} B payload: ${fmt(verify * 1000, 1)} µs (bare HMAC ${fmt(bare * 1000, 1)} µs, ${fmt(verify / bare, 2)}×)`,
);

let passes = 0;
const trigger = new CoalescingTrigger(async () => {
  passes++;
});
t0 = performance.now();
for (let i = 0; i < 100_000; i++) trigger.fire('webhook');
const perFire = (performance.now() - t0) / 100_000;
await trigger.idle();
console.log(`coalescing trigger: ${fmt(perFire * 1e6)} ns per fire; 100,000 fires → ${passes} pass(es)`);
rmSync(dir, { recursive: true, force: true });
