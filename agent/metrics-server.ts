/**
 * The node's Prometheus endpoint (`riptides-cli agent --metrics-listen HOST:PORT`): `GET /metrics` with the
 * data plane's counters (kernel-module/dataplane/metrics.ts), a few gauges of the agent itself, and Node's
 * process metrics. Every request must carry `Authorization: Bearer <credential>`, the credential the agent
 * keeps in `<state-dir>/metrics.token` (0600, `rt_metrics_` + 256 random bits, made once; the reconciler's
 * metrics credential has the same shape), compared in constant time: a scrape config's
 * `authorization: { credentials_file: … }`. Anything else is 401 or 404. Plain HTTP: bind it to loopback or
 * a node-local interface.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { writeFileAtomic } from '../kernel-module/control/atomic.ts';
import type { Agent } from './agent.ts';

const TOKEN_FORMAT = /^rt_metrics_[A-Za-z0-9_-]{43}$/;

/** `<stateDir>/metrics.token`, created (0600) when absent or malformed. */
export async function ensureMetricsCredential(stateDir: string): Promise<{ path: string; token: string }> {
  const path = join(stateDir, 'metrics.token');
  const existing = (await readFile(path, 'utf8').catch(() => '')).trim();
  if (TOKEN_FORMAT.test(existing)) return { path, token: existing };
  const token = `rt_metrics_${randomBytes(32).toString('base64url')}`;
  await writeFileAtomic(path, `${token}\n`, 0o600);
  return { path, token };
}

/** The agent's own gauges, read at scrape time. */
export function agentRegistry(agent: Agent): Registry {
  const registry = new Registry();
  new Gauge({
    name: 'riptides_agent_connected',
    help: 'Whether the agent holds its Sync stream to the reconciler (1) or not (0).',
    registers: [registry],
    collect() {
      this.set(agent.connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'riptides_agent_program_identities',
    help: 'Identities in the program in force on this node.',
    registers: [registry],
    collect() {
      this.set(agent.program?.identities.size ?? 0);
    },
  });
  collectDefaultMetrics({ register: registry });
  return registry;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export interface MetricsServer {
  address: { host: string; port: number };
  /** Where the scrape credential is. */
  credentialFile: string;
  close(): Promise<void>;
}

export async function serveMetrics(opts: {
  host: string;
  port: number;
  stateDir: string;
  registries: Registry[];
}): Promise<MetricsServer> {
  const { path, token } = await ensureMetricsCredential(opts.stateDir);
  const expected = digest(`Bearer ${token}`);
  const registry = Registry.merge(opts.registries);
  const server: Server = createServer((req, res) => {
    const given = req.headers.authorization ?? '';
    if (!timingSafeEqual(digest(given), expected)) {
      res
        .writeHead(401, { 'www-authenticate': 'Bearer', 'content-type': 'text/plain' })
        .end('unauthorized\n');
      return;
    }
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const a = server.address() as { address: string; port: number };
  return {
    address: { host: a.address, port: a.port },
    credentialFile: path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
