/**
 * Prometheus metrics of the data plane (prom-client, on a registry of its own so that several data planes in
 * one process, and the embedder's own metrics, do not collide). Label values come from a closed set or from
 * the program (binding names), never from the network.
 */
import { Counter, Gauge, Registry } from 'prom-client';

export class DataPlaneMetrics {
  readonly registry = new Registry();
  readonly connections = new Counter({
    name: 'riptides_dataplane_connections_total',
    help: 'Connections handled, by direction and what was done with them',
    labelNames: ['direction', 'mode'] as const,
    registers: [this.registry],
  });
  readonly active = new Gauge({
    name: 'riptides_dataplane_connections_active',
    help: 'Live connections, by direction',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  readonly handshakesFailed = new Counter({
    name: 'riptides_dataplane_handshakes_failed_total',
    help: 'TLS handshakes refused or failed, by direction and reason',
    labelNames: ['direction', 'reason'] as const,
    registers: [this.registry],
  });
  readonly credentialsInjected = new Counter({
    name: 'riptides_dataplane_credentials_injected_total',
    help: 'Requests that left with a credential injected (Bearer or SigV4), by binding',
    labelNames: ['kind', 'binding'] as const,
    registers: [this.registry],
  });
  readonly requestsRefused = new Counter({
    name: 'riptides_dataplane_requests_refused_total',
    help: 'Intercepted HTTP requests refused, by reason (credential-unavailable, bad-request, pipelining, …)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly revoked = new Counter({
    name: 'riptides_dataplane_connections_revoked_total',
    help: 'Live connections closed because policy no longer allows their peer',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
}
