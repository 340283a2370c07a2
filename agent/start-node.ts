/**
 * A whole node in one call: the agent (join or resume, Sync stream, attestation, SVIDs, credentials), the
 * kernel side it runs (kernel-module/control), and the data plane (kernel-module/dataplane) reading that
 * kernel side and the agent's in-memory credential store. What `riptides-cli agent` runs, and what
 * `riptides-cli up` embeds beside its reconciler.
 *
 *   const node = await startNode({ stateDir, server: '127.0.0.1:9443', joinToken,
 *                                  proxyListen: { host: '127.0.0.1', port: 15001 },
 *                                  inbound: [{ identity: 'app/api', listen: …, forward: … }] });
 *   node.addresses;   // where everything listens (ports as bound), the control root, the CA bundle to trust
 *   await node.stop();
 *
 * The data plane follows the node by itself: a program the agent ACKs, a new SVID and a trust bundle reach
 * it through the kernel side's `enforced` event, a credential rotation through the store's `change`; the next
 * connection (the next request, for injection) uses them, and live connections a change no longer allows
 * are closed. A process that connects before the agent attested it is attested on demand.
 */
import type { Registry } from 'prom-client';
import { ControlPaths, type ProcessRecord } from '../kernel-module/control/abi.ts';
import { ControlInputs } from '../kernel-module/dataplane/control-inputs.ts';
import type { Limits, LogEvent } from '../kernel-module/dataplane/core.ts';
import { DataPlane, type ListenAddress } from '../kernel-module/dataplane/dataplane.ts';
import type { ProcessIdentity } from '../kernel-module/dataplane/inputs.ts';
import { countersOf } from '../kernel-module/dataplane/metrics.ts';
import { NftRedirect } from '../kernel-module/dataplane/nft-rules.ts';
import { parseSpiffeId, workloadSpiffeId } from '../kernel-module/spiffe-id.ts';
import { Agent, AgentError, type AgentLogger, type AgentOptions } from './agent.ts';
import { agentRegistry, type MetricsServer, serveMetrics } from './metrics-server.ts';
import type { DataPlaneState } from './protocol/messages.ts';

export type { ListenAddress } from '../kernel-module/dataplane/dataplane.ts';

/** A data plane listener in front of a workload's port (README "Inbound fronting"). */
export interface InboundMapping {
  /** The workload's identity: a SPIFFE ID of the agent's trust domain, or a workload ID (`app/api`). */
  identity: string;
  /** Where peers connect (the address its Service names). */
  listen: ListenAddress;
  /** Where the workload itself listens, reached in plaintext (normally on loopback). */
  forward: ListenAddress;
}

/** A local port standing for one destination, for clients that can use neither a proxy nor redirection. */
export interface OutboundMapping {
  listen: ListenAddress;
  destination: { host: string; port: number };
}

export interface StartNodeOptions extends Omit<AgentOptions, 'kernelSide'> {
  /** HTTP proxy (CONNECT and plain HTTP) that workloads' `HTTP(S)_PROXY` point at. */
  proxyListen?: ListenAddress | null;
  /** Transparent listener: where nftables redirects workloads' connections. */
  transparentListen?: ListenAddress | null;
  /**
   * Install the nftables redirect (table `inet riptides`) for the transparent listener, kept in line with the
   * program and deleted at stop. Needs CAP_NET_ADMIN and `nft`. Default false: the rules are the operator's
   * (`riptides-cli agent nft-rules` prints them).
   */
  installNftables?: boolean;
  /** PEM trusted for upstream TLS instead of the system store. */
  upstreamCa?: string | null;
  inbound?: InboundMapping[];
  outbound?: OutboundMapping[];
  /** The data plane's budgets (kernel-module/dataplane/core.ts). */
  limits?: Partial<Limits>;
  /** Pooled mTLS sessions between data planes (`riptides-h2`); false: one connection each. Default true. */
  pooledSessions?: boolean;
  /**
   * Serve `GET /metrics` here (agent/metrics-server.ts: the data plane's counters, the agent's gauges, Node's
   * process metrics), behind the bearer credential in `<stateDir>/metrics.token`. Default: not served.
   */
  metricsListen?: ListenAddress | null;
}

export interface NodeAddresses {
  /** The control interface's root. */
  controlRoot: string;
  /** What applications trust for intercepted TLS: system roots + the intercept CA + the trust bundle. */
  caBundle: string;
  proxy: ListenAddress | null;
  transparent: ListenAddress | null;
  inbound: Array<{ spiffeId: string; listen: ListenAddress; forward: ListenAddress }>;
  outbound: Array<{ listen: ListenAddress; destination: { host: string; port: number } }>;
  /** The metrics endpoint and the file holding its scrape credential, when served. */
  metrics: { listen: ListenAddress; credentialFile: string } | null;
}

