import { type CommandIO, EXIT_OK, EXIT_USAGE, UsageError } from './command.ts';
import { commands } from './commands.ts';

function processIO(): CommandIO {
  return {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    env: process.env,
    cwd: process.cwd(),
  };
}

async function topLevelHelp(): Promise<string> {
  const lines = ['Usage: riptides-cli <command> [flags]', '', 'Commands:'];
  for (const [name, load] of Object.entries(commands)) {
    const command = await load();
    lines.push(`  ${name.padEnd(12)} ${command.summary}`);
  }
  lines.push('', 'Run `riptides-cli <command> --help` for the flags of a command.', '');
  return lines.join('\n');
}

export async function main(argv: string[], io: CommandIO = processIO()): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(await topLevelHelp());
    return name === undefined ? EXIT_USAGE : EXIT_OK;
  }
  const load = commands[name];
  if (!load) {
    io.stderr(`riptides-cli: unknown command "${name}"\n\n${await topLevelHelp()}`);
    return EXIT_USAGE;
  }
  const command = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout(command.help.endsWith('\n') ? command.help : `${command.help}\n`);
    return EXIT_OK;
  }
  try {
    return await command.run(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`riptides-cli ${name}: ${err.message}\nRun \`riptides-cli ${name} --help\` for usage.\n`);
      return EXIT_USAGE;
    }
    io.stderr(`riptides-cli ${name}: ${(err as Error).message}\n`);
    return EXIT_USAGE;
  }
}
