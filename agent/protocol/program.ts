/**
 * Programs as both ends hold them, and the incremental update between two of them (Envoy's incremental xDS:
 * only what changed, removals by name, content-addressed rules and credential references shared between
 * identities). The reconciler computes updates with `diffProgram`; the agent checks and applies them with
 * `applyUpdate`, which never changes the program it is given (a refused update leaves it in force).
 */
import type { CredentialRef, EgressRule, ErrorDetail, Identity, Out, ProgramUpdate } from './messages.ts';
import { programVersion } from './version.ts';
import { LIMITS } from './wire.ts';

export interface Program {
  trustDomain: string;
  version: string;
  scopes: string[];
  /** By SPIFFE ID. */
  identities: ReadonlyMap<string, Identity>;
  /** By hash. */
  rules: ReadonlyMap<string, EgressRule>;
  /** By hash. */
  credentialRefs: ReadonlyMap<string, CredentialRef>;
}

/** What one end believes the other holds: versions only. */
export interface HeldSummary {
  version: string;
  identities: ReadonlyMap<string, string>;
  rules: ReadonlySet<string>;
  credentialRefs: ReadonlySet<string>;
}

export const NOTHING_HELD: HeldSummary = {
  version: '',
  identities: new Map(),
  rules: new Set(),
  credentialRefs: new Set(),
};

