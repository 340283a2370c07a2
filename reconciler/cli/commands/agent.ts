import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { AgentError } from '../../../agent/agent.ts';
import { augmentLines, KubernetesPodSource, ProcessNotFoundError } from '../../../agent/attest/index.ts';
import { JoinError } from '../../../agent/join.ts';
import { formatAddress, type RunningNode, startNode } from '../../../agent/start-node.ts';
import { ControlReader } from '../../../kernel-module/control/index.ts';
import { transparentRuleset } from '../../../kernel-module/dataplane/nft-rules.ts';
import { escapeText } from '../../encoding/escape.ts';
import { serveUntilSignal } from '../../shutdown.ts';
import {
  type Command,
  type CommandIO,
  EXIT_OK,
  EXIT_USAGE,
  parseFlags,
  requireFlag,
  UsageError,
} from '../command.ts';
import { commandLogger } from '../logger.ts';
import { flagListeningAt, NODE_FLAGS, NODE_FLAGS_HELP, nodeOptionsFromFlags } from '../node-flags.ts';
import { parseHostPort, stateDirOf } from '../state-dir.ts';

const help = `Usage:
  riptides-cli agent --server HOST:PORT (--join-token TOKEN | --join-token-file FILE) [--state-dir DIR] [--daemon-group GROUP]
                     [--control-root DIR] [--bundle FILE] [--max-identities N] [data plane flags]
  riptides-cli agent [--state-dir DIR] [data plane flags]   (after the first start: the identity is in DIR)
  riptides-cli agent augment PID [--kubeconfig FILE]
  riptides-cli agent nft-rules --transparent HOST:PORT [--state-dir DIR | --control-root DIR]

Runs the node agent. The first start joins: it fetches the reconciler's trust bundle and keeps it only if it
holds the CA pinned by the join token (or the one in --bundle FILE), then sends the single-use token over
TLS verified against it and receives its agent SVID (spiffe://<td>/riptides/daemon/<id>), kept and renewed
in DIR. From then on it talks to the reconciler over mutual TLS only; a restart needs no token.

The agent attests local processes, gets an SVID for each identity of its program that has a process,
writes the kernel module's control interface (default DIR/control; production /sys/module/riptides) and
reports what it wrote. If the reconciler is away it keeps enforcing the last good program and unexpired
SVIDs, reconnecting with backoff. Logs are JSON lines on standard error, never with a credential value.

With a data plane flag it also runs the data plane in this process: outbound connections of attested
processes (through the proxy, nftables redirection, or an outbound mapping) are upgraded to mTLS or have
their credential injected as the program says, and inbound mappings front workloads' ports. Programs,
SVIDs and credential rotations apply to the next connection; SIGTERM closes its listeners and connections.
Applications trust DIR/control/certs/ca-certificates.crt for intercepted TLS.

  augment PID   prints the labels collected for a process, one key=value per line (debug a selector)
  nft-rules     prints the nftables ruleset that redirects the program's destinations to --transparent
                (apply it with \`| nft -f -\`; remove it with \`nft delete table inet riptides\`)

Flags:
  --server HOST:PORT     the reconciler (default: where this agent joined)
  --join-token TOKEN     from \`riptides-cli token create\`; needed only to join. Other local users can read
                         a process's arguments: prefer --join-token-file or RIPTIDES_JOIN_TOKEN
  --join-token-file FILE read the token from FILE (e.g. a mounted secret)
  --state-dir DIR        default $XDG_STATE_HOME/riptides/agent
  --daemon-group GROUP   the group the operator expects; joining fails if the token grants another
  --control-root DIR     the control interface's root (default DIR/control)
  --bundle FILE          take the CA from this PEM file instead of fetching the bundle (it must hold the
                         CA the token pins; only that one is trusted until the reconciler proves it)
  --max-identities N     refuse (NACK) programs with more identities (default 10000)
  --kubeconfig FILE      Kubernetes access to find the pods of containerised processes (default:
                         $KUBECONFIG, else in-cluster; without either, no k8s:* labels)

${NODE_FLAGS_HELP}

Exit status: 0 stopped by a signal, 2 could not start (the reason is printed).
`;

