/**
 * What the data plane reads: the rule table, the processes → identity attribution, SVIDs, the trust bundle,
 * the intercept CA and credential values (CONTRACT-node.md §1 and §3). The control interface's reader and
 * credential store implement it through a thin adapter; tests and embedders can use `MemoryInputs`.
 *
 * Every accessor is synchronous and cheap (called per connection or per request) except `identityOf`, which
 * may attest a process on demand. `onChange` fires after anything changed; the data plane then re-checks live
 * connections (revocation) and drops cached TLS contexts whose inputs changed.
 */
import { EventEmitter } from 'node:events';
import type { ProcessRecord, RuleTable } from '../control/abi.ts';
import type { CredentialValue } from '../control/credential-store.ts';

export type {
  CredentialRule as CredentialRef,
  EgressRule,
  IdentityRule as RuleIdentity,
  RuleDestination as Destination,
  RuleTable,
  TlsMode,
} from '../control/abi.ts';
export type { CredentialValue } from '../control/credential-store.ts';

/**
 * A process's attestation (the control interface's ProcessRecord without pid and start time): one identity,
 * limited to `destinationPorts` when a selector said `destination:port`, per-port `routes`, or a `conflict`.
 */
export type ProcessIdentity = Pick<ProcessRecord, 'spiffeId' | 'destinationPorts'> &
  Partial<Pick<ProcessRecord, 'conflict' | 'routes'>>;

/** A credential for injection, or why there is none. */
export type CredentialLookup = { state: 'loaded'; value: CredentialValue } | { state: 'expired' | 'absent' };

export interface KeyPair {
  /** PEM: the leaf first, then any intermediates. */
  cert: string;
  key: string;
}

export interface DataPlaneInputs {
  rules(): RuleTable | null;
  /** The X.509-SVID (chain) and key of an identity, or null when none is installed. */
  svid(spiffeId: string): KeyPair | null;
  /** PEM of the trust domain's X.509 authorities: what peers' SVIDs are verified against. */
  trustBundle(): string | null;
  /** The node's intercept CA, which mints the application-facing certificates. */
  interceptCa(): KeyPair | null;
  /** The identity of a process, or null when it is not attested (or gone). */
  identityOf(pid: number): Promise<ProcessIdentity | null>;
  /** The pids of attested processes: attribution searches their sockets first. */
  attestedPids(): Iterable<number>;
  credential(hash: string): CredentialLookup;
  /** Subscribe to changes of any input; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
}

/**
 * In-memory inputs: everything set by the embedder. `attest`, when given, is asked about a pid the processes
 * map does not know (on-demand attestation, as an agent's attestor would answer it).
 */
export class MemoryInputs implements DataPlaneInputs {
  private table: RuleTable | null = null;
  private readonly svids = new Map<string, KeyPair>();
  private bundle: string | null = null;
  private ca: KeyPair | null = null;
  private readonly processes = new Map<number, ProcessIdentity>();
  private readonly credentials = new Map<string, CredentialValue>();
  private readonly events = new EventEmitter();

  constructor(private readonly attest?: (pid: number) => Promise<ProcessIdentity | null>) {
    this.events.setMaxListeners(0);
  }

  rules(): RuleTable | null {
    return this.table;
  }
  svid(spiffeId: string): KeyPair | null {
    return this.svids.get(spiffeId) ?? null;
  }
  trustBundle(): string | null {
    return this.bundle;
  }
  interceptCa(): KeyPair | null {
    return this.ca;
  }
  async identityOf(pid: number): Promise<ProcessIdentity | null> {
    return this.processes.get(pid) ?? (this.attest ? this.attest(pid) : null);
  }
  attestedPids(): Iterable<number> {
    return this.processes.keys();
  }
  credential(hash: string): CredentialLookup {
    const value = this.credentials.get(hash);
    if (!value) return { state: 'absent' };
    if (value.kind === 'aws' && value.expiresAt && value.expiresAt.getTime() <= Date.now())
      return { state: 'expired' };
    return { state: 'loaded', value };
  }
  onChange(listener: () => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }

  setRules(table: RuleTable): void {
    this.table = table;
    this.changed();
  }
  setSvid(spiffeId: string, pair: KeyPair | null): void {
    if (pair) this.svids.set(spiffeId, pair);
    else this.svids.delete(spiffeId);
    this.changed();
  }
  setTrustBundle(pem: string): void {
    this.bundle = pem;
    this.changed();
  }
  setInterceptCa(pair: KeyPair): void {
    this.ca = pair;
    this.changed();
  }
  setProcess(pid: number, identity: ProcessIdentity | null): void {
    if (identity) this.processes.set(pid, identity);
    else this.processes.delete(pid);
    this.changed();
  }
  loadCredential(hash: string, value: CredentialValue): void {
    this.credentials.set(hash, value);
    this.changed();
  }
  unloadCredential(hash: string): void {
    this.credentials.delete(hash);
    this.changed();
  }

  private changed(): void {
    this.events.emit('change');
  }
}