/** Builds a program from its parts, dropping rules and references no identity uses; computes its version. */
export function makeProgram(
  trustDomain: string,
  scopes: readonly string[],
  identities: Iterable<Identity>,
  rules: ReadonlyMap<string, EgressRule>,
  credentialRefs: ReadonlyMap<string, CredentialRef>,
): Program {
  const ids = new Map<string, Identity>();
  const usedRules = new Map<string, EgressRule>();
  const usedRefs = new Map<string, CredentialRef>();
  for (const identity of identities) {
    ids.set(identity.spiffeId, identity);
    for (const h of identity.egressRuleHashes) {
      const r = rules.get(h);
      if (r) usedRules.set(h, r);
    }
    for (const h of identity.credentialRefHashes) {
      const c = credentialRefs.get(h);
      if (c) usedRefs.set(h, c);
    }
  }
  const sorted = new Map([...ids].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
  return {
    trustDomain,
    version: programVersion(
      trustDomain,
      [...sorted.values()].map((i) => [i.spiffeId, i.hash] as const),
    ),
    scopes: [...scopes].sort(),
    identities: sorted,
    rules: usedRules,
    credentialRefs: usedRefs,
  };
}

export function summaryOf(p: Program): HeldSummary {
  return {
    version: p.version,
    identities: new Map([...p.identities.values()].map((i) => [i.spiffeId, i.hash])),
    rules: new Set(p.rules.keys()),
    credentialRefs: new Set(p.credentialRefs.keys()),
  };
}

/**
 * The update that takes a holder of `from` to `to`: identities whose hash differs, the names of those gone,
 * and the rules and credential references the sent identities need that `from` does not hold. A holder of
 * nothing gets a full update. The nonce is left to the caller.
 */
export function diffProgram(from: HeldSummary, to: Program): Out<ProgramUpdate> {
  const full = from.version === '';
  const identities: Identity[] = [];
  const rules = new Map<string, EgressRule>();
  const refs = new Map<string, CredentialRef>();
  for (const identity of to.identities.values()) {
    if (!full && from.identities.get(identity.spiffeId) === identity.hash) continue;
    identities.push(identity);
    for (const h of identity.egressRuleHashes) if (full || !from.rules.has(h)) rules.set(h, to.rules.get(h)!);
    for (const h of identity.credentialRefHashes)
      if (full || !from.credentialRefs.has(h)) refs.set(h, to.credentialRefs.get(h)!);
  }
  const removed = full ? [] : [...from.identities.keys()].filter((id) => !to.identities.has(id));
  return {
    versionInfo: to.version,
    baseVersion: full ? '' : from.version,
    full,
    trustDomain: to.trustDomain,
    identities,
    removedIdentities: removed,
    rules: [...rules.values()],
    credentialRefs: [...refs.values()],
    scopes: to.scopes,
  };
}

export type ApplyResult = { ok: true; program: Program } | { ok: false; error: ErrorDetail };

export interface ApplyLimits {
  maxIdentities: number;
}

function refuse(code: string, message: string, hint = ''): ApplyResult {
  return { ok: false, error: { code, message, hint } };
}

const TLS_MODES = new Set(['TLS_MODE_MUTUAL', 'TLS_MODE_PERMISSIVE', 'TLS_MODE_SIMPLE']);

/**
 * Checks an update against the program held (`held` null: nothing held) and returns the program it makes.
 * Refusals (never a throw): BASE_MISMATCH (built on another version), MISSING_REFERENCE (an identity names a
 * rule or credential reference neither sent nor held), VERSION_MISMATCH (the result is not the version
 * announced) — after these three the reconciler resends the whole program — and INVALID (a malformed
 * identity, another trust domain) or LIMIT (more than the agent accepts), which wait for a new version.
 */
export function applyUpdate(
  held: Program | null,
  update: ProgramUpdate,
  trustDomain: string,
  limits: ApplyLimits = { maxIdentities: LIMITS.maxIdentities },
): ApplyResult {
  if (update.trustDomain !== trustDomain)
    return refuse(
      'INVALID',
      `program is for trust domain "${update.trustDomain}", this agent belongs to "${trustDomain}"`,
    );
  const heldVersion = held?.version ?? '';
  if (!update.full && update.baseVersion !== heldVersion)
    return refuse(
      'BASE_MISMATCH',
      `update applies to program ${update.baseVersion || '(none)'} but this agent holds ${heldVersion || '(none)'}`,
      'the reconciler resends the whole program',
    );
  const base: Program | null = update.full ? null : held;
  const identities = new Map(base?.identities ?? []);
  for (const id of update.removedIdentities) identities.delete(id);
  const prefix = `spiffe://${trustDomain}/`;
  const seen = new Set<string>();
  for (const identity of update.identities) {
    const id = identity.spiffeId;
    if (seen.has(id)) return refuse('INVALID', `identity ${id} appears twice in one update`);
    seen.add(id);
    if (!id.startsWith(prefix) || id.length === prefix.length || id.length > LIMITS.maxIdLength)
      return refuse(
        'INVALID',
        `identity "${id.slice(0, 200)}" is not a SPIFFE ID in trust domain ${trustDomain}`,
      );
    if (!identity.hash) return refuse('INVALID', `identity ${id} has no hash`);
    if (!TLS_MODES.has(identity.inboundMode))
      return refuse('INVALID', `identity ${id} has no inbound TLS mode (${identity.inboundMode})`);
    if (identity.selectors.length === 0)
      return refuse('INVALID', `identity ${id} has no selectors: it could never match a process`);
    identities.set(id, identity);
  }
  if (identities.size > limits.maxIdentities)
    return refuse(
      'LIMIT',
      `program has ${identities.size} identities; this agent accepts at most ${limits.maxIdentities}`,
      "raise the agent's --max-identities, or split the daemon group",
    );
  const rules = new Map(base?.rules ?? []);
  for (const r of update.rules) {
    if (!r.hash) return refuse('INVALID', 'an egress rule has no hash');
    rules.set(r.hash, r);
  }
  const refs = new Map(base?.credentialRefs ?? []);
  for (const c of update.credentialRefs) {
    if (!c.hash) return refuse('INVALID', 'a credential reference has no hash');
    refs.set(c.hash, c);
  }
  for (const identity of identities.values()) {
    for (const h of identity.egressRuleHashes)
      if (!rules.has(h))
        return refuse(
          'MISSING_REFERENCE',
          `identity ${identity.spiffeId} references egress rule ${h}, which was neither sent nor held`,
          'the reconciler resends the whole program',
        );
    for (const h of identity.credentialRefHashes)
      if (!refs.has(h))
        return refuse(
          'MISSING_REFERENCE',
          `identity ${identity.spiffeId} references credential ${h}, which was neither sent nor held`,
          'the reconciler resends the whole program',
        );
  }
  const program = makeProgram(trustDomain, update.scopes, identities.values(), rules, refs);
  if (program.version !== update.versionInfo)
    return refuse(
      'VERSION_MISMATCH',
      `applying the update gives program ${program.version}, not the announced ${update.versionInfo}`,
      'the reconciler resends the whole program',
    );
  return { ok: true, program };
}

/** Error codes after which the reconciler resends the whole program instead of waiting for a new version. */
export const RESYNC_CODES: ReadonlySet<string> = new Set([
  'BASE_MISMATCH',
  'VERSION_MISMATCH',
  'MISSING_REFERENCE',
]);

/** A program as JSON (for the agent's state directory). Holds no secret: credential values are never in it. */
export function programToJson(p: Program): string {
  return JSON.stringify({
    trustDomain: p.trustDomain,
    version: p.version,
    scopes: p.scopes,
    identities: [...p.identities.values()],
    rules: [...p.rules.values()],
    credentialRefs: [...p.credentialRefs.values()],
  });
}

/** Reads programToJson's output back; null when the text is not a program with the version it claims. */
export function programFromJson(text: string): Program | null {
  try {
    const o = JSON.parse(text) as {
      trustDomain: string;
      version: string;
      scopes: string[];
      identities: Identity[];
      rules: EgressRule[];
      credentialRefs: CredentialRef[];
    };
    const p = makeProgram(
      o.trustDomain,
      o.scopes,
      o.identities,
      new Map(o.rules.map((r) => [r.hash, r])),
      new Map(o.credentialRefs.map((c) => [c.hash, c])),
    );
    return p.version === o.version ? p : null;
  } catch {
    return null;
  }
}
