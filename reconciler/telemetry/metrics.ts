/**
 * Every Prometheus metric of the reconciler, in one registry (prom-client), served at `/metrics`. Names follow
 * Prometheus conventions (`_seconds`, `_total`, `_info`); label values are bounded sets (results, reasons,
 * states, providers), never a resource name, so cardinality stays fixed whatever the repository holds.
 *
 * | metric | type | labels |
 * | --- | --- | --- |
 * | `riptides_reconcile_duration_seconds` | histogram | `result` (success, failed, stalled) |
 * | `riptides_applied_revision_info` | gauge (1) | `revision` (the one in force; the previous series is removed) |
 * | `riptides_applied_revision_timestamp_seconds` | gauge | |
 * | `riptides_triggers_total` / `riptides_triggers_coalesced_total` | counters | `source` / — |
 * | `riptides_webhook_requests_total` | counter | `provider`, `result` (accepted, ignored, duplicate, rejected) |
 * | `riptides_webhook_rejections_total` | counter | `provider`, `reason` (missing-signature, bad-signature, too-large, deadline, …) |
 * | `riptides_agents_connected` | gauge | |
 * | `riptides_program_pushes_total` / `riptides_program_nacks_total` | counters | — |
 * | `riptides_credential_sources` / `riptides_credential_bindings` | gauges | `state` (AVAILABLE, …; OK, FAILED, …) |
 * | `riptides_drift_items` | gauge | `kind` (missing, extra, changed, stale, unreachable, out-of-band) |
 * | `riptides_drift_reports_total` | counter | `result` (clean, drift, error) |
 * | `riptides_api_requests_total` | counter | `route`, `code` |
 * | `process_*`, `nodejs_*` | prom-client's default metrics | |
 * | `riptides_dataplane_*` | under `up`: its node's data plane (kernel-module/dataplane/metrics.ts, `include`) | |
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AgentServerCounters } from '../agents/server.ts';

const NO_AGENT_COUNTS: AgentCounters = {
  joins: 0,
  joinsRefused: {},
  syncRefused: {},
  messagesRefused: {},
  malformed: 0,
  svidsIssued: 0,
};

/** What the metrics read of the agent server's counters. */
type AgentCounters = Omit<AgentServerCounters, 'acks' | 'nacks'>;

import type { CredentialStatus } from '../credentials/types.ts';
import { DRIFT_KINDS, type DriftKind } from '../drift/report.ts';
import type { WebhookOutcome } from '../loop/webhook.ts';

const SOURCE_STATES = ['AVAILABLE', 'PENDING', 'ERROR'] as const;
const BINDING_STATES = ['OK', 'PENDING', 'FAILED'] as const;

