/**
 * A simulated agent for tests and the agents benchmark: the real join and the real Sync client, holding
 * programs with the real applyUpdate, but no control interface or attestation. It records what it receives.
 */

import type { BackoffOptions } from '../../agent/backoff.ts';
import type { ChannelIdentity } from '../../agent/connection.ts';
import { joinReconciler } from '../../agent/join.ts';
import type {
  ControlRepair,
  CredentialValue,
  ErrorDetail,
  Out,
  ProgramAck,
  ProgramUpdate,
  Refusal,
  StateReport,
  SvidResponse,
} from '../../agent/protocol/messages.ts';
import { applyUpdate, type Program } from '../../agent/protocol/program.ts';
import { AgentStateDir } from '../../agent/state.ts';
import { SyncClient } from '../../agent/sync-client.ts';

export class SimAgent {
  program: Program | null = null;
  readonly updates: ProgramUpdate[] = [];
  readonly refusals: Refusal[] = [];
  readonly svids: SvidResponse[] = [];
  readonly credentials = new Map<string, CredentialValue>();
  readonly nacks: ErrorDetail[] = [];
  readonly repairs: ControlRepair[] = [];
  connected = false;
  client!: SyncClient;
  /** Set to refuse the next updates with this error. */
  refuseWith: ErrorDetail | null = null;
  /** Set to hold the answer (ACK or NACK) to each update until it resolves: a pass waits in collect meanwhile. */
  holdAnswers: Promise<void> | null = null;
  private waiters: Array<() => void> = [];

  constructor(
    readonly server: string,
    readonly state: AgentStateDir,
    readonly channel: ChannelIdentity,
    readonly trustDomain: string,
    readonly daemonId: string,
  ) {}

  static async join(
    server: string,
    token: string,
    dir: string,
    expectedDaemonGroup?: string,
  ): Promise<SimAgent> {
    const state = new AgentStateDir(dir);
    await joinReconciler({ server, token, state, ...(expectedDaemonGroup ? { expectedDaemonGroup } : {}) });
    return SimAgent.open(server, dir);
  }

  static async open(server: string, dir: string): Promise<SimAgent> {
    const state = new AgentStateDir(dir);
    const loaded = (await state.load())!;
    return new SimAgent(
      server,
      state,
      {
        bundlePem: loaded.bundlePem,
        reconcilerSpiffeId: loaded.identity.reconcilerSpiffeId,
        keyPem: loaded.svid.keyPem,
        chainPem: loaded.svid.chainPem,
      },
      loaded.identity.trustDomain,
      loaded.identity.daemonId,
    );
  }

  /** Connects (`backoff`: the reconnect policy; default up to 100 ms doubling to 1 s). */
  start(backoff: BackoffOptions = { initialMs: 100, maxMs: 1000 }): this {
    this.client = new SyncClient({
      server: this.server,
      identity: () => this.channel,
      backoff,
      handler: {
        hello: () => ({
          protocolVersion: 1,
          agentVersion: 'sim',
          programVersion: this.program?.version ?? '',
          identityVersions: Object.fromEntries(
            [...(this.program?.identities.values() ?? [])].map((i) => [i.spiffeId, i.hash]),
          ),
          ruleHashes: [...(this.program?.rules.keys() ?? [])],
          credentialRefHashes: [...(this.program?.credentialRefs.keys() ?? [])],
        }),
        program: async (u): Promise<Out<ProgramAck>> => {
          this.updates.push(u);
          if (this.holdAnswers) {
            this.notify();
            await this.holdAnswers;
          }
          const kept = this.program?.version ?? '';
          if (this.refuseWith) {
            this.nacks.push(this.refuseWith);
            this.notify();
            return { versionInfo: kept, errorDetail: this.refuseWith };
          }
          const r = applyUpdate(this.program, u, this.trustDomain);
          if (!r.ok) {
            this.nacks.push(r.error);
            this.notify();
            return { versionInfo: kept, errorDetail: r.error };
          }
          this.program = r.program;
          this.notify();
          return { versionInfo: r.program.version };
        },
        svid: (s) => {
          this.svids.push(s);
          this.notify();
        },
        credentials: (c) => {
          for (const v of c.values) this.credentials.set(v.refHash, v);
          for (const h of c.withdrawn) this.credentials.delete(h);
          this.notify();
        },
        bundle: () => {},
        refusal: (r) => {
          this.refusals.push(r);
          this.notify();
        },
        repair: (r) => {
          this.repairs.push(r);
          this.notify();
        },
        connected: () => {
          this.connected = true;
          this.notify();
        },
        disconnected: () => {
          this.connected = false;
          this.notify();
        },
      },
    });
    this.client.start();
    return this;
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves once `cond` holds (checked after every event), or rejects after `ms`. */
  until(cond: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      const check = () => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }

  /** Sends a state report (what a real agent would say of its node); false when not connected. */
  report(r: Out<StateReport>): boolean {
    return this.client.send({ report: r });
  }

  stop(): void {
    this.client?.stop();
  }
}
