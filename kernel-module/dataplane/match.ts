/**
 * Destination matching: a connection's identity and destination → what the data plane does with it. Pure.
 *
 * A destination matches a compiled Service address when its host (the CONNECT/Host name) or its IP equals the
 * address or one of its aliases (case-insensitive, trailing dot ignored), or the IP lies in one of its
 * `networkPrefixes`, and the port is the address's port (a null port matches any). Egress rules are tried in
 * program order, the first match wins; credentials come from bindings whose injection destinations match and
 * from the matched rule's own credential references (the WorkloadCredential form), in that order.
 */
import { BlockList, isIP } from 'node:net';
import { identityForConnection } from '../control/abi.ts';
import type {
  CredentialRef,
  Destination,
  EgressRule,
  ProcessIdentity,
  RuleIdentity,
  RuleTable,
} from './inputs.ts';

export interface Target {
  /** The name the client asked for (CONNECT authority, Host), or the IP when that is all there is. */
  host: string;
  /** The IP the connection goes to, when known (transparent mode, or after resolution). */
  ip: string | null;
  port: number;
}

export type Decision =
  | { kind: 'passthrough'; reason: PassthroughReason; identity: RuleIdentity | null }
  | {
      kind: 'managed';
      identity: RuleIdentity;
      rule: EgressRule | null;
      credential: CredentialRef | null;
    };

export type PassthroughReason =
  | 'no-identity'
  | 'identity-not-in-program'
  | 'destination-port-not-selected'
  | 'identity-conflict'
  | 'no-matching-rule';

function normalHost(host: string): string {
  const h = host.toLowerCase();
  const unbracketed = h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
  return unbracketed.endsWith('.') ? unbracketed.slice(0, -1) : unbracketed;
}

const prefixCache = new WeakMap<Destination, BlockList | null>();

function prefixes(d: Destination): BlockList | null {
  let list = prefixCache.get(d);
  if (list !== undefined) return list;
  list = null;
  for (const cidr of d.networkPrefixes) {
    const slash = cidr.lastIndexOf('/');
    const net = cidr.slice(0, slash);
    const family = isIP(net);
    if (slash < 0 || family === 0) continue;
    list ??= new BlockList();
    list.addSubnet(net, Number(cidr.slice(slash + 1)), family === 6 ? 'ipv6' : 'ipv4');
  }
  prefixCache.set(d, list);
  return list;
}

/** Whether `target` is one of the destination's addresses. */
export function destinationMatches(d: Destination, target: Target): boolean {
  if (d.port !== null && d.port !== target.port) return false;
  const names = new Set([normalHost(target.host)]);
  if (target.ip) names.add(normalHost(target.ip));
  if (names.has(normalHost(d.address))) return true;
  for (const alias of d.aliases) if (names.has(normalHost(alias))) return true;
  const ip = target.ip ?? (isIP(normalHost(target.host)) ? normalHost(target.host) : null);
  if (ip && d.networkPrefixes.length) {
    const list = prefixes(d);
    if (list?.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4')) return true;
  }
  return false;
}

export function findIdentity(table: RuleTable | null, spiffeId: string): RuleIdentity | null {
  return table?.identities.find((i) => i.spiffeId === spiffeId) ?? null;
}

/** A decision for a connection the data plane handles. */
export type ManagedDecision = Extract<Decision, { kind: 'managed' }>;

/**
 * What a managed decision commits a connection to: the identity, the rule's TLS mode and intercept, and the
 * credential by hash (which covers its source, propagation and destinations). A kept-alive connection whose
 * key under the current policy differs from the one it was opened with must not carry another request.
 */
export function decisionKey(d: ManagedDecision): string {
  return [
    d.identity.spiffeId,
    d.identity.inbound.intercept,
    d.rule?.tls.mode ?? '',
    d.rule?.tls.intercept ?? '',
    d.credential?.hash ?? '',
  ].join('\u0000');
}

/** The decision for one outbound connection (or, with intercept, one request). */
export function decide(table: RuleTable | null, process: ProcessIdentity | null, target: Target): Decision {
  if (!process) return { kind: 'passthrough', reason: 'no-identity', identity: null };
  const resolved = identityForConnection(
    { pid: 0, startTime: 0, conflict: null, routes: [], ...process },
    target.port,
  );
  if (!resolved) {
    const limited = process.spiffeId !== null || (process.routes?.length ?? 0) > 0;
    return {
      kind: 'passthrough',
      reason: limited ? 'destination-port-not-selected' : 'no-identity',
      identity: null,
    };
  }
  // Two identities claim the process for this port: neither is used (the agent reports the conflict).
  if ('conflict' in resolved) return { kind: 'passthrough', reason: 'identity-conflict', identity: null };
  const identity = findIdentity(table, resolved.spiffeId);
  if (!identity) return { kind: 'passthrough', reason: 'identity-not-in-program', identity: null };
  const rule = identity.egress.find((r) => r.destinations.some((d) => destinationMatches(d, target))) ?? null;
  let credential =
    identity.credentials.find((c) => c.injection?.destinations.some((d) => destinationMatches(d, target))) ??
    null;
  if (!credential && rule)
    for (const hash of rule.credentials) {
      credential = identity.credentials.find((c) => c.hash === hash) ?? null;
      if (credential) break;
    }
  if (!rule && !credential) return { kind: 'passthrough', reason: 'no-matching-rule', identity };
  return { kind: 'managed', identity, rule, credential };
}

/** `host:port` or `[v6]:port` of a CONNECT request (the proxy's, a pooled session's stream), validated. */
export function parseAuthority(authority: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]{1,253})):(\d{1,5})$/.exec(authority);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65_535) return null;
  return { host: m[1] ?? m[2]!, port };
}
