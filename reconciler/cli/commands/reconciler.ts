import { applyMemoryPolicy } from '../../common/memory-policy.ts';
import { Reconciler } from '../../loop/reconciler.ts';
import { serveUntilSignal } from '../../shutdown.ts';
import { createLogger } from '../../telemetry/logger.ts';
import { ReconcilerMetrics } from '../../telemetry/metrics.ts';
import { type Command, parseFlags, requireFlag, UsageError } from '../command.ts';
import { RECONCILER_FLAGS, RECONCILER_HELP, reconcilerOptionsFromFlags } from '../reconciler-flags.ts';
import { parseHostPort } from '../state-dir.ts';

const help = `Usage: riptides-cli reconciler --repo DIR|URL [--path SUBDIR] --listen HOST:PORT [--state-dir DIR]
                                [--webhook-secret-file FILE] [--poll-interval 60s] [--api-listen HOST:PORT]
                                [--oidc-issuer URL] [credential provider flags] [...]

The reconcile loop: follows the policy repository's tracked branch and makes every node enforce it. Each pass
fetches the branch, validates and compiles the new commit (only the files that changed are parsed again),
rotates the CA when due, keeps each credential the programs bind fresh, pushes each agent the change to its
own program over mutual TLS, and waits (bounded) for the agents' ACKs; status is served to \`ctl\`. A commit
that does not validate applies nothing: \`ctl get source\` shows its diagnostics with file and line, and the
last good revision stays in force. Passes start on a push webhook, on a poll (60 s + up to 10% jitter), on a
new commit of a local repository's branch (watched), on SIGHUP, and on start; bursts coalesce into one pass.

The state directory holds the store (applied revision, issued serials, status; never a credential value),
the trust domain's CA (created on first start), join tokens (\`riptides-cli token create\`), the registered
daemons, the API's credentials and address (api/), a remote's clone (git/) and reconciler.json (where agents
connect, the bundle pin). One reconciler per state directory. Logs are JSON lines on standard error; they
never carry a credential value. SIGTERM or SIGINT stops it gracefully (exit 0; 2 if that takes over 20 s);
agents keep enforcing what they hold until it is back.

Flags:
  --listen HOST:PORT          where agents connect (port 0: any free port, logged and in reconciler.json)
${RECONCILER_HELP}

Exit status: 0 stopped by a signal, 2 could not start (or could not stop in time).
`;

export const command: Command = {
  name: 'reconciler',
  summary: 'the reconcile loop: follow the policy repository, push programs to agents, serve status',
  help,
  async run(argv, io) {
    const { values } = parseFlags(argv, { ...RECONCILER_FLAGS, listen: { type: 'string' } });
    const listen = parseHostPort(requireFlag(values.listen, 'listen'));
    if (!listen) throw new UsageError(`--listen must be HOST:PORT (got "${values.listen}")`);
    // Every flag is checked (and every file it names read) before the state directory is touched.
    const parsed = reconcilerOptionsFromFlags(values, io);
    const logger = createLogger({
      level: parsed.logLevel,
      base: { component: 'reconciler' },
      destination: { write: (line: string) => io.stderr(line) },
    });
    for (const w of parsed.warnings) logger.warn(w);
    let onHup = () => {};
    const stopMemoryPolicy = await applyMemoryPolicy();
    const code = await serveUntilSignal(
      'reconciler',
      async () => {
        const reconciler = await Reconciler.start({
          ...parsed.options,
          agents: { ...parsed.options.agents, host: listen.host, port: listen.port },
          logger,
          metrics: new ReconcilerMetrics(),
        });
        onHup = () => reconciler.trigger('signal', 'SIGHUP');
        process.on('SIGHUP', onHup);
        return reconciler;
      },
      (reconciler) => reconciler.stop(),
      { logger },
    );
    process.off('SIGHUP', onHup);
    stopMemoryPolicy();
    return code;
  },
};
