/**
 * The agent's end of the Sync stream: connects over mutual TLS, opens every stream with a Hello built from
 * what the agent holds (so the reconciler sends only the difference), hands each message to a handler, and
 * reconnects with backoff and jitter whenever the stream ends. Program updates are applied one at a time,
 * in order, and answered with the ACK/NACK the handler decides.
 */
import type * as grpc from '@grpc/grpc-js';
import { type BackoffOptions, backoffDelay, DEFAULT_RECONNECT_BACKOFF } from './backoff.ts';
import { type AgentServiceStub, type ChannelIdentity, verifiedClient } from './connection.ts';
import type {
  AgentMessage,
  ControlRepair,
  CredentialUpdate,
  Hello,
  Out,
  ProgramAck,
  ProgramUpdate,
  Refusal,
  ServerMessage,
  SvidResponse,
  TrustBundle,
} from './protocol/messages.ts';
import { grpcErrorText } from './protocol/wire.ts';

export interface SyncHandler {
  /** The Hello for a new stream: what the agent holds right now. */
  hello(): Out<Hello>;
  /** Applies (or refuses) an update; the answer goes back as the ACK/NACK. */
  program(update: ProgramUpdate): Promise<Out<ProgramAck>>;
  svid(response: SvidResponse): void;
  credentials(update: CredentialUpdate): void;
  bundle(bundle: TrustBundle): void;
  refusal(refusal: Refusal): void;
  /** Put the control interface back as the agent wrote it (a drift heal). */
  repair(request: ControlRepair): void;
  connected(): void;
  disconnected(reason: string): void;
  /** A stream that ended before the reconciler accepted it (unreachable, refused): why, before a retry. */
  failed?(reason: string): void;
}

export interface SyncClientOptions {
  server: string;
  /** Read at every connect, so a renewed SVID or bundle is used from the next stream on. */
  identity: () => ChannelIdentity;
  handler: SyncHandler;
  backoff?: BackoffOptions;
}

/** A stream that lasted this long resets the backoff. */
const HEALTHY_STREAM_MS = 10_000;

export class SyncClient {
  private client: AgentServiceStub | null = null;
  private call: grpc.ClientDuplexStream<unknown, unknown> | null = null;
  private stopped = true;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private programs: Promise<void> = Promise.resolve();
  private streamStart = 0;
  private live = false;
  private readonly backoff: BackoffOptions;

  constructor(private readonly opts: SyncClientOptions) {
    this.backoff = opts.backoff ?? DEFAULT_RECONNECT_BACKOFF;
  }

  get connected(): boolean {
    return this.live;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  /** Sends a message on the current stream; false when there is none (the caller retries after reconnect). */
  send(m: Out<AgentMessage>): boolean {
    if (!this.call || !this.live) return false;
    this.call.write(m);
    return true;
  }

  /** Ends the current stream and connects again at once (new credentials, or a forced resync). */
  reconnect(): void {
    if (this.stopped) return;
    this.teardown('reconnecting with new credentials');
    this.attempt = 0;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.teardown('agent stopping');
  }

  private teardown(reason: string): void {
    const call = this.call;
    const client = this.client;
    this.call = null;
    this.client = null;
    if (this.live) {
      this.live = false;
      this.opts.handler.disconnected(reason);
    }
    call?.removeAllListeners();
    call?.on('error', () => {});
    call?.cancel();
    client?.close();
  }

  private connect(): void {
    if (this.stopped) return;
    const client = verifiedClient(this.opts.server, this.opts.identity());
    const call = client.Sync();
    this.client = client;
    this.call = call;
    this.streamStart = performance.now();
    let ended = false;
    const onEnd = (reason: string) => {
      if (ended || this.call !== call) return;
      ended = true;
      const wasLive = this.live;
      this.teardown(reason);
      if (!wasLive) this.opts.handler.failed?.(reason);
      // Only a stream that stayed up resets the backoff: one accepted and then ended at once (an evicted
      // daemon, two nodes sharing one identity) must not reconnect at the fastest rate forever.
      if (performance.now() - this.streamStart > HEALTHY_STREAM_MS) this.attempt = 0;
      this.scheduleReconnect();
    };
    call.on('data', (m: ServerMessage) => {
      if (!this.live) {
        this.live = true;
        this.opts.handler.connected();
      }
      this.dispatch(m);
    });
    call.on('error', (err: grpc.ServiceError) => onEnd(grpcErrorText(err)));
    call.on('end', () => onEnd('the reconciler ended the stream'));
    call.on('status', (s: grpc.StatusObject) => {
      if (s.code !== 0) onEnd(grpcErrorText(s));
    });
    // The stream counts as live once the reconciler answers (or accepts the Hello without answering).
    call.on('metadata', () => {
      if (!this.live && this.call === call) {
        this.live = true;
        this.opts.handler.connected();
      }
    });
    call.write({ hello: this.opts.handler.hello() });
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    this.attempt++;
    const delay = backoffDelay(this.attempt, this.backoff);
    this.timer = setTimeout(() => this.connect(), delay);
    this.timer.unref();
  }

  private dispatch(m: ServerMessage): void {
    const h = this.opts.handler;
    switch (m.kind) {
      case 'program': {
        const update = m.program!;
        const call = this.call;
        this.programs = this.programs.then(async () => {
          const ack = await h.program(update);
          if (this.call === call) this.send({ ack: { ...ack, responseNonce: update.nonce } });
        });
        return;
      }
      case 'svid':
        h.svid(m.svid!);
        return;
      case 'credentials':
        h.credentials(m.credentials!);
        return;
      case 'bundle':
        h.bundle(m.bundle!);
        return;
      case 'refusal':
        h.refusal(m.refusal!);
        return;
      case 'repair':
        h.repair(m.repair!);
        return;
    }
  }
}
