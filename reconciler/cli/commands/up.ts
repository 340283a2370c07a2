import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentError } from '../../../agent/agent.ts';
import { JoinError } from '../../../agent/join.ts';
import {
  formatAddress,
  type RunningNode,
  type StartNodeOptions,
  startNode,
} from '../../../agent/start-node.ts';
import type { AgentStatus } from '../../agents/session.ts';
import { makeDirs } from '../../common/atomic-file.ts';
import { applyMemoryPolicy } from '../../common/memory-policy.ts';
import { summarise } from '../../drift/report.ts';
import { escapeText } from '../../encoding/escape.ts';
import { Reconciler } from '../../loop/reconciler.ts';
import { onTermination } from '../../shutdown.ts';
import type { StatusSnapshot } from '../../status/model.ts';
import { createLogger, type Logger } from '../../telemetry/logger.ts';
import { ReconcilerMetrics } from '../../telemetry/metrics.ts';
import { type Command, type CommandIO, EXIT_OK, EXIT_USAGE, parseFlags, UsageError } from '../command.ts';
import { flagListeningAt, NODE_FLAGS, NODE_FLAGS_HELP, nodeOptionsFromFlags } from '../node-flags.ts';
import { Progress } from '../progress.ts';
import {
  type EchoCertificate,
  QUICKSTART_NODE_DEFAULTS,
  QUICKSTART_PATH,
  quickstartEchoCertificate,
  withQuickstartNodeDefaults,
} from '../quickstart.ts';
import { RECONCILER_FLAGS, RECONCILER_HELP, reconcilerOptionsFromFlags } from '../reconciler-flags.ts';
import { parseHostPort } from '../state-dir.ts';

const help = `Usage: riptides-cli up [--repo DIR|URL] [--path SUBDIR] [--state-dir DIR] [--trust-domain TD]
                       [--daemon-group GROUP] [--control-root DIR] [--agent-listen HOST:PORT]
                       [data plane flags] [credential provider flags] [reconciler flags] [drift flags]

The whole product on this machine, in one process: the reconcile loop (the same runtime as \`riptides-cli
reconciler\`, with its embedded store in the state directory), and one local node as \`riptides-cli agent\`
runs it: the agent, which joins with a token made here and speaks the real protocol over loopback mutual TLS,
the kernel module's control interface it writes, and the data plane that enforces it on real sockets (mTLS
between workloads, credentials injected into their requests).

Without --repo and --path it runs ${QUICKSTART_PATH} of this repository's checkout, with the data plane that
scenario needs, each part only where its flag is not given:
  --proxy-listen ${QUICKSTART_NODE_DEFAULTS['proxy-listen']}
  --inbound ${QUICKSTART_NODE_DEFAULTS.inbound[0]}
  --upstream-ca STATE_DIR/quickstart/echo.crt   a certificate made here for the quickstart's HTTPS echo server
                                                (its key beside it), renewed within 30 days of expiry
A port in use is named with the flag that moves it. A local git repository is followed on its checked-out
branch, so edit a file there, commit, and the change is applied within a second or two (\`riptides-cli ctl
get wid\`, \`riptides-cli drift\`). A plain directory is followed file by file instead.

It prints where everything is (the API for ctl, drift and /metrics, the agents' address, the control
interface, the data plane's listeners, the reports, the secrets directory, the log file), then one line of
live status: redrawn in place on a terminal, a new line when something changes otherwise. Logs (JSON lines)
go to STATE_DIR/up.log. The API's /metrics includes the data plane's counters. Ctrl-C or SIGTERM stops
everything cleanly: the data plane's listeners and connections close, an nftables redirect it installed is
deleted, and the agent keeps what it enforces on disk for the next start.

Kubernetes sources of the policy read Secret manifests from STATE_DIR/secrets (created 0700) unless
--secrets-dir or --kubeconfig says otherwise: put the quickstart's echo token there, never in git.

  --daemon-group GROUP        the local agent's daemon group (default: the one group the policy names;
                              required when it names several)
  --control-root DIR          the control interface's root (default STATE_DIR/agent/control)
  --agent-listen HOST:PORT    where agents connect (default 127.0.0.1:0: a free loopback port)

${NODE_FLAGS_HELP}
${RECONCILER_HELP}

Exit status: 0 stopped by a signal, 2 could not start (or could not stop in time).
`;

