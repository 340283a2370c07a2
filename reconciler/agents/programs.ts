/**
 * The compiler's node programs (one per scope) → what each agent holds: the wire form of identities, egress
 * rules and credential references (agent/protocol), merged over the scopes an agent belongs to. Conversions
 * are cached by content hash, and merged programs by scope set, so a publish costs in proportion to what
 * changed and an agent group shares one program object.
 */
import type {
  CredentialRef,
  EgressRule,
  Identity,
  TlsMode,
  Destination as WireDestination,
} from '../../agent/protocol/messages.ts';
import { makeProgram, type Program } from '../../agent/protocol/program.ts';
import { DAEMON_PATH_PREFIX } from '../../agent/protocol/wire.ts';
import type {
  CompiledCredentialRef,
  CompiledEgressRule,
  CompiledIdentity,
  Destination,
  NodeProgram,
} from '../policy/compile.ts';

const MODE: Record<string, TlsMode> = {
  MUTUAL: 'TLS_MODE_MUTUAL',
  PERMISSIVE: 'TLS_MODE_PERMISSIVE',
  SIMPLE: 'TLS_MODE_SIMPLE',
};

export function scopeName(scope: NodeProgram['scope']): string {
  return `${scope.kind}:${scope.id}`;
}

function destination(d: Destination): WireDestination {
  return {
    service: d.service,
    external: d.external,
    address: d.address,
    port: d.port ?? 0,
    aliases: d.aliases,
    networkPrefixes: d.networkPrefixes,
  };
}

export function wireRule(r: CompiledEgressRule): EgressRule {
  return {
    hash: r.hash,
    index: r.index,
    selectors: r.selectors.map((labels) => ({ labels })),
    destinations: r.destinations.map(destination),
    mode: r.tls.mode ? MODE[r.tls.mode]! : 'TLS_MODE_UNSPECIFIED',
    intercept: r.tls.intercept,
    allowedSpiffeIds: r.allowedSpiffeIds,
    workloadId: r.workloadID ?? '',
    credentialName: r.credentialName ?? '',
  };
}

export function wireCredentialRef(c: CompiledCredentialRef): CredentialRef {
  return {
    hash: c.hash,
    via: c.via,
    resource: c.resource,
    source: {
      resource: c.source.resource,
      type: c.source.type,
      supported: c.source.supported,
      specHash: c.source.specHash,
    },
    injection: c.injection ? { destinations: c.injection.destinations.map(destination) } : null,
    sysfs: c.sysfs ? { dir: c.sysfs.dir } : null,
  };
}

export function wireIdentity(i: CompiledIdentity, scope: string): Identity {
  return {
    spiffeId: i.spiffeId,
    workloadId: i.workloadID,
    resource: i.resource,
    hash: i.hash,
    selectors: i.selectors
      .map((s) => Object.fromEntries(Object.entries(s).map(([k, values]) => [k, { values }])))
      .map((match) => ({ match })),
    inboundMode: MODE[i.tls.mode]!,
    intercept: i.tls.intercept,
    allowedInbound: i.allowedSpiffeIds.inbound,
    allowedOutbound: i.allowedSpiffeIds.outbound,
    x509TtlSeconds: i.x509.ttlSeconds ?? 0,
    dnsNames: i.x509.dnsNames,
    egressRuleHashes: i.egress.map((r) => r.hash),
    credentialRefHashes: i.credentials.map((c) => c.hash),
    scope,
  };
}

/** One scope's identities, rules and references in wire form. */
export interface ScopeProgram {
  scope: string;
  hash: string;
  identities: Identity[];
  /** By SPIFFE ID: the compiled identity, for SVID TTLs, DNS names and credential lookups. */
  compiled: Map<string, CompiledIdentity>;
  rules: Map<string, EgressRule>;
  credentialRefs: Map<string, CredentialRef>;
}

