/**
 * The data plane's flags, shared by every command that runs a node (`agent`, and `up` which embeds one):
 * listeners, inbound and outbound mappings, the upstream CA and the nftables redirect, parsed into
 * agent/start-node.ts options. One grammar: `HOST:PORT` (IPv6 as `[::1]:PORT`; port 0 lets the OS choose), and
 * mappings as comma-separated `key=value` pairs (as `docker run --mount` takes them).
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { InboundMapping, OutboundMapping, StartNodeOptions } from '../../agent/start-node.ts';
import { type CommandIO, UsageError } from './command.ts';
import { parseHostPort } from './state-dir.ts';

export const NODE_FLAGS = {
  'proxy-listen': { type: 'string' },
  transparent: { type: 'string' },
  nftables: { type: 'boolean' },
  'upstream-ca': { type: 'string' },
  inbound: { type: 'string', multiple: true },
  outbound: { type: 'string', multiple: true },
  'metrics-listen': { type: 'string' },
  'no-pooled-sessions': { type: 'boolean' },
} as const;

export const NODE_FLAGS_HELP = `Data plane (none of these: the node only programs the control interface):
  --proxy-listen HOST:PORT   HTTP proxy (CONNECT and plain HTTP) for workloads' HTTPS_PROXY / http_proxy
  --transparent HOST:PORT    listener for connections redirected by nftables (SO_ORIGINAL_DST)
  --nftables                 install the redirect for --transparent (table inet riptides: the program's
                             destinations only; the agent's own uid excluded), update it with the program,
                             delete it at exit; needs root. Without it, \`riptides-cli agent nft-rules\`
                             prints the rules to install yourself
  --upstream-ca FILE         PEM CA(s) that verify upstream servers, instead of the system trust store
  --inbound identity=ID,listen=HOST:PORT,forward=HOST:PORT
                             front a workload's port (repeatable): peers connect to listen (the address its
                             Service names), the identity's inbound mode applies (MUTUAL, PERMISSIVE,
                             SIMPLE), plaintext goes on to forward, where the workload listens; ID is a
                             workload ID (app/api) or a SPIFFE ID of the node's trust domain
  --outbound listen=HOST:PORT,destination=HOST:PORT
                             a local port standing for one destination (repeatable), for clients that can
                             use neither a proxy nor redirection
  --metrics-listen HOST:PORT serve GET /metrics (data plane counters, agent gauges) to callers that send
                             Authorization: Bearer <the credential in STATE_DIR/metrics.token>
  --no-pooled-sessions       mTLS between data planes one connection per application connection (ALPN
                             riptides only, offered and answered) instead of CONNECT streams of pooled
                             HTTP/2 sessions (riptides-h2)`;

export interface NodeFlagValues {
  'proxy-listen'?: string | undefined;
  transparent?: string | undefined;
  nftables?: boolean | undefined;
  'upstream-ca'?: string | undefined;
  inbound?: string[] | undefined;
  outbound?: string[] | undefined;
  'metrics-listen'?: string | undefined;
  'no-pooled-sessions'?: boolean | undefined;
}

function address(text: string, flag: string): { host: string; port: number } {
  const a = parseHostPort(text);
  if (!a) throw new UsageError(`${flag} must be HOST:PORT (got "${text}")`);
  return a;
}

/** `k=v,k=v` with exactly the keys `keys`; a usage error names the flag, the key and what was given. */
function pairs<K extends string>(text: string, flag: string, keys: readonly K[]): Record<K, string> {
  const out: Partial<Record<K, string>> = {};
  const shape = keys.map((k) => `${k}=…`).join(',');
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const key = part.slice(0, eq).trim() as K;
    if (eq <= 0 || !keys.includes(key))
      throw new UsageError(`${flag} takes ${shape}; "${part}" is not one of ${keys.join(', ')}`);
    if (out[key] !== undefined) throw new UsageError(`${flag}: ${key} given twice in "${text}"`);
    out[key] = part.slice(eq + 1).trim();
  }
  const missing = keys.filter((k) => !out[k]);
  if (missing.length) throw new UsageError(`${flag} "${text}" lacks ${missing.join(', ')} (${shape})`);
  return out as Record<K, string>;
}

