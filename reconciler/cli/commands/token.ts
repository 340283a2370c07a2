import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { daemonRecordFile } from '../../agents/registry.ts';
import { bundlePin } from '../../agents/serving-identity.ts';
import { JoinTokenStore } from '../../agents/tokens.ts';
import { escapeText } from '../../encoding/escape.ts';
import { openAuthority } from '../../identity/authority.ts';
import { SPIFFE_ID_ERROR_MESSAGES, validatePath } from '../../identity/spiffe-id.ts';
import { defaultStateDir } from '../../store/state-dir.ts';
import { type AppliedState, StoredDocument } from '../../store/state-store.ts';
import { type Command, EXIT_OK, EXIT_USAGE, parseFlags, subcommand, UsageError } from '../command.ts';
import { durationFlag } from '../identity-flags.ts';

const help = `Usage: riptides-cli token create [--daemon-group GROUP | --daemon-id ID] [--ttl 1h] [--state-dir DIR]

Creates a single-use join token for one new node agent and prints it alone on standard output (notes go to
standard error), as \`kubeadm token create\` does. The token carries the SHA-256 of the trust domain's root
public key, so \`riptides-cli agent --join-token TOKEN\` verifies the reconciler before it sends the token.
The reconciler keeps only a hash of the token's secret; once an agent joins with it, it is gone.

Flags:
  --daemon-group GROUP  the daemon group the agent joins (e.g. riptides/daemongroup/prod/workers); it then
                        serves every identity scoped to that group
  --daemon-id ID        the daemon ID it gets instead of a random UUID; its agent SVID is
                        spiffe://<trust domain>/riptides/daemon/ID and identities scoped to
                        daemon riptides/daemon/ID are its own
  --ttl DURATION        how long the token can be used (default 1h; e.g. 15m, 24h; at most 7d)
  --state-dir DIR       the reconciler's state directory (default, as the reconciler's: $RIPTIDES_STATE_DIR,
                        else $XDG_STATE_HOME/riptides, else ~/.local/state/riptides)

Exit status: 0 token printed, 2 could not create one (for instance no reconciler state in DIR yet).
`;

const GROUP_RE = /^[A-Za-z0-9._/-]{1,253}$/;
/** The longest daemon ID `--daemon-id` takes, in bytes (a DNS name's 253). */
const MAX_DAEMON_ID_BYTES = 253;
/** The longest a join token may stay usable. */
const MAX_TTL_SECONDS = 7 * 86_400;

export const command: Command = {
  name: 'token',
  summary: 'create a single-use join token for a node agent',
  help,
  async run(argv, io) {
    const [, rest] = subcommand(argv, ['create'] as const);
    const { values } = parseFlags(rest, {
      'daemon-group': { type: 'string' },
      'daemon-id': { type: 'string' },
      ttl: { type: 'string' },
      'state-dir': { type: 'string' },
    });
    const group = values['daemon-group'];
    const daemonId = values['daemon-id'];
    if (group !== undefined && daemonId !== undefined)
      throw new UsageError('pass --daemon-group or --daemon-id, not both');
    if (group !== undefined && !GROUP_RE.test(group))
      throw new UsageError(
        `--daemon-group "${group}" must be 1-253 letters, digits, ".", "_", "-" or "/" (e.g. riptides/daemongroup/prod/workers)`,
      );
    if (daemonId !== undefined) {
      // A host name's length at most: the daemon's SPIFFE ID must stay well under the 2,048 bytes a join takes.
      if (Buffer.byteLength(daemonId) > MAX_DAEMON_ID_BYTES)
        throw new UsageError(
          `--daemon-id is ${Buffer.byteLength(daemonId)} bytes; at most ${MAX_DAEMON_ID_BYTES} are accepted (a host name or a UUID)`,
        );
      const reason = validatePath(`/riptides/daemon/${daemonId}`);
      if (reason || daemonId === '')
        throw new UsageError(
          `--daemon-id "${daemonId}" cannot be part of a SPIFFE ID: ${reason ? SPIFFE_ID_ERROR_MESSAGES[reason] : 'it is empty'}`,
        );
    }
    const ttlSeconds = durationFlag(values.ttl, 'ttl', 3600);
    if (ttlSeconds > MAX_TTL_SECONDS)
      throw new UsageError(
        `--ttl ${values.ttl} is over 7d: a join token is a secret good for one join; create it when the node is about to join (kubeadm's tokens last 24h)`,
      );
    const stateDir = resolve(io.cwd, values['state-dir'] ?? defaultStateDir(io.env));
    const caDir = join(stateDir, 'ca');
    if (!existsSync(join(caDir, 'authority.json'))) {
      io.stderr(
        `riptides-cli token: no reconciler state in ${stateDir}: start \`riptides-cli reconciler --state-dir ${stateDir} …\` once first (it creates the trust domain's CA)\n`,
      );
      return EXIT_USAGE;
    }
    if (daemonId !== undefined && existsSync(daemonRecordFile(join(stateDir, 'daemons'), daemonId))) {
      io.stderr(
        `riptides-cli token: daemon ${daemonId} is registered already: evict it first (\`riptides-cli daemon evict ${daemonId}\`), or pick another --daemon-id\n`,
      );
      return EXIT_USAGE;
    }
    const authority = await openAuthority(caDir);
    const store = new JoinTokenStore(join(stateDir, 'tokens'));
    await store.init();
    const { token, record } = await store.create({
      pin: bundlePin(authority),
      ttlSeconds,
      daemonGroup: group ?? null,
      daemonId: daemonId ?? null,
    });
    io.stdout(`${token}\n`);
    io.stderr(
      `join token ${record.id}: daemon riptides/daemon/${record.daemonId}` +
        `${record.daemonGroup ? ` in daemon group ${record.daemonGroup}` : ' (no daemon group)'}, ` +
        `trust domain ${authority.trustDomain}; single use, expires ${record.expiresAt}\n` +
        `  RIPTIDES_JOIN_TOKEN=<token> riptides-cli agent --server HOST:PORT --state-dir DIR\n`,
    );
    if (group !== undefined) {
      const applied = (
        await StoredDocument.open<AppliedState>(join(stateDir, 'store', 'applied.json')).catch(() => null)
      )?.get();
      const groups = Object.keys(applied?.programVersions ?? {})
        .filter((k) => k.startsWith('daemonGroup:'))
        .map((k) => k.slice('daemonGroup:'.length));
      if (applied && !groups.includes(group))
        io.stderr(
          `note: the applied revision ${escapeText(applied.revision.slice(0, 12))} scopes nothing to daemon group ${group}` +
            ` (its groups: ${groups.map(escapeText).join(', ') || 'none'}); the agent will join and hold an empty program until a policy does\n`,
        );
    }
    return EXIT_OK;
  },
};
