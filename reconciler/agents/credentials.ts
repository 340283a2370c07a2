/**
 * Credential values toward agents. For every credential reference in the desired programs the credential
 * manager keeps one (source, workload) pair fresh, once however many agents need it (DESIGN.md §6); a
 * change of value becomes a CredentialUpdate for the agents whose program holds a reference to it, and for
 * no one else. Values stay in memory and on the mTLS stream: this module never logs or stores them.
 */
import type { CredentialValue } from '../../agent/protocol/messages.ts';
import type { CredentialManager } from '../credentials/manager.ts';
import { type Credential, type CredentialSourceSpec, credentialValueOf } from '../credentials/types.ts';
import type { DesiredPrograms, ScopeProgram } from './programs.ts';

export const pairKey = (source: string, workload: string) => `${source}\u0000${workload}`;

/** A credential's version, keyed fingerprint and expiry: never its value. */
export interface CredentialFacts {
  version: number;
  fingerprint: string;
  expiresAt: Date | null;
}

/** The value of one reference, as sent (`null`: known to be gone; undefined: not obtained yet). */
export type RefValue = CredentialValue | null | undefined;

/** One (source, workload) pair the desired programs need, with the reference hashes it feeds. */
export interface CredentialPair {
  spec: CredentialSourceSpec;
  workload: string;
  refs: Set<string>;
}

/**
 * The (source, workload) pairs the desired programs reference, keyed `source\u0000workload`: what the credential
 * manager keeps fresh, once per pair however many agents hold a reference to it (DESIGN.md §6).
 */
export function credentialPairsOf(
  desired: DesiredPrograms,
  sources: ReadonlyMap<string, CredentialSourceSpec>,
): Map<string, CredentialPair> {
  const pairs = new Map<string, CredentialPair>();
  for (const sp of desired.scopes.values()) {
    for (const use of usesOf(sp, sources)) {
      if (!use.spec) continue;
      let pair = pairs.get(use.key);
      if (!pair) {
        pair = { spec: use.spec, workload: use.workload, refs: new Set() };
        pairs.set(use.key, pair);
      }
      pair.refs.add(use.hash);
    }
  }
  return pairs;
}

/** One credential reference of a scope program, resolved to its (source, workload) pair. */
interface PairUse {
  hash: string;
  /** The CredentialSource resource the reference names, and its spec (undefined: not among `sources`). */
  resource: string;
  spec: CredentialSourceSpec | undefined;
  workload: string;
  key: string;
}

/**
 * Per scope program (DesiredPrograms hands an unchanged scope's object on), its references resolved to pairs:
 * a one-file commit resolves the references of the scopes it changed, and builds no key for the others.
 */
const usesMemo = new WeakMap<ScopeProgram, PairUse[]>();

function usesOf(sp: ScopeProgram, sources: ReadonlyMap<string, CredentialSourceSpec>): PairUse[] {
  const kept = usesMemo.get(sp);
  // Still valid while each source resolves as it did, to the same spec object (desired.ts keeps one per parsed
  // source) or to none.
  if (kept?.every((u) => sources.get(u.resource) === u.spec)) return kept;
  const uses: PairUse[] = [];
  for (const identity of sp.identities)
    for (const hash of identity.credentialRefHashes) {
      const resource = sp.credentialRefs.get(hash)?.source?.resource;
      if (resource === undefined) continue;
      const spec = sources.get(resource);
      const workload = identity.workloadId;
      uses.push({ hash, resource, spec, workload, key: spec ? pairKey(spec.name, workload) : '' });
    }
  usesMemo.set(sp, uses);
  return uses;
}

export class CredentialFanout {
  /** (source name, workload ID) → the reference hashes it feeds. */
  private readonly refsOfPair = new Map<string, Set<string>>();
  /** reference hash → (source name, workload ID). */
  private readonly pairOfRef = new Map<string, { source: string; workload: string }>();
  private readonly onUpdate: (source: string, workload: string, cred: Credential | undefined) => void;

  constructor(
    private readonly manager: CredentialManager | null,
    /** Called with the reference hashes whose value changed or went away. */
    private readonly changed: (refHashes: ReadonlySet<string>) => void,
  ) {
    this.onUpdate = (source, workload) => {
      const refs = this.refsOfPair.get(pairKey(source, workload));
      if (refs?.size) this.changed(refs);
    };
    manager?.on('update', this.onUpdate);
  }

  /**
   * Follows the desired state: maps reference hashes to their (source, workload) pairs; with `manage`, also
   * starts keeping new pairs fresh and releases pairs no reference needs any more (otherwise the caller does,
   * with credentialPairsOf and the manager). `pairs`: credentialPairsOf(desired, sources), when the caller has
   * it already (a publish plan).
   */
  update(
    desired: DesiredPrograms,
    sources: ReadonlyMap<string, CredentialSourceSpec>,
    manage = true,
    pairs: ReadonlyMap<string, CredentialPair> = credentialPairsOf(desired, sources),
  ): void {
    if (this.manager && manage) {
      for (const p of pairs.values()) this.manager.ensure(p.spec, p.workload);
      for (const key of this.refsOfPair.keys())
        if (!pairs.has(key)) {
          const [source, workload] = key.split('\u0000') as [string, string];
          void this.manager.release(source, workload);
        }
    }
    this.refsOfPair.clear();
    this.pairOfRef.clear();
    for (const [k, p] of pairs) {
      this.refsOfPair.set(k, p.refs);
      for (const h of p.refs)
        if (!this.pairOfRef.has(h)) this.pairOfRef.set(h, { source: p.spec.name, workload: p.workload });
    }
  }

  /**
   * What is known of the value behind a reference, without the value (for drift reports): its version, keyed
   * fingerprint and expiry; null when it is known to be gone, undefined when not obtained yet or not ours.
   */
  facts(refHash: string): CredentialFacts | null | undefined {
    const pair = this.pairOfRef.get(refHash);
    if (!pair || !this.manager) return undefined;
    const cred = this.manager.get(pair.source, pair.workload);
    if (cred)
      return { version: cred.version, fingerprint: cred.fingerprint, expiresAt: cred.expiresAt ?? null };
    const v = this.value(refHash);
    return v === null ? null : undefined;
  }

  /** The current value behind a reference, in wire form. */
  value(refHash: string): RefValue {
    const pair = this.pairOfRef.get(refHash);
    if (!pair || !this.manager) return undefined;
    const cred = this.manager.get(pair.source, pair.workload);
    if (!cred) {
      return this.manager.pairSettled(pair.source, pair.workload) ? null : undefined;
    }
    const v = credentialValueOf(cred);
    return {
      refHash,
      version: cred.version,
      fingerprint: cred.fingerprint,
      expiresAtUnix: cred.expiresAt ? Math.floor(cred.expiresAt.getTime() / 1000) : 0,
      ...(v.kind === 'bearer'
        ? { bearer: { token: v.token }, value: 'bearer' as const }
        : {
            aws: {
              accessKeyId: v.aws.accessKeyId,
              secretAccessKey: v.aws.secretAccessKey,
              sessionToken: v.aws.sessionToken,
            },
            value: 'aws' as const,
          }),
    };
  }

  close(): void {
    this.manager?.off('update', this.onUpdate);
  }
}
