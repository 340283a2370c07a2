/**
 * `npm run bench -- plan`: issue 3's target. A generated 10,000-resource repository (2,000 files, ~8.9 MB)
 * served over loopback by git's own http-backend; `riptides-cli plan` run as shipped (bin/riptides-cli.mjs, a
 * fresh process each time): a cold plan (clone + render both revisions) and warm plans of a new 10-file and a
 * new 1-file change against the cache the cold run left, with wall time, peak RSS and files parsed. Beside it,
 * in the same run: `git clone` by the git CLI from the same URL, and a bare `yaml` / js-yaml parse of the same
 * files (bench/lib/policy-child.ts). Targets: warm plan < 1 s; a 1-file change parses 1 file.
 *
 * Peak RSS is the child's own, from GNU time (`/usr/bin/time -f %M`) when present, else from an `--import`
 * hook that writes process.resourceUsage().maxRSS at exit. Children are spawned asynchronously: the git
 * server lives in this process's event loop. Prints figures only; nothing here is asserted.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { writeLargeRepo } from '../fixtures/generators/large-repo.ts';
import { createBareRepo, WorkClone } from '../test/support/git-fixtures.ts';
import { startGitServer } from '../test/support/git-server.ts';
import { fmt, median, runChild, type Sample, treeSize } from './lib/measure.ts';

const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));
const TEAMS = 2000;
const GROUPS = 20; // writeLargeRepo's default: team i lives in region-(i % 20)/
const CHILD_TIMEOUT_MS = 300_000;
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'bin', 'riptides-cli.mjs');
const POLICY_CHILD = fileURLToPath(new URL('./lib/policy-child.ts', import.meta.url));
const GNU_TIME = '/usr/bin/time';
const haveGnuTime = existsSync(GNU_TIME);
const RSS_HOOK = `data:text/javascript,${encodeURIComponent(
  "import{writeFileSync}from'node:fs';process.on('exit',()=>{const f=process.env.PLAN_BENCH_RSS_FILE;if(f)writeFileSync(f,String(process.resourceUsage().maxRSS))});",
)}`;
/** The git CLI with the machine's config ignored and prompts off, as in test/support/git-fixtures.ts. */
const GIT_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_TERMINAL_PROMPT: '0',
};

interface Run {
  ms: number;
  /** NaN when unknown (no GNU time and not a node child). */
  maxRssMB: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

let rssFiles = 0;

/** Spawns `cmd args` (async, bounded), timing it from here and taking its peak RSS. */
function runMeasured(
  tmp: string,
  cmd: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = GIT_ENV,
): Promise<Run> {
  const rssFile = join(tmp, `rss-${rssFiles++}.txt`);
  let file = cmd;
  let argv = args;
  let childEnv: NodeJS.ProcessEnv = env;
  if (haveGnuTime) {
    file = GNU_TIME;
    argv = ['-f', '%M', '-o', rssFile, cmd, ...args];
  } else if (cmd === process.execPath) {
    argv = ['--import', RSS_HOOK, ...args];
    childEnv = { ...env, PLAN_BENCH_RSS_FILE: rssFile };
  }
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const t0 = performance.now();
    let child: ChildProcess;
    try {
      // Its own process group, so that a timeout ends the measured process too, not only GNU time.
      child = spawn(file, argv, { cwd, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } catch (e) {
      reject(e);
      return;
    }
    const timer = setTimeout(() => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, CHILD_TIMEOUT_MS);
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString('utf8');
      if (signal) {
        reject(
          new Error(
            `${cmd} ${args.join(' ')}: killed by ${signal} (timeout ${CHILD_TIMEOUT_MS} ms?)\n${stderr}`,
          ),
        );
        return;
      }
      let maxRssMB = Number.NaN;
      try {
        // GNU time writes "Command exited with non-zero status N" before the figure when the exit code is not 0.
        const last = readFileSync(rssFile, 'utf8').trim().split('\n').at(-1)!;
        maxRssMB = Number(last) / 1024;
        rmSync(rssFile, { force: true });
      } catch {
        // no figure
      }
      resolve({ ms, maxRssMB, code, stdout: Buffer.concat(out).toString('utf8'), stderr });
    });
  });
}

interface PlanSample extends Sample {
  parsed: number;
  blobs: number;
  fetchMs: number;
  fetched: string;
  resourceChanges: number;
}