/** The scopes an agent belongs to: its daemon group (if any) and its own daemon ID (new and older form). */
export function scopesOfDaemon(daemonId: string, group: string | null): string[] {
  const own = `${DAEMON_PATH_PREFIX}${daemonId}`;
  return [...(group ? [`daemonGroup:${group}`] : []), `daemon:${own}`, `agent:${own}`];
}

/**
 * The desired state as agents see it. Built once per publish; conversions of identities whose hash did not
 * change are reused from the previous one.
 */
export class DesiredPrograms {
  readonly scopes = new Map<string, ScopeProgram>();
  /** Programs by the scopes they merge (an agent's), with the scope programs they were made of. */
  private readonly merged = new Map<string, { parts: ScopeProgram[]; program: Program }>();

  constructor(
    readonly trustDomain: string,
    programs: readonly NodeProgram[],
    previous: DesiredPrograms | null,
  ) {
    // Wire forms converted by this build, shared between the scopes that hold the same rule or reference.
    const rules = new Map<string, EgressRule>();
    const refs = new Map<string, CredentialRef>();
    const same = previous && previous.trustDomain === trustDomain ? previous : null;
    for (const p of programs) {
      const scope = scopeName(p.scope);
      // A scope whose hash (over its identities' hashes, which cover their rules and references) is as
      // before is the same program: a one-file commit converts only the scopes it changed.
      const before = same?.scopes.get(scope);
      if (before && before.hash === p.hash) {
        this.scopes.set(scope, before);
        continue;
      }
      // A changed scope reuses what its own previous program had converted, looked up there: indexing every
      // scope's identities, rules and references first cost a one-file commit 10,000 of each.
      const kept = new Map<string, Identity>();
      for (const i of before?.identities ?? []) kept.set(i.hash, i);
      const sp: ScopeProgram = {
        scope,
        hash: p.hash,
        identities: [],
        compiled: new Map(),
        rules: new Map(),
        credentialRefs: new Map(),
      };
      for (const ci of p.identities) {
        sp.identities.push(kept.get(ci.hash) ?? wireIdentity(ci, scope));
        sp.compiled.set(ci.spiffeId, ci);
        for (const r of ci.egress) {
          const w = rules.get(r.hash) ?? before?.rules.get(r.hash) ?? wireRule(r);
          rules.set(r.hash, w);
          sp.rules.set(r.hash, w);
        }
        for (const c of ci.credentials) {
          const w = refs.get(c.hash) ?? before?.credentialRefs.get(c.hash) ?? wireCredentialRef(c);
          refs.set(c.hash, w);
          sp.credentialRefs.set(c.hash, w);
        }
      }
      this.scopes.set(scope, sp);
    }
    // Agents' programs made only of unchanged scope programs are carried over as they are.
    if (same)
      for (const [key, m] of same.merged)
        if (m.parts.every((sp) => this.scopes.get(sp.scope) === sp)) this.merged.set(key, m);
  }

  /** The program of an agent in these scopes (shared between agents with the same scopes). */
  programFor(scopes: readonly string[]): Program {
    const present = scopes.filter((s) => this.scopes.has(s));
    const key = present.join('\u0000');
    let p = this.merged.get(key)?.program;
    if (!p) {
      const parts = present.map((s) => this.scopes.get(s)!);
      const rules = new Map<string, EgressRule>();
      const refs = new Map<string, CredentialRef>();
      for (const sp of parts) {
        for (const [h, r] of sp.rules) rules.set(h, r);
        for (const [h, c] of sp.credentialRefs) refs.set(h, c);
      }
      p = makeProgram(
        this.trustDomain,
        present,
        parts.flatMap((sp) => sp.identities),
        rules,
        refs,
      );
      this.merged.set(key, { parts, program: p });
    }
    return p;
  }

  /** The compiled identity behind a SPIFFE ID, if one of `scopes` holds it. */
  compiledIdentity(scopes: readonly string[], spiffeId: string): CompiledIdentity | undefined {
    for (const s of scopes) {
      const hit = this.scopes.get(s)?.compiled.get(spiffeId);
      if (hit) return hit;
    }
    return undefined;
  }
}