export class ReconcilerMetrics {
  readonly registry = new Registry();
  /** Registries served beside this one (`include`). */
  readonly #included = new Set<Registry>();
  readonly reconcileDuration = new Histogram({
    name: 'riptides_reconcile_duration_seconds',
    help: 'Duration of reconcile passes, by result.',
    labelNames: ['result'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly appliedRevision = new Gauge({
    name: 'riptides_applied_revision_info',
    help: 'The policy revision in force (value 1).',
    labelNames: ['revision'] as const,
    registers: [this.registry],
  });
  readonly appliedTimestamp = new Gauge({
    name: 'riptides_applied_revision_timestamp_seconds',
    help: 'When the revision in force was applied, Unix seconds.',
    registers: [this.registry],
  });
  readonly triggers = new Counter({
    name: 'riptides_triggers_total',
    help: 'Requests for a reconcile pass, by source (webhook, poll, watch, api, …).',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly triggersCoalesced = new Counter({
    name: 'riptides_triggers_coalesced_total',
    help: 'Triggers absorbed into a pass already running or pending.',
    registers: [this.registry],
  });
  readonly webhookRequests = new Counter({
    name: 'riptides_webhook_requests_total',
    help: 'Webhook deliveries, by provider and result.',
    labelNames: ['provider', 'result'] as const,
    registers: [this.registry],
  });
  readonly webhookRejections = new Counter({
    name: 'riptides_webhook_rejections_total',
    help: 'Webhook deliveries refused, by provider and reason.',
    labelNames: ['provider', 'reason'] as const,
    registers: [this.registry],
  });
  readonly agentsConnected = new Gauge({
    name: 'riptides_agents_connected',
    help: 'Agents with an open stream.',
    registers: [this.registry],
  });
  readonly programPushes = new Counter({
    name: 'riptides_program_pushes_total',
    help: 'Node programs pushed to agents.',
    registers: [this.registry],
  });
  readonly programNacks = new Counter({
    name: 'riptides_program_nacks_total',
    help: 'Node programs refused by an agent (NACK).',
    registers: [this.registry],
  });
  readonly credentialSources = new Gauge({
    name: 'riptides_credential_sources',
    help: 'CredentialSources by state.',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly credentialBindings = new Gauge({
    name: 'riptides_credential_bindings',
    help: 'Credential bindings (source, workload) by state.',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly driftItems = new Gauge({
    name: 'riptides_drift_items',
    help: 'Items of the last drift report, by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly driftReports = new Counter({
    name: 'riptides_drift_reports_total',
    help: 'Drift reports made, by result (clean, drift, error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly apiRequests = new Counter({
    name: 'riptides_api_requests_total',
    help: 'Requests to the reconciler API, by route and status code.',
    labelNames: ['route', 'code'] as const,
    registers: [this.registry],
  });

  /** The agent server's counters, read at each scrape (followAgents). */
  #agentCounters: (() => AgentCounters) | null = null;
  readonly agentJoins = this.#agentCounter(
    'riptides_agent_joins_total',
    'Node agents that joined with a token.',
    (c) => ({ '': c.joins }),
  );
  readonly agentJoinsRefused = this.#agentCounter(
    'riptides_agent_joins_refused_total',
    'Join attempts refused, by reason (UNKNOWN, FORGED, EXPIRED, USED, RATE_LIMITED, ...).',
    (c) => c.joinsRefused,
  );
  readonly agentStreamsRefused = this.#agentCounter(
    'riptides_agent_streams_refused_total',
    'Sync streams refused, by reason (NOT_REGISTERED, BAD_SVID, NOT_AN_AGENT, ...).',
    (c) => c.syncRefused,
  );
  readonly agentMessagesRefused = this.#agentCounter(
    'riptides_agent_messages_refused_total',
    'Messages refused on established Sync streams, by reason (OUT_OF_SCOPE, RATE_LIMITED, LIMIT, ...; MALFORMED for those that do not decode).',
    (c) => ({ ...c.messagesRefused, MALFORMED: c.malformed }),
  );
  readonly agentSvidsIssued = this.#agentCounter(
    'riptides_agent_svids_issued_total',
    'X.509-SVIDs signed for agents over their Sync streams.',
    (c) => ({ '': c.svidsIssued }),
  );

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    for (const s of SOURCE_STATES) this.credentialSources.set({ state: s }, 0);
    for (const s of BINDING_STATES) this.credentialBindings.set({ state: s }, 0);
    for (const k of DRIFT_KINDS) this.driftItems.set({ kind: k }, 0);
    this.agentsConnected.set(0);
  }

  /** Counts one webhook delivery (and its rejection reason). */
  countWebhook(outcome: WebhookOutcome): void {
    const provider = outcome.provider ?? 'unknown';
    this.webhookRequests.inc({ provider, result: outcome.result });
    if (outcome.result === 'rejected') this.webhookRejections.inc({ provider, reason: outcome.reason });
  }

  /** Sets the revision in force; the previous revision's series disappears. */
  setAppliedRevision(revision: string, appliedAt: Date): void {
    this.appliedRevision.reset();
    this.appliedRevision.set({ revision }, 1);
    this.appliedTimestamp.set(appliedAt.getTime() / 1000);
  }

  /** Sets the credential gauges from the credential manager's status. */
  setCredentialStates(status: CredentialStatus): void {
    for (const s of SOURCE_STATES)
      this.credentialSources.set({ state: s }, status.sources.filter((x) => x.state === s).length);
    for (const s of BINDING_STATES)
      this.credentialBindings.set({ state: s }, status.bindings.filter((x) => x.state === s).length);
  }

  /** Reads the agent server's counters at every scrape from now on. */
  followAgents(counters: () => AgentCounters): void {
    this.#agentCounters = counters;
  }

  /**
   * A counter that mirrors the agent server's counts at each scrape (`pick`: by reason, or '' for a counter
   * without labels).
   */
  #agentCounter(name: string, help: string, pick: (c: AgentCounters) => Record<string, number>) {
    const read = () => this.#agentCounters?.() ?? null;
    const labelled = !('' in pick(NO_AGENT_COUNTS));
    return new Counter({
      name,
      help,
      labelNames: labelled ? ['reason'] : [],
      registers: [this.registry],
      collect(this: Counter<string>) {
        const counts = read();
        if (!counts) return;
        this.reset();
        for (const [reason, n] of Object.entries(pick(counts)))
          if (n > 0) labelled ? this.inc({ reason }, n) : this.inc(n);
      },
    });
  }

  /** Sets the drift gauges from a report's counts. */
  setDrift(counts: Partial<Record<DriftKind, number>>): void {
    for (const k of DRIFT_KINDS) this.driftItems.set({ kind: k }, counts[k] ?? 0);
  }

  /**
   * Serves `registry`'s metrics at `/metrics` too, until the returned function is called: `up` adds its
   * embedded node's data plane counters (`riptides_dataplane_*`), so one scrape sees the whole product. Names
   * must not clash with the reconciler's (prom-client's Registry.merge throws at the next scrape).
   */
  include(registry: Registry): () => void {
    this.#included.add(registry);
    return () => this.#included.delete(registry);
  }

  /** The exposition text and its content type, for `/metrics`. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    const registry = this.#included.size ? Registry.merge([this.registry, ...this.#included]) : this.registry;
    return { contentType: this.registry.contentType, body: await registry.metrics() };
  }
}