async function plan(
  tmp: string,
  url: string,
  base: string,
  head: string,
  cacheDir: string,
): Promise<PlanSample> {
  const args = [CLI, 'plan', '--repo', url, '--path', 'policies', '--base', base, '--head', head];
  args.push('--format', 'json', '--cache-dir', cacheDir);
  const run = await runMeasured(tmp, process.execPath, args, ROOT, process.env);
  // Exit 0: no changes, 1: changes; anything else is a failure here.
  if (run.code !== 0 && run.code !== 1)
    throw new Error(`plan ${base}..${head} exited ${run.code}:\n${run.stderr.slice(-4000)}`);
  const counts = /read (\d+) blob\(s\); parsed (\d+) file\(s\)/.exec(run.stderr);
  if (!counts)
    throw new Error(`plan ${base}..${head}: no "read N blob(s); parsed M file(s)" line:\n${run.stderr}`);
  const fetched = /fetched .*?: (.+) received in (\d+) ms/.exec(run.stderr);
  const json = JSON.parse(run.stdout) as { valid: boolean; resources: unknown[] };
  if (!json.valid) throw new Error(`plan ${base}..${head}: head did not validate`);
  return {
    ms: run.ms,
    maxRssMB: run.maxRssMB,
    blobs: Number(counts[1]),
    parsed: Number(counts[2]),
    fetchMs: fetched ? Number(fetched[2]) : Number.NaN,
    fetched: fetched ? fetched[1]! : '?',
    resourceChanges: json.resources.length,
  };
}

const teamPath = (i: number) => `policies/region-${i % GROUPS}/team-${String(i).padStart(5, '0')}.yaml`;

/** A branch `name` off main in which each listed team's service port is changed to `port`; pushed. */
async function makeBranch(work: WorkClone, name: string, teams: number[], port: number): Promise<void> {
  await work.git('checkout', '--quiet', '-B', name, 'main');
  const files: Record<string, string> = {};
  for (const i of teams) {
    const before = readFileSync(join(work.dir, teamPath(i)), 'utf8');
    const after = before.replace('port: 8443', `port: ${port}`);
    if (after === before) throw new Error(`${teamPath(i)}: no "port: 8443" to change`);
    files[teamPath(i)] = after;
  }
  work.write(files);
  await work.commit(`${name}: ${teams.length} file(s) changed`);
  await work.push(`${name}:${name}`);
  await work.git('checkout', '--quiet', 'main');
}

