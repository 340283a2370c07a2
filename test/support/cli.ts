import type { CommandIO } from '../../reconciler/cli/command.ts';

/** A CommandIO that records everything a command prints. */
export function capture(cwd = process.cwd(), env: NodeJS.ProcessEnv = {}) {
  const out = { stdout: '', stderr: '', io: undefined as unknown as CommandIO };
  out.io = {
    stdout: (t) => {
      out.stdout += t;
    },
    stderr: (t) => {
      out.stderr += t;
    },
    env,
    cwd,
  };
  return out;
}
