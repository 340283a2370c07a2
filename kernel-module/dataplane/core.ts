/**
 * What the data plane's parts share: inputs, TLS contexts, the intercept minter, metrics, the connections
 * table, limits and the log. One object, made by DataPlane, handed to the outbound, inbound and HTTP parts.
 */
import type { LookupFunction } from 'node:net';
import type { Attributor } from './attribution.ts';
import type { ConnectionTable } from './connections.ts';
import type { DataPlaneInputs } from './inputs.ts';
import type { DataPlaneMetrics } from './metrics.ts';
import type { InterceptMinter } from './mint.ts';
import type { TlsContexts } from './tls-contexts.ts';

/** Time, memory and work budgets for anything a peer or an application controls. */
export interface Limits {
  /** A TLS handshake (either side) must finish within this. */
  handshakeTimeoutMs: number;
  /** How long to wait for a client's first bytes before deciding it speaks a server-first protocol. */
  sniffTimeoutMs: number;
  /** Connecting to an upstream or a peer data plane. */
  connectTimeoutMs: number;
  /** A managed-peer probe (mTLS handshake toward a destination of a mode-null rule). */
  probeTimeoutMs: number;
  /** How long a positive / negative managed-peer probe result is reused. */
  managedTtlMs: number;
  unmanagedTtlMs: number;
  /** An intercepted HTTP request's head must be complete within this (slowloris). */
  headersTimeoutMs: number;
  /**
   * An intercepted HTTP request, head and body, must be received within this (a slow body, a body buffered to
   * sign); like the head's, counted from the connection or the end of the previous exchange.
   */
  requestTimeoutMs: number;
  /** Idle intercepted HTTP connection, or an upstream response that stops coming. */
  idleTimeoutMs: number;
  /** Request head size cap (bytes). */
  maxHeaderBytes: number;
  /** A request body buffered to compute its SigV4 payload hash (bytes); larger → 413. */
  maxSignedBodyBytes: number;
  /**
   * All request bodies buffered to sign at once, over every connection (bytes): each connection may hold up to
   * `maxSignedBodyBytes`, so many at once would hold that many times over; past this budget → 503.
   */
  maxSignedBytesTotal: number;
  /**
   * An upstream's response head must arrive within this of the request head being written (a trickling
   * upstream that sends a byte now and then never trips `idleTimeoutMs`); → 504.
   */
  responseHeadTimeoutMs: number;
  /** How often live connections are re-checked against policy and peer certificate expiry. */
  revalidateIntervalMs: number;
  /**
   * How long an mTLS dial waits for the SVID of an identity that has none yet: a process that just started
   * is attested at once, but its SVID comes through a CSR to the reconciler a moment later.
   */
  svidWaitMs: number;
  /** CONNECT streams one pooled session carries at once; past it the pool opens another session. */
  muxMaxStreams: number;
  /** A pooled session with no stream for this long is closed (the server side waits twice as long). */
  muxIdleTimeoutMs: number;
  /** Per-stream flow-control window advertised by both sides (bytes); the session's window is 16 times it. */
  muxStreamWindowBytes: number;
  /**
   * Streams a peer may open on one pooled session per second, a second's worth at once (a token bucket); past
   * it the server closes the session with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
   */
  muxStreamsPerSecond: number;
}

export const DEFAULT_LIMITS: Limits = {
  handshakeTimeoutMs: 10_000,
  sniffTimeoutMs: 300,
  connectTimeoutMs: 10_000,
  probeTimeoutMs: 2_000,
  managedTtlMs: 600_000,
  unmanagedTtlMs: 30_000,
  headersTimeoutMs: 15_000,
  requestTimeoutMs: 60_000,
  idleTimeoutMs: 120_000,
  maxHeaderBytes: 16_384,
  maxSignedBodyBytes: 8 * 1024 * 1024,
  maxSignedBytesTotal: 64 * 1024 * 1024,
  responseHeadTimeoutMs: 120_000,
  revalidateIntervalMs: 1_000,
  svidWaitMs: 5_000,
  muxMaxStreams: 100,
  muxIdleTimeoutMs: 30_000,
  muxStreamWindowBytes: 256 * 1024,
  muxStreamsPerSecond: 10_000,
};

/** HTTP/2's largest flow-control window (RFC 9113 §6.9.1), which the session's 16 stream windows must fit. */
const MAX_WINDOW_BYTES = 2 ** 31 - 1;

/**
 * `limits` as given, or an Error naming the first limit out of range: every limit is a positive finite number,
 * `muxMaxStreams` a whole number (0 would advertise no stream at all, so that every pooled connection failed:
 * `pooledSessions: false` is the off switch), `muxStreamWindowBytes` a whole number whose 16 times fits an
 * HTTP/2 window.
 */
export function validateLimits(limits: Limits): Limits {
  if (!Number.isInteger(limits.muxMaxStreams) || limits.muxMaxStreams < 1)
    throw new Error(
      `data plane limit muxMaxStreams must be a whole number of streams, at least 1 (got ${limits.muxMaxStreams}); pooledSessions: false turns pooled sessions off`,
    );
  for (const [name, value] of Object.entries(limits))
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)
      throw new Error(`data plane limit ${name} must be a positive number (got ${String(value)})`);
  if (!Number.isInteger(limits.muxStreamWindowBytes) || limits.muxStreamWindowBytes * 16 > MAX_WINDOW_BYTES)
    throw new Error(
      `data plane limit muxStreamWindowBytes must be a whole number of bytes up to ${Math.floor(MAX_WINDOW_BYTES / 16)} (got ${limits.muxStreamWindowBytes})`,
    );
  return limits;
}

export interface LogEvent {
  level: 'info' | 'warn';
  /** A stable event name: `handshake-failed`, `connection-revoked`, `request-refused`, `passthrough`, … */
  event: string;
  [field: string]: unknown;
}

/**
 * A live connection, or a pooled session, re-checked at every input change and every `revalidateIntervalMs`:
 * `check` returns why it may no longer be used, or null. A connection is then closed and counted as revoked; a
 * session (`session: true`) is drained: no new stream, the streams it carries ended by their own guards.
 */
export interface Guard {
  direction: 'inbound' | 'outbound';
  check: () => string | null;
  close: (reason: string) => void;
  session?: boolean;
}

export interface Core {
  inputs: DataPlaneInputs;
  contexts: TlsContexts;
  minter: InterceptMinter;
  metrics: DataPlaneMetrics;
  table: ConnectionTable;
  attributor: Attributor;
  limits: Limits;
  /** Whether pooled sessions are offered and answered (`riptides-h2`); else `riptides` only. */
  pooledSessions: boolean;
  lookup: LookupFunction | undefined;
  log: (event: LogEvent) => void;
  /** Listener addresses of this data plane (`ip:port`), for loop detection. */
  ownAddresses: Set<string>;
  /** Live connections subject to revalidation; the checker returns a reason to close, or null. */
  guarded: Map<object, Guard>;
}
