import { type ParseArgsConfig, parseArgs } from 'node:util';

/** Where a command writes and what it may read; tests pass their own to capture every byte. */
export interface CommandIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  cwd: string;
}

/** Exit codes shared by every subcommand: 0 clean, 1 findings (errors, changes), 2 could not run. */
export const EXIT_OK = 0;
export const EXIT_FINDINGS = 1;
export const EXIT_USAGE = 2;

export interface Command {
  name: string;
  summary: string;
  /** Full help text printed by `riptides-cli <name> --help`. */
  help: string;
  run(argv: string[], io: CommandIO): Promise<number>;
}

/** A mistake in how the command was called: printed with the help hint, exit 2. */
export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses argv strictly (unknown flags are errors) with node:util's parser.
 * Throws UsageError with a message that names the offending flag.
 */
export function parseFlags<O extends Options>(argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

export function wantsHelp(argv: string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

export function requireFlag(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`missing required flag --${flag}`);
  return value;
}

export function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  flag: string,
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new UsageError(`--${flag} must be one of ${allowed.join(', ')} (got "${value}")`);
}

/** `<command> <subcommand> [flags]`: the subcommand and its arguments; a missing or unknown one is a usage error. */
export function subcommand<T extends string>(argv: string[], allowed: readonly T[]): [T, string[]] {
  const [sub, ...rest] = argv;
  if (sub !== undefined && (allowed as readonly string[]).includes(sub)) return [sub as T, rest];
  throw new UsageError(
    sub === undefined
      ? `missing subcommand: ${allowed.join(' or ')}`
      : `unknown subcommand "${sub}": use ${allowed.join(' or ')}`,
  );
}
