import type { Command } from './command.ts';

/** Every subcommand, loaded lazily so `riptides-cli validate` does not pay for crypto or git imports. */
export const commands: Record<string, () => Promise<Command>> = {
  validate: async () => (await import('./commands/validate.ts')).command,
  schema: async () => (await import('./commands/schema.ts')).command,
  compile: async () => (await import('./commands/compile.ts')).command,
};
