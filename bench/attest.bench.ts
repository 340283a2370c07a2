/**
 * Attestation benchmark (`npm run bench -- attest`), all against baselines measured in the same run:
 *  1. /proc: a host with N extra processes (a fifth of them with 1 MB command lines, the hostile shape): the
 *     Attestor's first scan (every process read) and a warm rescan (stat, exec signature, a rolling fifth),
 *     vs `ps -e -o pid,uid,comm,args` (procps reads the same files), vs a bare synchronous and a bare
 *     asynchronous read of every `stat` (why the Attestor reads synchronously);
 *  2. proc events: a fork + exec storm of short-lived processes; the Attestor's CPU time per event vs idle;
 *  3. matching: many identities against many label sets, SelectorIndex vs trying every identity;
 *  4. memory: heap per tracked process.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Attestor } from '../agent/attest/attestor.ts';
import type { Labels } from '../agent/attest/labels.ts';
import {
  type IdentitySelectors,
  matchIdentity,
  type Selector,
  SelectorIndex,
} from '../agent/attest/match.ts';
import { fmt, median } from './lib/measure.ts';

const N = Number(process.env.ATTEST_BENCH_PROCESSES ?? 2000);
const HOSTILE = Math.floor(N / 5);
const IDENTITIES = 1000;
const LABEL_SETS = 5000;
const STORM = 500;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

function countProcs(): number {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).length;
}

async function startProcesses(): Promise<ChildProcess> {
  const before = countProcs();
  // Plain sleeps, and a fifth with eight 128 KB arguments each (~1 MB of argv, the kernel's per-argument cap).
  const big = `$(head -c 131000 /dev/zero | tr '\\0' a)`;
  const script = [
    `i=0; while [ $i -lt ${N - HOSTILE} ]; do sleep 900 & i=$((i+1)); done`,
    // sleep would refuse the arguments: a shell holds them and waits on its sleep (two processes each).
    `b=${big}; i=0; while [ $i -lt ${HOSTILE} ]; do sh -c 'sleep 900; :' $b $b $b $b $b $b $b $b & i=$((i+1)); done`,
    'wait',
  ].join('\n');
  const group = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' });
  // Until all are there (each shell also starts a sleep), for at most a minute.
  for (let i = 0; i < 240 && countProcs() < before + N + HOSTILE; i++)
    await new Promise((r) => setTimeout(r, 250));
  return group;
}

async function procBench(): Promise<void> {
  const group = await startProcesses();
  try {
    const total = countProcs();
    console.log(
      `\n/proc with ${total} processes (${N + HOSTILE} started here; ${HOSTILE} shells hold ~1 MB of argv each)`,
    );
    const sync: number[] = [];
    const asyncReads: number[] = [];
    const ps: number[] = [];
    const psNoArgs: number[] = [];
    const first: number[] = [];
    const warm: number[] = [];
    for (let round = 0; round < 5; round++) {
      let t0 = process.hrtime.bigint();
      for (const p of readdirSync('/proc'))
        if (/^\d+$/.test(p))
          try {
            readFileSync(`/proc/${p}/stat`);
          } catch {}
      sync.push(ms(t0));
      t0 = process.hrtime.bigint();
      await Promise.all(
        readdirSync('/proc')
          .filter((p) => /^\d+$/.test(p))
          .map((p) => readFile(`/proc/${p}/stat`).catch(() => null)),
      );
      asyncReads.push(ms(t0));
      t0 = process.hrtime.bigint();
      execFileSync('ps', ['-e', '-o', 'pid,uid,comm,args'], {
        maxBuffer: 512 * 1024 * 1024,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      ps.push(ms(t0));
      t0 = process.hrtime.bigint();
      execFileSync('ps', ['-e', '-o', 'pid,uid,comm'], { stdio: ['ignore', 'pipe', 'ignore'] });
      psNoArgs.push(ms(t0));
      const a = new Attestor({ kube: null, events: 'off', rescanIntervalMs: 3_600_000 });
      a.setIdentities([{ spiffeId: 'spiffe://bench/sleep', selectors: [{ 'process:name': ['sleep'] }] }]);
      t0 = process.hrtime.bigint();
      await a.start();
      first.push(ms(t0));
      for (let i = 0; i < 5; i++) {
        t0 = process.hrtime.bigint();
        await a.rescan();
        warm.push(ms(t0));
      }
      if (round === 0)
        console.log(
          `  attested: ${a.snapshot().byIdentity.get('spiffe://bench/sleep')?.length ?? 0} sleep processes`,
        );
      await a.stop();
    }
    const row = (what: string, v: number[]) =>
      console.log(
        `  ${what.padEnd(58)} ${fmt(median(v), 1).padStart(8)} ms  ${fmt((median(v) * 1000) / total, 1).padStart(6)} µs/process`,
      );
    row('Attestor first scan (everything read)', first);
    row('Attestor rescan (stat + exec signature + rolling fifth)', warm);
    row('baseline: ps -e -o pid,uid,comm,args (reads every argv whole)', ps);
    row('baseline: ps -e -o pid,uid,comm', psNoArgs);
    row('baseline: bare readFileSync of every stat', sync);
    row('baseline: bare async readFile of every stat (thread pool)', asyncReads);
    console.log(
      `  first scan / ps with args: ${fmt(median(first) / median(ps), 2)}×; rescan / ps without args: ${fmt(median(warm) / median(psNoArgs), 2)}×`,
    );

    // Memory per tracked process.
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const a = new Attestor({ kube: null, events: 'off', rescanIntervalMs: 3_600_000 });
    a.setIdentities([{ spiffeId: 'spiffe://bench/sleep', selectors: [{ 'process:name': ['sleep'] }] }]);
    await a.start();
    gc();
    const heap1 = process.memoryUsage().heapUsed;
    console.log(
      `  heap per tracked process: ${fmt((heap1 - heap0) / total / 1024, 2)} KiB (${fmt((heap1 - heap0) / 1048576, 1)} MB for ${total}; cmdlines cut at 4 KiB)`,
    );
    await a.stop();
  } finally {
    try {
      process.kill(-group.pid!, 'SIGKILL');
    } catch {}
  }
}

async function eventsBench(): Promise<void> {
  const a = new Attestor({ kube: null, events: 'auto' });
  a.setIdentities([{ spiffeId: 'spiffe://bench/true', selectors: [{ 'process:name': ['true'] }] }]);
  await a.start();
  if (a.eventSource !== 'proc-connector') {
    console.log('\nproc events: not available on this host (needs root / CAP_NET_ADMIN); skipped');
    await a.stop();
    return;
  }
  const idleT0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, 2000));
  const idle = process.cpuUsage(idleT0);
  const t0 = process.cpuUsage();
  const wall = process.hrtime.bigint();
  execFileSync('/bin/sh', ['-c', `i=0; while [ $i -lt ${STORM} ]; do /bin/true; i=$((i+1)); done`]);
  await new Promise((r) => setTimeout(r, 300)); // the last drain
  const used = process.cpuUsage(t0);
  const cpuMs = (used.user + used.system) / 1000;
  const idleMs = (idle.user + idle.system) / 1000;
  console.log(`\nproc events (${STORM} fork + exec + exit of /bin/true in ${fmt(ms(wall), 0)} ms)`);
  console.log(
    `  Attestor CPU during the storm: ${fmt(cpuMs, 1)} ms = ${fmt((cpuMs * 1000) / STORM, 1)} µs per process lifetime`,
  );
  console.log(`  baseline: Attestor CPU idle, 2 s of 50 ms drains: ${fmt(idleMs, 1)} ms`);
  await a.stop();
}

function matchBench(): void {
  const names = Array.from({ length: 300 }, (_, i) => `svc${i}`);
  const identities: IdentitySelectors[] = Array.from({ length: IDENTITIES }, (_, i) => ({
    spiffeId: `spiffe://bench/w${i}`,
    selectors: <Selector[]>[
      { 'process:name': [names[i % names.length]!], 'k8s:label:app': [`app${i}`] },
      {
        'k8s:pod:namespace': [`ns${i % 50}`],
        'k8s:label:app': [`app${i}`],
        'process:uid': [String(1000 + (i % 7))],
      },
      { 'process:cmdline': [`/opt/app${i}/bin/server --port`] },
    ],
  }));
  const labels: Labels[] = Array.from({ length: LABEL_SETS }, (_, j) => ({
    'process:name': [names[j % names.length]!],
    'process:cmdline': [`/opt/app${j % IDENTITIES}/bin/server --port 80${j % 10}`],
    'process:uid': [String(1000 + (j % 7))],
    'k8s:pod:namespace': [`ns${j % 50}`],
    'k8s:label:app': [`app${j % (IDENTITIES * 2)}`],
  }));
  const timeIt = (f: () => number) => {
    const runs: number[] = [];
    let found = 0;
    for (let r = 0; r < 5; r++) {
      const t0 = process.hrtime.bigint();
      found = f();
      runs.push(ms(t0));
    }
    return { ms: median(runs), found };
  };
  const build = timeIt(() => new SelectorIndex(identities).size);
  const index = new SelectorIndex(identities);
  const indexed = timeIt(() => labels.reduce((n, l) => n + index.match(l).length, 0));
  const naive = timeIt(() =>
    labels.reduce((n, l) => n + identities.filter((id) => matchIdentity(l, id) !== null).length, 0),
  );
  if (indexed.found !== naive.found) throw new Error(`index found ${indexed.found}, naive ${naive.found}`);
  console.log(
    `\nmatching ${IDENTITIES} identities (${IDENTITIES * 3} selector maps) against ${LABEL_SETS} processes (${indexed.found} matches)`,
  );
  console.log(
    `  SelectorIndex: build ${fmt(build.ms, 1)} ms, match ${fmt(indexed.ms, 1)} ms (${fmt((indexed.ms * 1000) / LABEL_SETS, 1)} µs/process)`,
  );
  console.log(
    `  baseline, every identity tried: ${fmt(naive.ms, 1)} ms (${fmt(naive.ms / indexed.ms, 0)}× slower)`,
  );
}

await procBench();
await eventsBench();
matchBench();
