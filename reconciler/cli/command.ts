import { type ParseArgsConfig, parseArgs } from 'node:util';
import { closest } from '../policy/suggest.ts';

/** Where a command writes and what it may read; tests pass their own to capture every byte. */
export interface CommandIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Whether stderr is a terminal (progress draws one line in place there), and its width in columns. */
  stderrTTY?: { columns: number };
  /**
   * For long-running commands (servers): resolves when the user asks them to stop (SIGINT or SIGTERM).
   * Called only by such commands, so every other command keeps the default Ctrl-C behaviour.
   */
  untilStopped?: () => Promise<void>;
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

/** `; did you mean "--repo"?`, or '' when nothing is close. */
function suggestion(input: string, known: readonly string[]): string {
  const match = closest(input, known);
  return match === undefined ? '' : `; did you mean "${match}"?`;
}

/**
 * Parses argv strictly (unknown flags are errors) with node:util's parser.
 * Throws UsageError with a message that names the offending flag and, when one is close, the flag meant.
 */
export function parseFlags<O extends Options>(argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
  } catch (err) {
    const e = err as Error & { code?: string };
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const flag = /'([^']+)'/.exec(e.message)?.[1] ?? '';
      const name = flag.replace(/=.*$/, '');
      throw new UsageError(
        `unknown flag ${name}${suggestion(
          name,
          Object.keys(options).map((o) => `--${o}`),
        )}`,
      );
    }
    if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      const arg = /'([^']*)'/.exec(e.message)?.[1] ?? '';
      throw new UsageError(`unexpected argument "${arg}": this command takes flags only`);
    }
    throw new UsageError(e.message.replace(/\. To specify a positional argument.*$/s, ''));
  }
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

/**
 * `<command> [flags] <subcommand> [flags]`: the subcommand and its arguments (flags given before it come first);
 * a missing or unknown one is a usage error. With `flags` (the command's, as parseFlags takes them), flags may
 * come before the subcommand: read by that grammar, so that a flag's value is never taken for the subcommand
 * (`ctl -n delete describe wid x` names the namespace "delete"). Without, the subcommand comes first.
 */
export function subcommand<T extends string>(
  argv: string[],
  allowed: readonly T[],
  flags: Record<string, { type: 'string' | 'boolean'; short?: string }> = {},
): [T, string[]] {
  const isSub = (a: string | undefined) => a !== undefined && (allowed as readonly string[]).includes(a);
  const at = leadingFlags(argv, flags);
  const [sub, ...rest] =
    at > 0 && isSub(argv[at]) ? [argv[at]!, ...argv.slice(0, at), ...argv.slice(at + 1)] : argv;
  if (isSub(sub)) return [sub as T, rest];
  const choices = allowed.length > 1 ? `${allowed.slice(0, -1).join(', ')} or ${allowed.at(-1)}` : allowed[0];
  throw new UsageError(
    sub === undefined
      ? `missing subcommand: ${choices}`
      : `unknown subcommand "${sub}"${suggestion(sub, allowed)} (the subcommands are ${choices})`,
  );
}

/** The index of the first word after the known flags (and their values) that `argv` starts with. */
function leadingFlags(
  argv: string[],
  flags: Record<string, { type: 'string' | 'boolean'; short?: string }>,
): number {
  let i = 0;
  while (i < argv.length) {
    const word = argv[i]!;
    if (!word.startsWith('-') || word === '--') break;
    const name = word.startsWith('--')
      ? word.slice(2).split('=')[0]!
      : Object.keys(flags).find((k) => flags[k]!.short === word.slice(1));
    const flag = name === undefined ? undefined : flags[name];
    if (!flag) return 0;
    i += flag.type === 'string' && !word.includes('=') ? 2 : 1;
  }
  return i;
}
