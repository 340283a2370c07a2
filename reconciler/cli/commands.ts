import type { Command } from './command.ts';

/** Every subcommand, loaded lazily so `riptides-cli validate` does not pay for crypto or git imports. */
export const commands: Record<string, () => Promise<Command>> = {
  validate: async () => (await import('./commands/validate.ts')).command,
  schema: async () => (await import('./commands/schema.ts')).command,
  compile: async () => (await import('./commands/compile.ts')).command,
  plan: async () => (await import('./commands/plan.ts')).command,
  credentials: async () => (await import('./commands/credentials.ts')).command,
  ca: async () => (await import('./commands/ca.ts')).command,
  svid: async () => (await import('./commands/svid.ts')).command,
  jwt: async () => (await import('./commands/jwt.ts')).command,
  bundle: async () => (await import('./commands/bundle.ts')).command,
  oidc: async () => (await import('./commands/oidc.ts')).command,
  ctl: async () => (await import('./commands/ctl.ts')).command,
  drift: async () => (await import('./commands/drift.ts')).command,
  token: async () => (await import('./commands/token.ts')).command,
  daemon: async () => (await import('./commands/daemon.ts')).command,
  reconciler: async () => (await import('./commands/reconciler.ts')).command,
  agent: async () => (await import('./commands/agent.ts')).command,
  up: async () => (await import('./commands/up.ts')).command,
};