export interface RunningNode {
  readonly agent: Agent;
  /** Null when no listener was asked for (an agent that only programs the control interface). */
  readonly dataPlane: DataPlane | null;
  readonly addresses: NodeAddresses;
  /** The data plane's Prometheus registry (merge it into the embedder's /metrics), or null. */
  readonly metrics: Registry | null;
  /** The nftables ruleset in force when `installNftables`, else null. */
  nftRuleset(): string | null;
  /** Stops the data plane (listeners and live connections), removes installed rules, then the agent. */
  stop(): Promise<void>;
}

const SILENT: AgentLogger = { info() {}, warn() {}, error() {} };

export function formatAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** An inbound mapping's identity → its SPIFFE ID in `trustDomain`; throws AgentError('BAD_INBOUND'). */
export function inboundSpiffeId(identity: string, trustDomain: string): string {
  const parsed = identity.startsWith('spiffe://')
    ? parseSpiffeId(identity)
    : workloadSpiffeId(trustDomain, identity.replace(/^\/+/, ''));
  if (!parsed.ok)
    throw new AgentError('BAD_INBOUND', `inbound identity "${identity}" is not valid: ${parsed.message}`);
  if (parsed.id.trustDomain !== trustDomain)
    throw new AgentError(
      'BAD_INBOUND',
      `inbound identity ${identity} is in trust domain ${parsed.id.trustDomain}, this node's is ${trustDomain}`,
    );
  return `spiffe://${parsed.id.trustDomain}${parsed.id.path}`;
}

/**
 * Data plane events → the agent's log (metadata only: the data plane never puts a value in an event). An event's
 * `pid` is the workload's: logged as `workloadPid`, since every log line carries the agent's own `pid` (two `pid`
 * keys in one line, found by review).
 */
export function dataPlaneLog(log: AgentLogger) {
  return (e: LogEvent) => {
    const { level, event, pid, ...rest } = e;
    const fields = pid === undefined ? rest : { ...rest, workloadPid: pid };
    (level === 'warn' ? log.warn : log.info)(`data plane: ${event}`, fields);
  };
}

function processIdentity(a: ProcessRecord | null): ProcessIdentity | null {
  if (!a) return null;
  return {
    spiffeId: a.spiffeId,
    destinationPorts: a.destinationPorts,
    conflict: a.conflict,
    ...(a.routes ? { routes: a.routes } : {}),
  };
}

/**
 * Starts the agent, then the data plane on its kernel side. Rejects with AgentError (`NOT_JOINED`,
 * `SVID_EXPIRED`, `GROUP_MISMATCH`, `BAD_INBOUND`, `LISTEN_FAILED`, `NFT_FAILED`), JoinError, or an I/O
 * error; whatever started is stopped again first.
 */
export async function startNode(opts: StartNodeOptions): Promise<RunningNode> {
  const log = opts.logger ?? SILENT;
  const agent = await Agent.start({ ...opts, kernelSide: true });
  const controlRoot = agent.node.writer.root;
  const module = agent.node.module!;
  let dataPlane: DataPlane | null = null;
  let nft: NftRedirect | null = null;
  let nftRuleset: string | null = null;
  let metricsServer: MetricsServer | null = null;
  let stopped = false;
  const onEnforced = () => {
    if (!nft || stopped) return;
    nft.apply(module.current()?.table ?? null).then(
      (r) => {
        if (r !== nftRuleset) log.info('nftables redirect updated for the program in force');
        nftRuleset = r;
      },
      (err: Error) =>
        log.warn('nftables redirect could not be updated: the previous rules stay', { reason: err.message }),
    );
  };
  const stopAll = async () => {
    stopped = true;
    module.off('enforced', onEnforced);
    await metricsServer?.close();
    await dataPlane?.stop();
    await nft
      ?.remove()
      .catch((err: Error) => log.warn('could not delete the nftables redirect', { reason: err.message }));
    await agent.stop();
  };
  try {
    const addresses: NodeAddresses = {
      controlRoot,
      caBundle: `${controlRoot}/${ControlPaths.caBundle}`,
      proxy: null,
      transparent: null,
      inbound: [],
      outbound: [],
      metrics: null,
    };
    const wantsPlane =
      !!opts.proxyListen ||
      !!opts.transparentListen ||
      (opts.inbound?.length ?? 0) > 0 ||
      (opts.outbound?.length ?? 0) > 0;
    if (wantsPlane) {
      dataPlane = await startDataPlane(agent, opts, log, addresses);
      if (opts.installNftables) {
        if (!addresses.transparent)
          throw new AgentError('NFT_FAILED', 'nftables rules redirect to the transparent listener: set one');
        nft = new NftRedirect({
          transparentPort: addresses.transparent.port,
          excludeUid: process.getuid?.() ?? 0,
        });
        try {
          nftRuleset = await nft.apply(module.current()?.table ?? null);
        } catch (err) {
          throw new AgentError(
            'NFT_FAILED',
            `cannot install the nftables redirect: ${(err as Error).message}`,
          );
        }
        module.on('enforced', onEnforced);
      }
    }
    if (opts.metricsListen) {
      try {
        metricsServer = await serveMetrics({
          ...opts.metricsListen,
          stateDir: opts.stateDir,
          registries: [agentRegistry(agent), ...(dataPlane ? [dataPlane.metrics.registry] : [])],
        });
      } catch (err) {
        throw listenFailed(err, 'the metrics endpoint');
      }
      addresses.metrics = { listen: metricsServer.address, credentialFile: metricsServer.credentialFile };
    }
    if (dataPlane)
      log.info('data plane listening', {
        proxy: addresses.proxy ? formatAddress(addresses.proxy) : null,
        transparent: addresses.transparent ? formatAddress(addresses.transparent) : null,
        inbound: addresses.inbound.map(
          (m) => `${formatAddress(m.listen)} (${m.spiffeId} -> ${formatAddress(m.forward)})`,
        ),
        outbound: addresses.outbound.map(
          (m) => `${formatAddress(m.listen)} -> ${formatAddress(m.destination)}`,
        ),
        nftables: nft ? 'installed' : null,
      });
    let stopping: Promise<void> | null = null;
    return {
      agent,
      dataPlane,
      addresses,
      metrics: dataPlane?.metrics.registry ?? null,
      nftRuleset: () => nftRuleset,
      stop: () => {
        stopping ??= stopAll();
        return stopping;
      },
    };
  } catch (err) {
    await stopAll().catch(() => {});
    throw err;
  }
}