const FLAGS = {
  ...RECONCILER_FLAGS,
  ...NODE_FLAGS,
  'daemon-group': { type: 'string' },
  'control-root': { type: 'string' },
  'agent-listen': { type: 'string' },
} as const;

/** The directory holding this project's package.json (the checkout `up` runs the quickstart of). */
export function packageRoot(from = fileURLToPath(import.meta.url)): string {
  let dir = dirname(from);
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'riptides-gitops')
          return dir;
      } catch {
        // not ours; keep looking above
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new UsageError('cannot find the riptides-gitops checkout: pass --repo DIR');
    dir = up;
  }
}

/** The pino logger as the `(message, fields)` logger the agent takes. */
function agentLogger(log: Logger) {
  return {
    info: (message: string, fields?: Record<string, unknown>) => log.info(fields ?? {}, message),
    warn: (message: string, fields?: Record<string, unknown>) => log.warn(fields ?? {}, message),
    error: (message: string, fields?: Record<string, unknown>) => log.error(fields ?? {}, message),
  };
}

const short = (rev: string | null | undefined) => (rev ? escapeText(rev.slice(0, 12)) : '—');

function ago(iso: string | null, now: Date): string {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now.getTime() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

/**
 * The live status line: the revision in force (or why the newest commit is not), the agent, identities and
 * processes, credentials, drift. `stable` leaves out what changes every second (ages), to decide when a
 * non-terminal output gets a new line.
 */
export function statusLine(
  snap: StatusSnapshot,
  agents: ReadonlyArray<Pick<AgentStatus, 'connected' | 'ackedVersion' | 'desiredVersion' | 'report'>>,
  drift: { nodesDrifted: number; counts: Record<string, number> } | null,
  now: Date,
  stable = false,
): string {
  const parts: string[] = [];
  const src = snap.source;
  const ready = src?.conditions.find((c) => c.type === 'Ready');
  if (!src?.lastAppliedRevision && !src?.lastFetchedRevision) parts.push('waiting for the first pass');
  else if (ready?.status === 'False' && src.lastFetchedRevision !== src.lastAppliedRevision)
    parts.push(
      `commit ${short(src.lastFetchedRevision)} not applied (${escapeText(ready.reason)}); ${short(src.lastAppliedRevision)} in force`,
    );
  else
    parts.push(
      `applied ${short(src.lastAppliedRevision)}${stable ? '' : ` (${ago(src.lastAppliedAt, now)})`}` +
        // The source failing with no newer commit seen (a git server down): still in force, and saying why not newer.
        (ready?.status === 'False' ? `; source ${escapeText(ready.reason)}` : ''),
    );
  // Agents from the agent server directly: the status book refreshes them a moment later.
  if (agents.length === 0) parts.push('no agent yet');
  else {
    const synced = (a: (typeof agents)[number]) =>
      a.connected && a.desiredVersion !== '' && a.ackedVersion === a.desiredVersion;
    const n = agents.filter(synced).length;
    const a = agents[0]!;
    const state = !a.connected
      ? 'unreachable'
      : !a.report
        ? 'connecting'
        : a.report.control && a.report.control.health !== 'OK'
          ? 'degraded'
          : synced(a)
            ? 'in sync'
            : 'syncing';
    parts.push(agents.length === 1 ? `agent ${state}` : `${agents.length} agents, ${n} in sync`);
    // The local node's data plane, as its last report says: listeners, and (not in `stable`) connections.
    const dp = agents.length === 1 ? a.report?.dataPlane : null;
    if (dp) {
      const total = Object.values(dp.connections).reduce((x, y) => x + y, 0);
      const open = dp.activeInbound + dp.activeOutbound;
      parts.push(
        dp.health !== 'OK'
          ? `data plane ${escapeText(dp.health)}`
          : `data plane ${dp.listeners.length} listener${dp.listeners.length === 1 ? '' : 's'}${stable ? '' : `, ${total} connection${total === 1 ? '' : 's'} (${open} open)`}`,
      );
    }
  }
  const ids = snap.resources.filter((r) => r.kind === 'WorkloadIdentity');
  const procs = ids.reduce((n, r) => n + (r.kind === 'WorkloadIdentity' ? r.attestedProcesses : 0), 0);
  parts.push(
    `${ids.length} identit${ids.length === 1 ? 'y' : 'ies'}, ${procs} process${procs === 1 ? '' : 'es'}`,
  );
  const creds = snap.resources.filter((r) => r.kind === 'CredentialSource');
  if (creds.length) {
    const by = new Map<string, number>();
    for (const c of creds) if (c.kind === 'CredentialSource') by.set(c.state, (by.get(c.state) ?? 0) + 1);
    parts.push(`credentials ${[...by].map(([s, n]) => `${n} ${s}`).join(', ')}`);
  }
  if (drift) {
    const items = Object.entries(drift.counts).filter(([, n]) => n > 0);
    parts.push(items.length ? `drift: ${items.map(([k, n]) => `${n} ${k}`).join(', ')}` : 'no drift');
  }
  return parts.join(' · ');
}

export const command: Command = {
  name: 'up',
  summary:
    'the whole product on this machine: reconciler, a local agent, the control interface, the data plane (npm start)',
  help,
  async run(argv, io) {
    const { values } = parseFlags(argv, FLAGS);
    // The embedded default: this checkout's quickstart, with the node its two flows need.
    const embedded = values.repo === undefined && values.path === undefined;
    const root = values.repo === undefined ? packageRoot() : null;
    const agentListen = parseHostPort(values['agent-listen'] ?? '127.0.0.1:0');
    if (!agentListen)
      throw new UsageError(`--agent-listen must be HOST:PORT (got "${values['agent-listen']}")`);
    const flags = {
      ...values,
      repo: values.repo ?? root!,
      ...(embedded ? { path: QUICKSTART_PATH } : {}),
    };
    // Every flag is checked before anything is written; then the secrets directory default is filled in.
    const parsed = reconcilerOptionsFromFlags(flags, io);
    const node = embedded
      ? withQuickstartNodeDefaults(values)
      : { values, defaulted: new Set<'proxy-listen' | 'inbound'>() };
    const nodeOptions = await nodeOptionsFromFlags(node.values, io);
    const stateDir = parsed.options.stateDir;
    const secretsDir = values['secrets-dir'] || values.kubeconfig ? null : join(stateDir, 'secrets');
    const options = secretsDir
      ? {
          ...parsed.options,
          credentials: { ...parsed.options.credentials, secretsDir, kubernetes: {} },
        }
      : parsed.options;

    const progress = new Progress(io);
    const out = (text: string) => io.stdout(text);
    await makeDirs(stateDir, 0o700);
    if (secretsDir) await makeDirs(secretsDir, 0o700);
    let echo: EchoCertificate | null = null;
    if (embedded && !values['upstream-ca']) {
      echo = await quickstartEchoCertificate(join(stateDir, 'quickstart'));
      nodeOptions.upstreamCa = echo.certPem;
    }
    const logFile = join(stateDir, 'up.log');
    const logStream = createWriteStream(logFile, { flags: 'a', mode: 0o600 });
    const logger = createLogger({
      level: parsed.logLevel,
      base: { component: 'up' },
      destination: { write: (line: string) => logStream.write(line) },
    });
    for (const w of parsed.warnings) {
      logger.warn(w);
      io.stderr(`warning: ${escapeText(w)}\n`);
    }
    if (echo?.made) logger.info({ cert: echo.certFile }, 'made a certificate for the quickstart echo server');
    const metrics = new ReconcilerMetrics();
    const stopMemoryPolicy = await applyMemoryPolicy();

    // Ctrl-C or SIGTERM at any point, starting included, stops what has started, in reverse order.
    const started: {
      reconciler: Reconciler | null;
      node: RunningNode | null;
      live: { stop(): void } | null;
    } = {
      reconciler: null,
      node: null,
      live: null,
    };
    let stopping = false;
    const stopStarted = async () => {
      started.live?.stop();
      started.live = null;
      const { node, reconciler } = started;
      started.node = null;
      started.reconciler = null;
      // The data plane first (listeners and connections closed, an installed redirect deleted), then the agent.
      await node?.stop();
      await reconciler?.stop();
      stopMemoryPolicy();
    };
    let removeHandlers = () => {};
    const stopped = new Promise<number>((resolveCode) => {
      removeHandlers = onTermination(
        [
          {
            name: 'up',
            run: async () => {
              stopping = true;
              progress.clear();
              await stopStarted();
            },
          },
        ],
        {
          logger,
          exit: (c) => {
            removeHandlers();
            resolveCode(c);
            if (c !== EXIT_OK) setTimeout(() => process.exit(c), 500).unref();
          },
        },
      );
    });
    const finish = async (code: number | null) => {
      // A signal during a start step: what that step started is stopped here, after the handler ran.
      const c = code ?? (await stopped);
      await stopStarted();
      io.stderr('stopped\n');
      await new Promise<void>((r) => logStream.end(r));
      return c;
    };

    try {
      progress.step(`starting the reconciler on ${options.repo}${options.path ? ` (${options.path})` : ''}`);
      started.reconciler = await Reconciler.start({
        ...options,
        agents: { ...options.agents, host: agentListen.host, port: agentListen.port },
        logger,
        metrics,
      });
      const reconciler = started.reconciler;
      if (stopping) return finish(null);
      progress.step('first pass: fetching, validating and compiling the policy');
      await reconciler.idle();
      if (stopping) return finish(null);
      const group = values['daemon-group'] ?? (await daemonGroupOf(reconciler, progress, () => stopping));
      if (stopping) return finish(null);
      progress.step(`local agent: joining ${group ? `daemon group ${group}` : 'without a daemon group'}`);
      started.node = await startLocalNode(reconciler, {
        ...nodeOptions,
        stateDir: join(stateDir, 'agent'),
        group,
        controlRoot: values['control-root'] ? resolve(io.cwd, values['control-root']) : undefined,
        logger,
      });
      const { agent, addresses } = started.node;
      if (started.node.metrics) metrics.include(started.node.metrics);
      if (stopping) return finish(null);
      progress.step('local agent: enforcing the program');
      await inSync(reconciler, agent.identity.daemonId, 15_000);
      if (stopping) return finish(null);
      progress.done('riptides is up');

      const api = reconciler.api?.url ?? null;
      const upstreamCa = echo
        ? `${echo.certFile}  (the quickstart echo server's certificate; its key: ${echo.keyFile})`
        : values['upstream-ca']
          ? resolve(io.cwd, values['upstream-ca'])
          : 'the system trust store';
      const rows: Row[] = [
        [
          'policy',
          `${reconciler.repository.description}${reconciler.repository.branch ? ` (branch ${reconciler.repository.branch})` : ''}${options.path ? `, path ${options.path}` : ''}`,
        ],
        ...(reconciler.repository.notice ? [['warning', reconciler.repository.notice] as Row] : []),
        ['trust domain', reconciler.authority.trustDomain],
        ['API', api ? `${api}  (admin credential: ${join(stateDir, 'api', 'admin.token')})` : 'off'],
        ['metrics', api ? `${api}/metrics` : 'off'],
        ['agents', `${reconciler.agentAddress} (mutual TLS)`],
        ['agent', `${agent.identity.spiffeId}${group ? ` in ${group}` : ''}`],
        ['control root', addresses.controlRoot],
        ...dataPlaneRows(started.node, upstreamCa),
        ['reports', reconciler.drift.reportsDir],
        [
          'secrets',
          secretsDir ?? (values['secrets-dir'] ? resolve(io.cwd, values['secrets-dir']) : 'Kubernetes'),
        ],
        ['state', stateDir],
        ['logs', logFile],
      ];
      const width = Math.max(...rows.map(([k]) => k.length));
      out(`${rows.map(([k, v]) => `  ${k.padEnd(width)}  ${escapeText(v)}`).join('\n')}\n`);
      const sd = values['state-dir'] ? ` --state-dir ${escapeText(stateDir)}` : '';
      out(
        `\nTry: riptides-cli ctl get source${sd} · riptides-cli ctl get wid${sd} · riptides-cli drift${sd}\n`,
      );
      if (embedded)
        out('     policies/quickstart/README.md: the echo token, the demo servers, curl through the proxy\n');
      for (const c of reconciler.status().resources)
        if (c.kind === 'CredentialSource' && c.state !== 'AVAILABLE')
          out(`Note: CredentialSource ${escapeText(c.name)} is ${c.state}: ${escapeText(c.message ?? '')}\n`);
      out('\n');
      started.live = startLiveStatus(reconciler, io);
      return finish(await stopped);
    } catch (err) {
      progress.clear();
      removeHandlers();
      await stopStarted().catch(() => {});
      await new Promise<void>((r) => logStream.end(r));
      if (err instanceof AgentError && err.code === 'LISTEN_FAILED') {
        const flag = err.address ? flagListeningAt(node.values, err.address) : null;
        const hint = !flag
          ? ''
          : flag === '--proxy-listen' && node.defaulted.has('proxy-listen')
            ? " (the quickstart's default --proxy-listen: stop what holds the port, or pass --proxy-listen HOST:PORT)"
            : flag === '--inbound' && node.defaulted.has('inbound')
              ? " (the quickstart's default --inbound, at the address its Service quickstart-orders-api names: stop what holds the port, or pass --inbound identity=…,listen=HOST:PORT,forward=HOST:PORT and give the Service that address)"
              : ` (change ${flag})`;
        io.stderr(`riptides-cli up: ${escapeText(err.message)}${hint}\n`);
        return EXIT_USAGE;
      }
      if (err instanceof JoinError || err instanceof AgentError) {
        io.stderr(`riptides-cli up: the local agent could not start: ${escapeText(err.message)}\n`);
        return EXIT_USAGE;
      }
      throw err;
    }
  },
};

type Row = [string, string];

/** The printed rows of the node's data plane: its listeners as bound, what workloads and it trust. */
function dataPlaneRows(node: RunningNode, upstreamCa: string): Row[] {
  const a = node.addresses;
  const metrics: Row[] = a.metrics
    ? [
        [
          'node metrics',
          `http://${formatAddress(a.metrics.listen)}/metrics  (credential: ${a.metrics.credentialFile})`,
        ],
      ]
    : [];
  if (!node.dataPlane)
    return [['data plane', 'off (none of --proxy-listen, --transparent, --inbound, --outbound)'], ...metrics];
  const rows: Row[] = [];
  if (a.proxy) rows.push(['proxy', `${formatAddress(a.proxy)}  (for workloads' HTTPS_PROXY / http_proxy)`]);
  for (const [i, m] of a.inbound.entries())
    rows.push([
      i === 0 ? 'inbound' : '',
      `${formatAddress(m.listen)} -> ${formatAddress(m.forward)}  (${m.spiffeId})`,
    ]);
  for (const [i, m] of a.outbound.entries())
    rows.push([i === 0 ? 'outbound' : '', `${formatAddress(m.listen)} -> ${formatAddress(m.destination)}`]);
  if (a.transparent)
    rows.push([
      'transparent',
      `${formatAddress(a.transparent)}  (${node.nftRuleset() !== null ? 'nftables redirect installed' : 'nothing redirected here without --nftables or riptides-cli agent nft-rules'})`,
    ]);
  rows.push(['CA bundle', `${a.caBundle}  (what workloads trust for intercepted TLS)`]);
  rows.push(['upstream CA', upstreamCa]);
  return [...rows, ...metrics];
}

/** Resolves when the daemon enforces its desired program (ACKed), or after `ms`. */
async function inSync(reconciler: Reconciler, daemonId: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const a = reconciler.agents().find((x) => x.daemonId === daemonId);
    if (
      a?.connected &&
      a.desiredVersion !== '' &&
      a.ackedVersion === a.desiredVersion &&
      a.report?.programVersion === a.desiredVersion
    )
      return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The daemon group of the policy in force; waits for a revision that validates when there is none yet. */
async function daemonGroupOf(
  reconciler: Reconciler,
  progress: Progress,
  stopping: () => boolean,
): Promise<string | null> {
  const groups = () => {
    const programs = reconciler.desiredPrograms();
    if (!programs) return null;
    return [...programs.scopes.keys()]
      .filter((s) => s.startsWith('daemonGroup:'))
      .map((s) => s.slice('daemonGroup:'.length))
      .sort();
  };
  let found = groups();
  if (found === null) {
    const src = reconciler.status().source;
    const first = src?.diagnostics[0];
    progress.step(
      `waiting for a commit that validates${first ? ` (${first.file}:${first.line}: ${first.code} ${first.message})` : ''}`,
    );
    found = await new Promise<string[]>((resolveGroups) => {
      const timer = setInterval(() => stopping() && done([]), 200);
      const done = (g: string[]) => {
        clearInterval(timer);
        reconciler.off('pass', on);
        resolveGroups(g);
      };
      const on = () => {
        const g = groups();
        if (g) done(g);
      };
      reconciler.on('pass', on);
    });
  }
  if (found.length > 1)
    throw new UsageError(
      `the policy names several daemon groups (${found.join(', ')}): pass --daemon-group to say which the local agent joins`,
    );
  return found[0] ?? null;
}

/**
 * The local node (agent, kernel side, data plane: agent/start-node.ts), its agent joined to this reconciler:
 * resumed from its state directory when it joined before, else (or when its SVID expired while nothing ran)
 * joined with a single-use token made here, over loopback mTLS. Rejects as startNode does, having stopped
 * what it started.
 */
async function startLocalNode(
  reconciler: Reconciler,
  o: Omit<StartNodeOptions, 'server' | 'logger' | 'joinToken' | 'daemonGroup' | 'controlRoot'> & {
    group: string | null;
    controlRoot: string | undefined;
    logger: Logger;
  },
): Promise<RunningNode> {
  const { group, controlRoot, logger, ...rest } = o;
  const base: StartNodeOptions = {
    ...rest,
    server: reconciler.agentAddress,
    ...(group ? { daemonGroup: group } : {}),
    ...(controlRoot ? { controlRoot } : {}),
    // A local agent reports every 5 s (a remote one every 30 s), so a hand edit shows in drift within seconds.
    reportIntervalMs: 5000,
    logger: agentLogger(logger.child({ part: 'agent' })),
  };
  try {
    return await startNode(base);
  } catch (err) {
    if (!(err instanceof AgentError) || (err.code !== 'NOT_JOINED' && err.code !== 'SVID_EXPIRED')) throw err;
  }
  const joinToken = await reconciler.createJoinToken({
    ...(group ? { daemonGroup: group } : {}),
    ttlSeconds: 600,
  });
  return startNode({ ...base, joinToken });
}

/**
 * The live status line on stderr: on a terminal one line redrawn every second; elsewhere a line each time
 * the status (without its ages) changes.
 */
function startLiveStatus(reconciler: Reconciler, io: CommandIO): { stop(): void } {
  const tty = io.stderrTTY;
  let last = '';
  const draw = () => {
    const now = new Date();
    const drift = summarise(reconciler.drift.runner.compute().nodes);
    const snap = reconciler.status();
    const agents = reconciler.agents();
    if (tty) {
      const line = `● ${statusLine(snap, agents, drift, now)}`;
      const width = Math.max(10, tty.columns - 1);
      io.stderr(`\r\x1b[K${line.length > width ? `${line.slice(0, width - 1)}…` : line}`);
      return;
    }
    const stable = statusLine(snap, agents, drift, now, true);
    if (stable !== last) {
      last = stable;
      io.stderr(`${now.toISOString()} ${statusLine(snap, agents, drift, now)}\n`);
    }
  };
  draw();
  const timer = setInterval(draw, 1000);
  timer.unref();
  const onPass = () => draw();
  reconciler.on('pass', onPass);
  return {
    stop() {
      clearInterval(timer);
      reconciler.off('pass', onPass);
      if (tty) io.stderr('\r\x1b[K');
    },
  };
}
