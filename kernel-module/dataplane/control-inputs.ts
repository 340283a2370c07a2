/**
 * The data plane's inputs from the control interface (CONTRACT-node.md §1, §3): the kernel side's enforced
 * state (`ControlModule`: rule table, SVIDs, trust bundle, intercept CA, processes table) and the in-memory
 * credential store the agent loads. A thin adapter: nothing is read from disk here.
 *
 * A process the agent has not attested yet (it started a moment ago) has no identity; `attest`, when the
 * embedder gives one (the agent's on-demand attestation), is asked before the connection passes through.
 */
import { EventEmitter } from 'node:events';
import type { CredentialStore } from '../control/credential-store.ts';
import type { ControlModule, LoadedSvid } from '../control/module.ts';
import type { CredentialLookup, DataPlaneInputs, KeyPair, ProcessIdentity, RuleTable } from './inputs.ts';

export class ControlInputs implements DataPlaneInputs {
  private readonly events = new EventEmitter();
  private readonly pairs = new WeakMap<LoadedSvid, KeyPair>();
  private bundleFrom: string[] | null = null;
  private bundle: string | null = null;

  constructor(
    private readonly module: ControlModule,
    private readonly store: CredentialStore,
    private readonly attest?: (pid: number) => Promise<ProcessIdentity | null>,
  ) {
    this.events.setMaxListeners(0);
    const changed = () => this.events.emit('change');
    module.on('enforced', changed);
    module.on('processes', changed);
    store.on('change', changed);
  }

  rules(): RuleTable | null {
    return this.module.current()?.table ?? null;
  }

  svid(spiffeId: string): KeyPair | null {
    const loaded = this.module.current()?.svids.get(spiffeId);
    if (!loaded) return null;
    let pair = this.pairs.get(loaded);
    if (!pair) {
      pair = { cert: loaded.certPem, key: loaded.keyPem };
      this.pairs.set(loaded, pair);
    }
    return pair;
  }

  trustBundle(): string | null {
    const blocks = this.module.current()?.trustBundle ?? null;
    if (blocks !== this.bundleFrom) {
      this.bundleFrom = blocks;
      this.bundle = blocks ? blocks.join('\n') : null;
    }
    return this.bundle;
  }

  interceptCa(): KeyPair | null {
    const ca = this.module.current()?.interceptCa;
    return ca ? { cert: ca.certPem, key: ca.keyPem } : null;
  }

  async identityOf(pid: number): Promise<ProcessIdentity | null> {
    const record = this.module.process(pid);
    if (record) return record;
    return this.attest ? this.attest(pid) : null;
  }

  attestedPids(): Iterable<number> {
    return (this.module.processes()?.processes ?? []).map((p) => p.pid);
  }

  credential(hash: string): CredentialLookup {
    const found = this.store.lookup(hash);
    return found.state === 'loaded'
      ? { state: 'loaded', value: found.credential.value() }
      : { state: found.state };
  }

  onChange(listener: () => void): () => void {
    this.events.on('change', listener);
    return () => this.events.off('change', listener);
  }
}
