import { join, resolve } from 'node:path';
import { DaemonRegistry } from '../../agents/registry.ts';
import { escapeText } from '../../encoding/escape.ts';
import { defaultStateDir } from '../../store/state-dir.ts';
import { type Command, EXIT_OK, EXIT_USAGE, parseFlags, subcommand, UsageError } from '../command.ts';

const help = `Usage: riptides-cli daemon evict DAEMON_ID [--state-dir DIR]

Evicts a node agent, as \`spire-server agent evict\` does: removes its registration from the reconciler's state
directory. A running reconciler ends the agent's stream at once (PERMISSION_DENIED, with the reason) and
refuses every later one, so the node gets no new SVID, program or credential value; what it already holds
stays until it expires. The node can come back only by joining again with a new token. DAEMON_ID is the ID
\`ctl get daemons\` lists (the part after riptides/daemon/ in its SPIFFE ID).

Flags:
  --state-dir DIR   the reconciler's state directory (default, as the reconciler's: $RIPTIDES_STATE_DIR,
                    else $XDG_STATE_HOME/riptides, else ~/.local/state/riptides)

Exit status: 0 evicted, 2 no such daemon registered in DIR (or a bad invocation).
`;

export const command: Command = {
  name: 'daemon',
  summary: 'evict a node agent (its registration removed; its stream ended)',
  help,
  async run(argv, io) {
    const [, rest] = subcommand(argv, ['evict'] as const);
    const { values, positionals } = parseFlags(rest, { 'state-dir': { type: 'string' } }, true);
    const [daemonId, ...extra] = positionals;
    if (!daemonId) throw new UsageError('missing DAEMON_ID (see `riptides-cli ctl get daemons`)');
    if (extra.length) throw new UsageError(`one DAEMON_ID at a time (got ${positionals.length})`);
    const id = daemonId.replace(/^spiffe:\/\/[^/]+\/riptides\/daemon\//, '');
    const stateDir = resolve(io.cwd, values['state-dir'] ?? defaultStateDir(io.env));
    const evicted = await DaemonRegistry.evict(join(stateDir, 'daemons'), id);
    if (!evicted) {
      io.stderr(
        `riptides-cli daemon: no daemon ${escapeText(id)} is registered in ${escapeText(stateDir)} (list them with \`riptides-cli ctl get daemons\`)\n`,
      );
      return EXIT_USAGE;
    }
    io.stdout(
      `evicted daemon ${escapeText(evicted.spiffeId)}${evicted.daemonGroup ? ` (daemon group ${escapeText(evicted.daemonGroup)})` : ''}\n`,
    );
    io.stderr('a running reconciler ends its stream now; it can come back only with a new join token\n');
    return EXIT_OK;
  },
};