function listenFailed(err: unknown, what: string): AgentError {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  const why =
    e.code === 'EADDRINUSE'
      ? 'address already in use'
      : e.code === 'EACCES'
        ? 'permission denied'
        : e.message;
  return new AgentError(
    'LISTEN_FAILED',
    `${what} cannot listen on ${e.address ?? '?'}:${e.port ?? '?'}: ${why}`,
    e.address !== undefined && e.port !== undefined ? { host: e.address, port: e.port } : null,
  );
}

/** The data plane on the agent's kernel side and credential store; fills `addresses` with what it bound. */
async function startDataPlane(
  agent: Agent,
  opts: StartNodeOptions,
  log: AgentLogger,
  addresses: NodeAddresses,
): Promise<DataPlane> {
  const inbound = (opts.inbound ?? []).map((m) => ({
    spiffeId: inboundSpiffeId(m.identity, agent.identity.trustDomain),
    listen: m.listen,
    forward: m.forward,
  }));
  // A process that connects before the agent attested it (a client that just started) is attested now.
  const inputs = new ControlInputs(agent.node.module!, agent.node.credentials, async (pid) =>
    processIdentity(await agent.node.attestor.resolve(pid)),
  );
  const plane = new DataPlane({
    inputs,
    proxyListen: opts.proxyListen ?? null,
    transparentListen: opts.transparentListen ?? null,
    inbound,
    outbound: opts.outbound ?? [],
    upstreamCa: opts.upstreamCa ?? null,
    connectionsFile: `${addresses.controlRoot}/${ControlPaths.connections}`,
    ...(opts.procRoot ? { procRoot: opts.procRoot } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.pooledSessions === false ? { pooledSessions: false } : {}),
    log: dataPlaneLog(log),
  });
  let bound: Awaited<ReturnType<DataPlane['start']>>;
  try {
    bound = await plane.start();
  } catch (err) {
    throw listenFailed(err, 'the data plane');
  }
  addresses.proxy = bound.proxy;
  addresses.transparent = bound.transparent;
  addresses.inbound = inbound.map((m, i) => ({ ...m, listen: bound.inbound[i]! }));
  addresses.outbound = (opts.outbound ?? []).map((m, i) => ({ ...m, listen: bound.outbound[i]! }));
  const listeners = [
    ...(bound.proxy ? [{ kind: 'proxy', address: formatAddress(bound.proxy), target: '' }] : []),
    ...(bound.transparent
      ? [{ kind: 'transparent', address: formatAddress(bound.transparent), target: '' }]
      : []),
    ...addresses.outbound.map((m) => ({
      kind: 'outbound',
      address: formatAddress(m.listen),
      target: formatAddress(m.destination),
    })),
    ...addresses.inbound.map((m) => ({
      kind: 'inbound',
      address: formatAddress(m.listen),
      target: `${m.spiffeId} -> ${formatAddress(m.forward)}`,
    })),
  ];
  agent.setDataPlaneState(async (): Promise<DataPlaneState> => {
    const c = await countersOf(plane.metrics);
    return {
      health: plane.addresses() ? 'OK' : 'STOPPED',
      listeners,
      activeOutbound: c.active.outbound,
      activeInbound: c.active.inbound,
      connections: c.connections,
      handshakesFailed: c.handshakesFailed,
      credentialsInjected: c.credentialsInjected,
      requestsRefused: c.requestsRefused,
      connectionsRevoked: c.revoked,
    };
  });
  return plane;
}
