/** The authority's status: its settings and every root, signing CA and JWT key with state and validity. */
import type { SlotState, StoredSlot, StoredState } from './ca-store.ts';
import { nextStep } from './rotation.ts';
import type { KeyType } from './x509.ts';

export interface AuthorityStatus {
  trustDomain: string;
  issuer: string;
  keyType: KeyType;
  roots: { id: string; state: SlotState; upstream: boolean; notBefore: Date; notAfter: Date }[];
  signingCas: { id: string; state: SlotState; notBefore: Date; notAfter: Date }[];
  jwtKeys: { kid: string; state: SlotState; notBefore: Date; notAfter: Date }[];
  /** The next rotation step (`ca rotate` or a signing that finds it due will take it); null when none is planned. */
  nextRotation: { at: Date; what: string } | null;
}

export function statusOf(state: StoredState): AuthorityStatus {
  const next = nextStep(state);
  const times = (s: StoredSlot) => ({
    state: s.state,
    notBefore: new Date(s.notBefore),
    notAfter: new Date(s.notAfter),
  });
  return {
    trustDomain: state.trustDomain,
    issuer: state.issuer,
    keyType: state.keyType,
    roots: state.roots.map((r) => ({ id: r.id, upstream: r.upstream, ...times(r) })),
    signingCas: state.signingCas.map((s) => ({ id: s.id, ...times(s) })),
    jwtKeys: state.jwtKeys.map((k) => ({ kid: k.id, ...times(k) })),
    nextRotation: Number.isFinite(next.at) ? { at: new Date(next.at), what: next.what } : null,
  };
}