export function parseInbound(text: string): InboundMapping {
  const p = pairs(text, '--inbound', ['identity', 'listen', 'forward'] as const);
  return {
    identity: p.identity,
    listen: address(p.listen, '--inbound listen'),
    forward: address(p.forward, '--inbound forward'),
  };
}

export function parseOutbound(text: string): OutboundMapping {
  const p = pairs(text, '--outbound', ['listen', 'destination'] as const);
  const d = address(p.destination, '--outbound destination');
  if (d.port === 0) throw new UsageError('--outbound destination needs a port other than 0');
  return { listen: address(p.listen, '--outbound listen'), destination: d };
}

/** The data plane part of startNode's options; reads --upstream-ca (a usage error when it holds no certificate). */
export async function nodeOptionsFromFlags(
  values: NodeFlagValues,
  io: CommandIO,
): Promise<
  Pick<
    StartNodeOptions,
    | 'proxyListen'
    | 'transparentListen'
    | 'installNftables'
    | 'upstreamCa'
    | 'inbound'
    | 'outbound'
    | 'metricsListen'
    | 'pooledSessions'
  >
> {
  if (values.nftables && !values.transparent)
    throw new UsageError('--nftables redirects to the --transparent listener: give --transparent HOST:PORT');
  let upstreamCa: string | null = null;
  if (values['upstream-ca']) {
    try {
      upstreamCa = await readFile(resolve(io.cwd, values['upstream-ca']), 'utf8');
    } catch (err) {
      throw new UsageError(
        `cannot read --upstream-ca ${values['upstream-ca']}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      );
    }
    try {
      new X509Certificate(upstreamCa);
    } catch {
      throw new UsageError(`--upstream-ca ${values['upstream-ca']} holds no PEM certificate`);
    }
  }
  return {
    proxyListen: values['proxy-listen'] ? address(values['proxy-listen'], '--proxy-listen') : null,
    transparentListen: values.transparent ? address(values.transparent, '--transparent') : null,
    installNftables: values.nftables === true,
    upstreamCa,
    inbound: (values.inbound ?? []).map(parseInbound),
    outbound: (values.outbound ?? []).map(parseOutbound),
    metricsListen: values['metrics-listen'] ? address(values['metrics-listen'], '--metrics-listen') : null,
    pooledSessions: values['no-pooled-sessions'] !== true,
  };
}

/**
 * The flag (`--proxy-listen`, `--transparent`, `--inbound`, `--outbound`, `--metrics-listen`) that asked for a
 * listener on `at`, so that an address in use is reported with what to change; null when none did (port 0,
 * which the OS chooses, never collides). Matched by port, then by host where several share the port.
 */
export function flagListeningAt(values: NodeFlagValues, at: { host: string; port: number }): string | null {
  const asked: Array<[string, string | undefined]> = [
    ['--proxy-listen', values['proxy-listen']],
    ['--transparent', values.transparent],
    ['--metrics-listen', values['metrics-listen']],
    ...(values.inbound ?? []).map((m): [string, string | undefined] => [
      '--inbound',
      /(?:^|,)\s*listen=([^,]*)/.exec(m)?.[1]?.trim(),
    ]),
    ...(values.outbound ?? []).map((m): [string, string | undefined] => [
      '--outbound',
      /(?:^|,)\s*listen=([^,]*)/.exec(m)?.[1]?.trim(),
    ]),
  ];
  const hits = asked.flatMap(([flag, text]) => {
    const a = text ? parseHostPort(text) : null;
    return a && a.port !== 0 && a.port === at.port ? [{ flag, host: a.host }] : [];
  });
  return (hits.find((h) => h.host === at.host) ?? hits[0])?.flag ?? null;
}
