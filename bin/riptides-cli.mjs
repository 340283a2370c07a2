#!/usr/bin/env node
// Runs the compiled CLI from dist/ (built by `npm run build`, which `npm ci` runs through `prepare`); when
// dist/ is missing or older than any source file, runs the TypeScript sources through tsx instead, so an
// edited checkout never runs stale code. The compiled path saves about 0.3 s of start-up per command.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const built = join(root, 'dist', 'reconciler', 'cli', 'main.js');
// Written after every successful build; tsc leaves unchanged outputs with their old times.
const stamp = join(root, 'dist', '.built');

function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

function builtIsFresh() {
  try {
    statSync(built);
    const builtAt = statSync(stamp).mtimeMs;
    return ['reconciler', 'agent', 'kernel-module'].every((d) => {
      try {
        return newestSource(join(root, d)) <= builtAt;
      } catch {
        return true;
      }
    });
  } catch {
    return false;
  }
}

// A stop signal while a long-running command is still loading (before it installs its own handlers, which
// stop what started and exit 0) ends the process at once with 0: nothing has started yet. Once the command
// handles the signal itself, this one steps aside. Other commands keep the signal's usual meaning.
if (['reconciler', 'agent', 'up'].includes(process.argv[2] ?? '')) {
  const early = (signal) => {
    if (process.listenerCount(signal) === 1) process.exit(0);
  };
  process.on('SIGTERM', early);
  process.on('SIGINT', early);
}

// Loading can fail too (a broken install, a missing dependency): that is exit 2 with one line, like any
// failure that is not a finding; runCli takes over from there.
try {
  let runCli;
  if (builtIsFresh()) {
    ({ runCli } = await import(built));
  } else {
    const { register } = await import('tsx/esm/api');
    register();
    ({ runCli } = await import('../reconciler/cli/main.ts'));
  }
  await runCli(process.argv.slice(2));
} catch (err) {
  const message = String(err?.message ?? err).split('\n')[0];
  process.stderr.write(`riptides-cli: cannot start: ${message}\n`);
  if (process.argv.includes('--debug')) process.stderr.write(`${err?.stack ?? ''}\n`);
  process.exitCode = 2;
}