async function augment(args: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseFlags(args, { kubeconfig: { type: 'string' } }, true);
  const pid = Number(positionals[0]);
  if (positionals.length !== 1 || !Number.isInteger(pid) || pid <= 0)
    throw new UsageError('augment takes one process ID');
  let lines: string[];
  try {
    lines = await augmentLines(pid, {
      kube: values.kubeconfig ? { kubeconfigPath: resolve(io.cwd, values.kubeconfig) } : {},
    });
  } catch (err) {
    if (err instanceof ProcessNotFoundError) {
      io.stderr(`riptides-cli agent augment: no process ${pid}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
  io.stdout(`${lines.join('\n')}\n`);
  return EXIT_OK;
}

/** `agent nft-rules`: the redirect for the program in force on this node, for an operator to install. */
async function nftRules(args: string[], io: CommandIO): Promise<number> {
  const { values } = parseFlags(args, {
    transparent: { type: 'string' },
    'state-dir': { type: 'string' },
    'control-root': { type: 'string' },
  });
  const at = parseHostPort(requireFlag(values.transparent, 'transparent'));
  if (!at || at.port === 0)
    throw new UsageError(`--transparent must be HOST:PORT with a port (got "${values.transparent}")`);
  const root = values['control-root']
    ? resolve(io.cwd, values['control-root'])
    : join(stateDirOf(values['state-dir'], io, 'agent'), 'control');
  let table: Awaited<ReturnType<ControlReader['rules']>>;
  try {
    table = await new ControlReader(root).rules();
  } catch (err) {
    io.stderr(
      `riptides-cli agent nft-rules: cannot read the rule table in ${root}: ${(err as Error).message}\n`,
    );
    return EXIT_USAGE;
  }
  if (!table) {
    io.stderr(`riptides-cli agent nft-rules: no rule table in ${root} (has the agent received a program?)\n`);
    return EXIT_USAGE;
  }
  io.stdout(transparentRuleset(table, { transparentPort: at.port, excludeUid: process.getuid?.() ?? 0 }));
  io.stderr(
    `# rules for program ${table.version}; the uid excluded is this command's (${process.getuid?.() ?? 0}): run it as the agent's user\n`,
  );
  return EXIT_OK;
}

export const command: Command = {
  name: 'agent',
  summary:
    'run the node agent and its data plane (join once, program the control interface), augment PID, nft-rules',
  help,
  async run(argv, io) {
    if (argv[0] === 'augment') return augment(argv.slice(1), io);
    if (argv[0] === 'nft-rules') return nftRules(argv.slice(1), io);
    const { values } = parseFlags(argv, {
      server: { type: 'string' },
      'join-token': { type: 'string' },
      'join-token-file': { type: 'string' },
      'state-dir': { type: 'string' },
      'daemon-group': { type: 'string' },
      'control-root': { type: 'string' },
      bundle: { type: 'string' },
      'max-identities': { type: 'string' },
      kubeconfig: { type: 'string' },
      ...NODE_FLAGS,
    });
    if (values.server && !parseHostPort(values.server))
      throw new UsageError(`--server must be HOST:PORT (got "${values.server}")`);
    const maxIdentities =
      values['max-identities'] === undefined ? undefined : Number(values['max-identities']);
    if (maxIdentities !== undefined && !(Number.isInteger(maxIdentities) && maxIdentities > 0))
      throw new UsageError('--max-identities must be a whole number above 0');
    const dataPlane = await nodeOptionsFromFlags(values, io);
    let bundlePem: string | undefined;
    if (values.bundle) {
      try {
        bundlePem = await readFile(resolve(io.cwd, values.bundle), 'utf8');
      } catch (err) {
        throw new UsageError(
          `cannot read --bundle ${values.bundle}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
        );
      }
    }
    // The token is a secret: it is taken from the flag, a file or RIPTIDES_JOIN_TOKEN, and never logged.
    if (values['join-token'] !== undefined && values['join-token-file'] !== undefined)
      throw new UsageError('pass --join-token or --join-token-file, not both');
    let tokenFromFile: string | undefined;
    if (values['join-token-file'] !== undefined) {
      try {
        tokenFromFile = (await readFile(resolve(io.cwd, values['join-token-file']), 'utf8')).trim();
      } catch (err) {
        throw new UsageError(
          `cannot read --join-token-file ${values['join-token-file']}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
        );
      }
    }
    const joinToken = values['join-token'] ?? tokenFromFile ?? io.env.RIPTIDES_JOIN_TOKEN;
    const stateDir = stateDirOf(values['state-dir'], io, 'agent');
    const log = commandLogger(io, 'agent');
    const pods = KubernetesPodSource.fromEnvironment({
      ...(values.kubeconfig ? { kubeconfigPath: resolve(io.cwd, values.kubeconfig) } : {}),
      env: io.env,
    });
    const joinFailed = (err: unknown) => {
      if (err instanceof JoinError || err instanceof AgentError) {
        // A port in use names the flag that asked for it.
        const flag = err instanceof AgentError && err.address ? flagListeningAt(values, err.address) : null;
        // A join error quotes whatever answered at --server: escaped for the terminal.
        io.stderr(`riptides-cli agent: ${escapeText(err.message)}${flag ? ` (change ${flag})` : ''}\n`);
        return true;
      }
      return false;
    };
    const report = (node: RunningNode) => {
      const { agent, addresses } = node;
      log.info('agent running', {
        spiffeId: agent.identity.spiffeId,
        daemonGroup: agent.identity.daemonGroup,
        server: agent.identity.server,
        controlRoot: addresses.controlRoot,
        ...(node.dataPlane
          ? {
              proxy: addresses.proxy ? formatAddress(addresses.proxy) : null,
              caBundle: addresses.caBundle,
            }
          : {}),
        ...(addresses.metrics
          ? {
              metrics: `http://${formatAddress(addresses.metrics.listen)}/metrics`,
              metricsCredential: addresses.metrics.credentialFile,
            }
          : {}),
      });
      if (addresses.transparent && !dataPlane.installNftables)
        log.warn(
          'transparent listener without --nftables: nothing is redirected to it until you install the rules (riptides-cli agent nft-rules)',
          { transparent: formatAddress(addresses.transparent) },
        );
    };
    try {
      // A signal while joining or starting stops what started (an installed nftables redirect included).
      return await serveUntilSignal(
        'agent',
        async () => {
          const node = await startNode({
            stateDir,
            ...(values.server ? { server: values.server } : {}),
            ...(joinToken ? { joinToken } : {}),
            ...(values['daemon-group'] ? { daemonGroup: values['daemon-group'] } : {}),
            ...(values['control-root'] ? { controlRoot: resolve(io.cwd, values['control-root']) } : {}),
            ...(bundlePem ? { bundlePem } : {}),
            ...(maxIdentities ? { maxIdentities } : {}),
            ...dataPlane,
            pods,
            logger: log,
          });
          report(node);
          return node;
        },
        async (node) => {
          log.info('stopping: the control interface keeps what it holds');
          await node.stop();
        },
      );
    } catch (err) {
      if (joinFailed(err)) return EXIT_USAGE;
      throw err;
    }
  },
};
