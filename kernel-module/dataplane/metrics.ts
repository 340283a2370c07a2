/**
 * Prometheus metrics of the data plane (prom-client, on a registry of its own so that several data planes in
 * one process, and the embedder's own metrics, do not collide). Label values come from a closed set or from
 * the program (binding names), never from the network.
 */
import { Counter, Gauge, Registry } from 'prom-client';

export class DataPlaneMetrics {
  readonly registry = new Registry();

  /**
   * One request left with the credential of `ref` (a binding: `kind` bearer or aws, `name`) injected. A binding
   * object is kept across requests until the policy changes: its tally is found by identity, with no key built.
   */
  injected(ref: { readonly kind: string; readonly name: string }): void {
    let pending = this.injectedByRef.get(ref);
    if (!pending) {
      const key = `${ref.kind}\0${ref.name}`;
      pending = this.injectedPending.get(key) ?? { kind: ref.kind, binding: ref.name, n: 0 };
      this.injectedPending.set(key, pending);
      this.injectedByRef.set(ref, pending);
    }
    pending.n++;
  }

  private flushInjected(): void {
    for (const p of this.injectedPending.values()) {
      if (p.n) this.credentialsInjected.inc({ kind: p.kind, binding: p.binding }, p.n);
      p.n = 0;
    }
  }

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
  /**
   * Counts since the last collection, per (kind, binding): injection is per request, and a labelled `inc` hashes
   * its labels each time; these are added to the counter when it is read (`collect`, run by every `get`).
   */
  private readonly injectedPending = new Map<string, { kind: string; binding: string; n: number }>();
  private readonly injectedByRef = new WeakMap<object, { kind: string; binding: string; n: number }>();
  readonly credentialsInjected = new Counter({
    name: 'riptides_dataplane_credentials_injected_total',
    help: 'Requests that left with a credential injected (Bearer or SigV4), by binding',
    labelNames: ['kind', 'binding'] as const,
    registers: [this.registry],
    collect: () => this.flushInjected(),
  });
  readonly requestsRefused = new Counter({
    name: 'riptides_dataplane_requests_refused_total',
    help: 'Intercepted HTTP requests refused, by reason (credential-unavailable, bad-request, pipelining, …)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly mtlsSessions = new Counter({
    name: 'riptides_dataplane_mtls_sessions_total',
    help: 'mTLS handshakes completed between data planes, by direction and ALPN protocol (riptides-h2: a pooled session carrying many connections; riptides: one connection)',
    labelNames: ['direction', 'protocol'] as const,
    registers: [this.registry],
  });
  readonly streams = new Counter({
    name: 'riptides_dataplane_mux_streams_total',
    help: 'Application connections carried as CONNECT streams, by direction and session (new: the session was opened for it; reused: it was already open)',
    labelNames: ['direction', 'session'] as const,
    registers: [this.registry],
  });
  readonly streamsRefused = new Counter({
    name: 'riptides_dataplane_streams_refused_total',
    help: 'CONNECT streams refused on a pooled session, by direction and reason (not-allowed, not-fronted, expired, …)',
    labelNames: ['direction', 'reason'] as const,
    registers: [this.registry],
  });
  readonly sessionsClosed = new Counter({
    name: 'riptides_dataplane_mux_sessions_closed_total',
    help: "Pooled sessions closed for their peer's behaviour, by direction and reason (stream-rate: streams opened too fast; error: closed by HTTP/2 itself, e.g. its flood protection; peer-goaway: the peer closed it with an error code; preface-timeout: no HTTP/2 preface in the handshake deadline)",
    labelNames: ['direction', 'reason'] as const,
    registers: [this.registry],
  });
  readonly revoked = new Counter({
    name: 'riptides_dataplane_connections_revoked_total',
    help: 'Live connections closed because policy no longer allows their peer',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
}

/** The counters of one data plane, read from its metrics: what an agent reports upstream. */
export interface DataPlaneCounters {
  active: { outbound: number; inbound: number };
  /** `<direction>/<mode>` → connections handled. */
  connections: Record<string, number>;
  /** `<direction>/<reason>` → TLS handshakes refused or failed. */
  handshakesFailed: Record<string, number>;
  /** Binding name → requests that left with its credential (Bearer and SigV4 together). */
  credentialsInjected: Record<string, number>;
  /** Reason → intercepted requests refused. */
  requestsRefused: Record<string, number>;
  /** Live connections closed because policy no longer allowed them (both directions). */
  revoked: number;
}

type Values = Awaited<ReturnType<Counter['get']>>['values'];

function tally(values: Values, key: (labels: Values[number]['labels']) => string) {
  const out: Record<string, number> = {};
  for (const v of values) {
    if (!v.value) continue;
    const k = key(v.labels);
    out[k] = (out[k] ?? 0) + v.value;
  }
  return out;
}

/** A snapshot of `metrics`' counters (values since the data plane started). */
export async function countersOf(metrics: DataPlaneMetrics): Promise<DataPlaneCounters> {
  const [connections, active, failed, injected, refused, revoked] = await Promise.all([
    metrics.connections.get(),
    metrics.active.get(),
    metrics.handshakesFailed.get(),
    metrics.credentialsInjected.get(),
    metrics.requestsRefused.get(),
    metrics.revoked.get(),
  ]);
  const gauge = (direction: string) =>
    active.values.find((v) => v.labels.direction === direction)?.value ?? 0;
  return {
    active: { outbound: gauge('outbound'), inbound: gauge('inbound') },
    connections: tally(connections.values, (l) => `${l.direction}/${l.mode}`),
    handshakesFailed: tally(failed.values, (l) => `${l.direction}/${l.reason}`),
    credentialsInjected: tally(injected.values, (l) => String(l.binding)),
    requestsRefused: tally(refused.values, (l) => String(l.reason)),
    revoked: revoked.values.reduce((n, v) => n + v.value, 0),
  };
}
