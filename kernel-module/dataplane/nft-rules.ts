/**
 * nftables rules for transparent interception (README "Interception"): a `nat` chain on the `output` hook that
 * redirects workloads' TCP connections toward the destinations the rule table names (egress rules' Service
 * addresses and credential bindings' injection destinations) to the data plane's transparent listener. Only
 * those destinations are redirected: every other connection of the host goes out untouched and costs nothing.
 * The data plane's own connections are excluded by the uid it runs as (`meta skuid … return`), so what it
 * dials after interception is not redirected again.
 *
 * One table, `inet riptides` (IPv4 and IPv6, nftables ≥ 0.9.3 and Linux ≥ 5.2 for inet nat), replaced as a
 * whole in one `nft -f` transaction, so a reader never sees half a ruleset; `remove()` deletes it.
 *
 * What a destination becomes: an IP address → `ip daddr A` (or `ip6 daddr`) with its port; a network prefix →
 * `ip daddr CIDR`; a DNS name → its port alone (`tcp dport 443`: nftables matches addresses, not names; the data
 * plane passes through what it does not match); a DNS name with no port cannot be expressed and is listed as a
 * comment.
 */
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import type { RuleDestination, RuleTable } from '../control/abi.ts';

export const NFT_TABLE = 'riptides';

export interface NftOptions {
  /** Port of the data plane's transparent listener (the `redirect to :PORT` target). */
  transparentPort: number;
  /** The data plane's uid: its own connections are never redirected. */
  excludeUid: number;
}

function destinationsOf(table: RuleTable | null): RuleDestination[] {
  const out: RuleDestination[] = [];
  for (const identity of table?.identities ?? []) {
    for (const rule of identity.egress) out.push(...rule.destinations);
    for (const credential of identity.credentials) out.push(...(credential.injection?.destinations ?? []));
  }
  return out;
}

/** The match expressions (one rule each) that select connections toward `d`; comments for what cannot be. */
function matchesOf(d: RuleDestination): { rules: string[]; skipped: string[] } {
  const port = d.port === null ? '' : ` tcp dport ${d.port}`;
  const rules: string[] = [];
  const skipped: string[] = [];
  const names: string[] = [];
  for (const host of [d.address, ...d.aliases]) {
    const family = isIP(host);
    if (family === 4) rules.push(`ip daddr ${host}${port || ' meta l4proto tcp'}`);
    else if (family === 6) rules.push(`ip6 daddr ${host}${port || ' meta l4proto tcp'}`);
    else names.push(host);
  }
  for (const cidr of d.networkPrefixes) {
    const family = isIP(cidr.slice(0, cidr.lastIndexOf('/')));
    if (family) rules.push(`${family === 4 ? 'ip' : 'ip6'} daddr ${cidr}${port || ' meta l4proto tcp'}`);
  }
  if (names.length) {
    if (port) rules.push(port.trim());
    else skipped.push(`${names.join(', ')} (any port): a name without a port cannot be matched by nftables`);
  }
  return { rules, skipped };
}

/** The ruleset text for `table` (deterministic: sorted, no duplicates). */
export function transparentRuleset(table: RuleTable | null, opts: NftOptions): string {
  const rules = new Set<string>();
  const skipped = new Set<string>();
  for (const d of destinationsOf(table)) {
    const m = matchesOf(d);
    for (const r of m.rules) rules.add(r);
    for (const s of m.skipped) skipped.add(s);
  }
  const sorted = [...rules].sort();
  return [
    `table inet ${NFT_TABLE} {`,
    '  chain output {',
    '    type nat hook output priority -100; policy accept;',
    `    meta skuid ${opts.excludeUid} return`,
    ...sorted.map((r) => `    ${r} redirect to :${opts.transparentPort}`),
    ...[...skipped].sort().map((s) => `    # not redirected: ${s.replace(/[\r\n]/g, ' ')}`),
    '  }',
    '}',
    '',
  ].join('\n');
}

/** A script that replaces the table atomically (creating it first, so the delete never fails). */
export function replaceScript(ruleset: string): string {
  return `table inet ${NFT_TABLE}\ndelete table inet ${NFT_TABLE}\n${ruleset}`;
}

function nft(args: string[], input?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('nft', args, { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err)
        reject(
          new Error(
            `nft ${args.join(' ')}: ${String(stderr).trim().split('\n')[0] || (err as Error).message}`,
          ),
        );
      else resolve();
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

/**
 * Keeps the `inet riptides` table in line with the rule table in force: `apply(table)` installs or replaces it
 * when its text changed, `remove()` deletes it. Calls run one at a time, in order. Needs CAP_NET_ADMIN and the
 * `nft` command (Debian: nftables).
 */
export class NftRedirect {
  private applied: string | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: NftOptions) {}

  /** Installs the rules for `table`; resolves with the ruleset in force, rejects with nft's reason. */
  apply(table: RuleTable | null): Promise<string> {
    const ruleset = transparentRuleset(table, this.opts);
    return this.serial(async () => {
      if (ruleset !== this.applied) {
        await nft(['-f', '-'], replaceScript(ruleset));
        this.applied = ruleset;
      }
      return ruleset;
    });
  }

  /** Deletes the table (nothing to do when it was never installed). */
  remove(): Promise<void> {
    return this.serial(async () => {
      if (this.applied === null) return;
      this.applied = null;
      await nft(['delete', 'table', 'inet', NFT_TABLE]);
    });
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => {});
    return run;
  }
}
