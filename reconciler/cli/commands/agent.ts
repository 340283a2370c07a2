import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Agent, AgentError } from '../../../agent/agent.ts';
import { augmentLines, KubernetesPodSource, ProcessNotFoundError } from '../../../agent/attest/index.ts';
import { JoinError } from '../../../agent/join.ts';
import { type Command, type CommandIO, EXIT_OK, EXIT_USAGE, parseFlags, UsageError } from '../command.ts';
import { commandLogger } from '../logger.ts';
import { parseHostPort, stateDirOf } from '../state-dir.ts';

const help = `Usage:
  riptides-cli agent --server HOST:PORT --join-token TOKEN [--state-dir DIR] [--daemon-group GROUP]
                     [--control-root DIR] [--bundle FILE] [--max-identities N]
  riptides-cli agent [--state-dir DIR]          (after the first start: the identity is in DIR)
  riptides-cli agent augment PID [--kubeconfig FILE]

Runs the node agent. The first start joins: it fetches the reconciler's trust bundle and keeps it only if it
holds the CA pinned by the join token (or the one in --bundle FILE), then sends the single-use token over
TLS verified against it and receives its agent SVID (spiffe://<td>/riptides/daemon/<id>), kept and renewed
in DIR. From then on it talks to the reconciler over mutual TLS only; a restart needs no token.

The agent attests local processes, gets an SVID for each identity of its program that has a process,
writes the kernel module's control interface (default DIR/control; production /sys/module/riptides) and
reports what it wrote. If the reconciler is away it keeps enforcing the last good program and unexpired
SVIDs, reconnecting with backoff. Logs are JSON lines on standard error, never with a credential value.

  augment PID   prints the labels collected for a process, one key=value per line (debug a selector)

Flags:
  --server HOST:PORT     the reconciler (default: where this agent joined)
  --join-token TOKEN     from \`riptides-cli token create\`; needed only to join
  --state-dir DIR        default $XDG_STATE_HOME/riptides/agent
  --daemon-group GROUP   the group the operator expects; joining fails if the token grants another
  --control-root DIR     the control interface's root (default DIR/control)
  --bundle FILE          trust this PEM bundle to join instead of the pin in the token
  --max-identities N     refuse (NACK) programs with more identities (default 10000)
  --kubeconfig FILE      Kubernetes access to find the pods of containerised processes (default:
                         $KUBECONFIG, else in-cluster; without either, no k8s:* labels)

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

export const command: Command = {
  name: 'agent',
  summary: 'run the node agent (join once, then program the control interface), or augment PID',
  help,
  async run(argv, io) {
    if (argv[0] === 'augment') return augment(argv.slice(1), io);
    const { values } = parseFlags(argv, {
      server: { type: 'string' },
      'join-token': { type: 'string' },
      'state-dir': { type: 'string' },
      'daemon-group': { type: 'string' },
      'control-root': { type: 'string' },
      bundle: { type: 'string' },
      'max-identities': { type: 'string' },
      kubeconfig: { type: 'string' },
    });
    if (values.server && !parseHostPort(values.server))
      throw new UsageError(`--server must be HOST:PORT (got "${values.server}")`);
    const maxIdentities =
      values['max-identities'] === undefined ? undefined : Number(values['max-identities']);
    if (maxIdentities !== undefined && !(Number.isInteger(maxIdentities) && maxIdentities > 0))
      throw new UsageError('--max-identities must be a whole number above 0');
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
    // The token is a secret: it is taken from the flag or RIPTIDES_JOIN_TOKEN, and never logged.
    const joinToken = values['join-token'] ?? io.env.RIPTIDES_JOIN_TOKEN;
    const stateDir = stateDirOf(values['state-dir'], io, 'agent');
    const log = commandLogger(io, 'agent');
    const pods = KubernetesPodSource.fromEnvironment({
      ...(values.kubeconfig ? { kubeconfigPath: resolve(io.cwd, values.kubeconfig) } : {}),
      env: io.env,
    });
    let agent: Agent;
    try {
      agent = await Agent.start({
        stateDir,
        ...(values.server ? { server: values.server } : {}),
        ...(joinToken ? { joinToken } : {}),
        ...(values['daemon-group'] ? { daemonGroup: values['daemon-group'] } : {}),
        ...(values['control-root'] ? { controlRoot: resolve(io.cwd, values['control-root']) } : {}),
        ...(bundlePem ? { bundlePem } : {}),
        ...(maxIdentities ? { maxIdentities } : {}),
        pods,
        logger: log,
      });
    } catch (err) {
      if (err instanceof JoinError || err instanceof AgentError) {
        io.stderr(`riptides-cli agent: ${err.message}\n`);
        return EXIT_USAGE;
      }
      throw err;
    }
    log.info('agent running', {
      spiffeId: agent.identity.spiffeId,
      daemonGroup: agent.identity.daemonGroup,
      server: agent.identity.server,
      controlRoot: agent.node.writer.root,
    });
    const signal = await new Promise<string>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    log.info('stopping: the control interface keeps what it holds', { signal });
    await agent.stop();
    return EXIT_OK;
  },
};