const range = (n: number, f: (k: number) => number) => Array.from({ length: n }, (_, k) => f(k));
const mb = (n: number) => (Number.isNaN(n) ? '  n/a' : fmt(n).padStart(5));

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'riptides-bench-plan-'));
  const server = await startGitServer({ root: join(tmp, 'srv') });
  try {
    const gen = join(tmp, 'gen');
    writeLargeRepo(gen, { teams: TEAMS, groups: GROUPS });
    const { files, bytes } = treeSize(gen);

    const bare = await createBareRepo(join(tmp, 'srv'), 'policy');
    const work = await WorkClone.create(bare, join(tmp, 'work'));
    cpSync(gen, join(work.dir, 'policies'), { recursive: true });
    writeFileSync(join(work.dir, 'README.md'), 'Generated policy repository for bench/plan.bench.ts\n');
    await work.commit('10,000 resources');
    await work.push('main');
    // Teams are spread over regions; each branch touches its own teams with its own port, so its blobs are new.
    await makeBranch(
      work,
      'change-10',
      range(10, (k) => k * 200),
      10_010,
    );
    await makeBranch(work, 'change-1', [7], 10_001);
    const url = `${server.url}/policy.git`;
    console.log(
      `repository: ${files} files under policies/, ${fmt(bytes / 1e6, 1)} MB, 10,000 resources, served at ${url}`,
    );
    console.log(
      `${RUNS} runs, median; each run: cold plan on an empty cache, then warm plans of new branches on that cache; ` +
        `peak RSS via ${haveGnuTime ? 'GNU time -f %M' : 'an --import hook (resourceUsage().maxRSS)'}`,
    );

    const cold: PlanSample[] = [];
    const warm10: PlanSample[] = [];
    const warm1: PlanSample[] = [];
    const clone: Run[] = [];
    const startup: Run[] = [];
    const yaml: Sample[] = [];
    const jsyaml: Sample[] = [];
    for (let r = 0; r < RUNS; r++) {
      const cacheDir = join(tmp, `cache-${r}`);
      cold.push(await plan(tmp, url, 'main', 'change-10', cacheDir));
      // Pushed only now, so the warm fetch has something new to bring.
      await makeBranch(
        work,
        `change-10b-${r}`,
        range(10, (k) => k * 200 + 10 + r),
        11_000 + r,
      );
      warm10.push(await plan(tmp, url, 'main', `change-10b-${r}`, cacheDir));
      await makeBranch(work, `change-1b-${r}`, [100 + r], 12_000 + r);
      warm1.push(await plan(tmp, url, 'main', `change-1b-${r}`, cacheDir));
      rmSync(cacheDir, { recursive: true, force: true });

      const target = join(tmp, `clone-${r}`);
      const c = await runMeasured(tmp, 'git', ['clone', '--quiet', url, target], tmp);
      if (c.code !== 0) throw new Error(`git clone exited ${c.code}: ${c.stderr}`);
      clone.push(c);
      rmSync(target, { recursive: true, force: true });
      // Node + tsx + CLI module loading alone: the floor under any plan's wall time.
      const s = await runMeasured(tmp, process.execPath, [CLI, 'plan', '--help'], ROOT, process.env);
      if (s.code !== 0) throw new Error(`riptides-cli plan --help exited ${s.code}: ${s.stderr}`);
      startup.push(s);
      // Synchronous, but nothing needs the git server meanwhile.
      yaml.push(runChild(POLICY_CHILD, ['yaml', gen]));
      jsyaml.push(runChild(POLICY_CHILD, ['js-yaml', gen]));
    }

    const med = (list: { ms: number; maxRssMB: number }[]) => ({
      ms: median(list.map((s) => s.ms)),
      rss: median(list.map((s) => s.maxRssMB)),
    });
    const medOf = (list: PlanSample[], key: 'parsed' | 'blobs' | 'fetchMs' | 'resourceChanges') =>
      median(list.map((s) => s[key]));
    const coldM = med(cold);
    const warm10M = med(warm10);
    const warm1M = med(warm1);
    const cloneM = med(clone);
    const startM = med(startup);
    const yamlM = med(yaml);
    const jsyamlM = med(jsyaml);
    const baseline = cloneM.ms + yamlM.ms;
    const baselineJs = cloneM.ms + jsyamlM.ms;

    const header = `${''.padEnd(38)}${'wall ms'.padStart(8)}${'peak RSS MB'.padStart(13)}${'parsed'.padStart(8)}${'blobs'.padStart(7)}${'fetch ms'.padStart(10)}  changes`;
    const planRow = (name: string, m: { ms: number; rss: number }, list: PlanSample[]) =>
      `${name.padEnd(38)}${fmt(m.ms).padStart(8)}${mb(m.rss).padStart(13)}${String(medOf(list, 'parsed')).padStart(8)}${String(medOf(list, 'blobs')).padStart(7)}${fmt(medOf(list, 'fetchMs')).padStart(10)}  ${medOf(list, 'resourceChanges')} resource(s), fetched ${list.at(-1)!.fetched}`;
    const row = (name: string, m: { ms: number; rss: number }, note = '') =>
      `${name.padEnd(38)}${fmt(m.ms).padStart(8)}${mb(m.rss).padStart(13)}${note}`;
    console.log(`
${header}
${planRow('cold plan  main..change-10', coldM, cold)}
${planRow('warm plan  main..change-10b (10 files)', warm10M, warm10)}
${planRow('warm plan  main..change-1b (1 file)', warm1M, warm1)}
${row('riptides-cli plan --help (start-up)', startM)}
${row('git clone (CLI, with checkout)', cloneM, '   (largest git process)')}
${row('yaml parseAllDocuments+toJS', yamlM, '   (in-process time, no start-up)')}
${row('js-yaml loadAll', jsyamlM, '   (in-process time, no start-up)')}

ratios  cold plan / (git clone + yaml parse)      ${fmt(coldM.ms / baseline, 2)}   (js-yaml: ${fmt(coldM.ms / baselineJs, 2)})
        warm 10-file / (git clone + yaml parse)   ${fmt(warm10M.ms / baseline, 2)}   (js-yaml: ${fmt(warm10M.ms / baselineJs, 2)})
        warm 1-file / (git clone + yaml parse)    ${fmt(warm1M.ms / baseline, 2)}   (js-yaml: ${fmt(warm1M.ms / baselineJs, 2)})`);
    const parsed1 = warm1.map((s) => s.parsed);
    console.log(
      `targets: warm plan < 1000 ms → ${warm10M.ms < 1000 ? 'met' : 'NOT met'} (10-file ${fmt(warm10M.ms)} ms, ` +
        `1-file ${fmt(warm1M.ms)} ms); 1-file change parses 1 file → ${parsed1.every((p) => p === 1) ? 'met' : 'NOT met'} ` +
        `(parsed per run: ${parsed1.join(', ')})`,
    );
    console.log(
      `runs (wall ms): cold ${cold.map((s) => fmt(s.ms)).join(' ')}; warm 10-file ${warm10
        .map((s) => fmt(s.ms))
        .join(' ')}; warm 1-file ${warm1.map((s) => fmt(s.ms)).join(' ')}`,
    );
  } finally {
    await server.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
