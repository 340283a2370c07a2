import { writeSync } from 'node:fs';
import { buildId } from '../build-id.ts';
import { escapeText } from '../encoding/escape.ts';
import { closest } from '../policy/suggest.ts';
import { packageVersion } from '../version.ts';
import { type CommandIO, EXIT_OK, EXIT_USAGE, UsageError } from './command.ts';
import { commands } from './commands.ts';

const USAGE_HINT = 'Run `riptides-cli --help` for the commands.';

function processIO(): CommandIO {
  return {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    env: process.env,
    cwd: process.cwd(),
    ...(process.stderr.isTTY ? { stderrTTY: { columns: process.stderr.columns || 80 } } : {}),
    untilStopped: () =>
      new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      }),
  };
}

async function topLevelHelp(): Promise<string> {
  const lines = ['Usage: riptides-cli <command> [flags]', '', 'Commands:'];
  for (const [name, load] of Object.entries(commands)) {
    const command = await load();
    lines.push(`  ${name.padEnd(12)} ${command.summary}`);
  }
  lines.push(
    '',
    'Flags for every command:',
    '  --help       the flags of a command (`riptides-cli <command> --help`)',
    '  --debug      on an unexpected error, print its stack trace',
    '  --version    print the version and build id',
    '',
    'Exit status: 0 ok, 1 findings (validation errors, plan changes, an unavailable credential), 2 could not run.',
    '',
  );
  return lines.join('\n');
}

function versionText(): string {
  return `riptides-cli ${packageVersion()} (build ${buildId().slice(0, 12)}, node ${process.version})\n`;
}

/**
 * One line, whatever the error holds: its first line (what follows is detail, sometimes a library's dump of
 * a request; --debug shows it all), escaped for the terminal (a file name or a server's text cannot send
 * escape sequences), and bounded in length.
 */
function oneLine(message: string): string {
  const first = message.trim().split(/\r\n|\r|\n/)[0] ?? '';
  return escapeText(first.length > 500 ? `${first.slice(0, 500)}…` : first);
}

/**
 * Errors the product raises on purpose carry a message meant for the operator (their class is one of ours,
 * or a system error such as EACCES that names the file). Anything else — a TypeError, a RangeError, a plain
 * Error from a library, a thrown non-error — is a bug or an environment we did not foresee.
 */
function isUnexpected(err: unknown): boolean {
  if (!(err instanceof Error)) return true;
  if (typeof (err as NodeJS.ErrnoException).syscall === 'string') return false;
  return [
    Error,
    TypeError,
    RangeError,
    ReferenceError,
    SyntaxError,
    EvalError,
    URIError,
    AggregateError,
  ].some((builtin) => err.constructor === builtin);
}

/** What `riptides-cli <command>` prints for an error it did not handle itself: one line, or the stack with --debug. */
function describeFailure(command: string, err: unknown, debug: boolean): string {
  const message = err instanceof Error ? err.message : String(err);
  const prefix = command ? `riptides-cli ${command}` : 'riptides-cli';
  const unexpected = isUnexpected(err);
  let text = `${prefix}: ${unexpected ? 'unexpected error: ' : ''}${oneLine(message || String(err))}`;
  if (debug) {
    const stack = err instanceof Error && err.stack ? err.stack : String(err);
    text += `\n${stack}`;
  } else if (unexpected) {
    text += ' (run again with --debug for the stack trace)';
  }
  return `${text}\n`;
}

/** The command being run and whether --debug was given, for failures that escape main (see runCli). */
const current = { command: '', debug: false };

export async function main(argv: string[], io: CommandIO = processIO()): Promise<number> {
  const debug = argv.includes('--debug');
  const args = argv.filter((a) => a !== '--debug');
  const [name, ...rest] = args;
  current.debug = debug;
  current.command = name ?? '';
  try {
    if (name === '--version' || name === '-V' || name === 'version') {
      io.stdout(versionText());
      return EXIT_OK;
    }
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      io.stdout(await topLevelHelp());
      return name === undefined ? EXIT_USAGE : EXIT_OK;
    }
    // Own names only: `riptides-cli constructor` is an unknown command, not Object's constructor.
    const load = Object.hasOwn(commands, name) ? commands[name] : undefined;
    if (!load) {
      const isFlag = name.startsWith('-');
      // Before a command, only the global flags (--version, --help) are meant.
      const near = isFlag ? closest(name, ['--version', '--help']) : closest(name, Object.keys(commands));
      const flag = isFlag
        ? ` flag ${name}${near ? '' : ' (flags go after the command)'}`
        : ` command "${name}"`;
      io.stderr(`riptides-cli: unknown${flag}${near ? `; did you mean "${near}"?` : ''}\n${USAGE_HINT}\n`);
      return EXIT_USAGE;
    }
    const command = await load();
    if (rest.includes('--help') || rest.includes('-h')) {
      io.stdout(command.help.endsWith('\n') ? command.help : `${command.help}\n`);
      return EXIT_OK;
    }
    if (rest.includes('--version')) {
      io.stdout(versionText());
      return EXIT_OK;
    }
    return await command.run(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(
        `riptides-cli ${name}: ${oneLine(err.message)}\nRun \`riptides-cli ${name} --help\` for usage.\n`,
      );
      return EXIT_USAGE;
    }
    io.stderr(describeFailure(name ?? '', err, debug));
    return EXIT_USAGE;
  }
}

/**
 * The process entry point (bin/riptides-cli.mjs): runs main and makes every failure exit 2 with one line,
 * including those main cannot catch — an exception thrown from a callback or timer, a promise rejected with
 * nobody waiting for it. Exit 1 keeps its meaning (findings) because nothing else can produce it.
 */
export async function runCli(argv: string[]): Promise<void> {
  const fail = (err: unknown) => {
    // Synchronous: the process exits right after, and a pending asynchronous write could be lost.
    try {
      writeSync(2, describeFailure(current.command, err, current.debug));
    } catch {
      // stderr itself is gone; the exit status still says what happened.
    }
    process.exit(EXIT_USAGE);
  };
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  process.exitCode = await main(argv);
  // The command is done. A handle that a library cannot cancel (a DNS lookup queued in libuv's pool behind a
  // dead resolver, a socket it keeps) must not keep a finished process alive: a reconciler stopped by SIGTERM
  // lingered for minutes behind queued lookups of an unreachable Vault. Unref'd: a clean exit is not delayed.
  setTimeout(() => process.exit(), FINISHED_EXIT_MS).unref();
}

/** How long a finished command may wait for handles it left open before it exits anyway, ms. */
export const FINISHED_EXIT_MS = 1_000;
