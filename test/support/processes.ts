/**
 * Real processes for attestation tests: binaries copied under a unique name (so `process:name` and
 * `process:binary:path` are the test's own), children started as another uid with setpriv, children moved into
 * cgroups the test creates on the host's cgroup v2 hierarchy. Everything is killed and removed when the test
 * finishes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';
import { tempDir } from './scratch.ts';

/** A comm-sized unique name (at most 15 bytes, as the kernel keeps). */
export function uniqueName(prefix = 'rtw'): string {
  return `${prefix}${randomBytes(4).toString('hex')}`;
}

/** A copy of `source` (default /bin/sleep) named `name`, in a directory anyone may traverse and execute from. */
export function copyBinary(name: string, source = '/bin/sleep'): string {
  const dir = tempDir('bin');
  chmodSync(dir, 0o755);
  const path = join(dir, name);
  copyFileSync(source, path);
  chmodSync(path, 0o755);
  return path;
}

export interface Started {
  child: ChildProcess;
  pid: number;
  /** Kills the process and waits until it is reaped. */
  stop(): Promise<void>;
}

/** Starts a process in its own process group; `uid` runs it as that uid and gid through setpriv. Killed (with its group) when the test finishes. */
export function start(
  file: string,
  args: string[] = ['600'],
  opts: { argv0?: string; uid?: number } = {},
): Started {
  const child =
    opts.uid === undefined
      ? spawn(file, args, { stdio: 'ignore', detached: true, ...(opts.argv0 ? { argv0: opts.argv0 } : {}) })
      : spawn(
          'setpriv',
          [`--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', '--', file, ...args],
          { stdio: 'ignore', detached: true },
        );
  if (!child.pid) throw new Error(`could not start ${file}`);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  // Its own process group, so that what it starts (a shell's sleep) ends with it.
  const stop = async () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
    await exited;
  };
  onTestFinished(stop);
  return { child, pid: child.pid, stop };
}

/** Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup on pure v2 hosts, …/unified on hybrid ones). */
export function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (right?.startsWith('cgroup2 ')) return left!.split(' ')[4]!;
  }
  throw new Error('no cgroup2 hierarchy is mounted');
}

/**
 * Moves `pid` into the cgroup `rel` (relative to the cgroup2 mount), creating the directories; they are removed
 * (deepest first) when the test finishes, after its processes are gone.
 */
export function moveToCgroup(pid: number, rel: string): void {
  const mount = cgroup2Mount();
  const parts = rel.split('/').filter((p) => p !== '');
  const created: string[] = [];
  let dir = mount;
  for (const part of parts) {
    dir = join(dir, part);
    try {
      mkdirSync(dir);
      created.push(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  writeFileSync(join(dir, 'cgroup.procs'), String(pid));
  onTestFinished(async () => {
    for (const d of created.reverse()) {
      for (let i = 0; i < 100; i++) {
        // Whatever still runs in it (in whichever order cleanups run) is ended first.
        for (const p of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
          try {
            process.kill(Number(p), 'SIGKILL');
          } catch {
            // already gone
          }
        }
        try {
          rmdirSync(d);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
  });
}
