/**
 * The node side of the agent: the kernel module's control interface (kernel-module/control: one writer, the
 * kernel side that validates and enforces, the in-memory credential store) and process attestation
 * (agent/attest). The agent talks to the node only through this module.
 *
 * In this user-space re-creation the kernel side runs in the agent's process (as the real module runs in
 * the agent's kernel); the data plane reads the same control tree and credential store.
 */
import {
  type ControlConfig,
  ControlError,
  ControlModule,
  ControlReader,
  ControlWriter,
  CredentialStore,
  hasDrift,
  Limits,
  type ProcessRecord,
  type RuleTableInput,
  type CredentialValue as StoreValue,
  svidDirOf,
} from '../kernel-module/control/index.ts';
import { Attestor, type AttestorOptions } from './attest/index.ts';
import type {
  ControlHealth,
  CredentialRef,
  CredentialValue,
  Destination,
  Identity,
  TlsMode,
} from './protocol/messages.ts';
import type { Program } from './protocol/program.ts';

const MODE = {
  TLS_MODE_MUTUAL: 'MUTUAL',
  TLS_MODE_PERMISSIVE: 'PERMISSIVE',
  TLS_MODE_SIMPLE: 'SIMPLE',
} as const;

function mode(m: TlsMode): 'MUTUAL' | 'PERMISSIVE' | 'SIMPLE' | null {
  return m === 'TLS_MODE_UNSPECIFIED' ? null : MODE[m];
}

function destination(d: Destination) {
  return {
    service: d.service,
    external: d.external,
    address: d.address,
    port: d.port === 0 ? null : d.port,
    aliases: d.aliases,
    networkPrefixes: d.networkPrefixes,
  };
}

/** The credential kind the data plane injects for a source type. */
function credentialKind(ref: CredentialRef): 'bearer' | 'aws' | 'unsupported' {
  if (!ref.source?.supported) return 'unsupported';
  return ref.source.type === 'aws' ? 'aws' : 'bearer';
}

const nameOf = (resource: string) => resource.slice(resource.lastIndexOf('/') + 1);

export interface SvidFact {
  serial: string;
  notAfter: Date;
}

/**
 * The bytes the destinations of `program` take in its rule table, counted per use: each identity lists every
 * destination of each of its egress rules and credentials, so 3,000 identities sharing one rule toward 2,000
 * Services write 6 million of them. Each distinct list is measured once; nothing is built.
 */
function destinationBytes(program: Program): number {
  const sizeOf = new Map<string, number>();
  const size = (hash: string, list: readonly Destination[]) => {
    let n = sizeOf.get(hash);
    if (n === undefined) {
      n = Buffer.byteLength(JSON.stringify(list.map(destination)));
      sizeOf.set(hash, n);
    }
    return n;
  };
  let total = 0;
  for (const i of program.identities.values()) {
    for (const h of i.egressRuleHashes) total += size(h, program.rules.get(h)!.destinations);
    for (const h of i.credentialRefHashes) {
      const injection = program.credentialRefs.get(h)!.injection;
      if (injection) total += size(h, injection.destinations);
    }
  }
  return total;
}

/**
 * A program → the control interface's rule table, naming the SVIDs installed. Throws ControlError('too-large')
 * before building anything when its destinations alone exceed the table's cap (`Limits.rulesBytes`): such a table
 * could never be written, and building it first took gigabytes.
 */
export function ruleTableOf(program: Program, svids: ReadonlyMap<string, SvidFact>): RuleTableInput {
  const bytes = destinationBytes(program);
  if (bytes > Limits.rulesBytes)
    throw new ControlError(
      'too-large',
      `rule table refused: its egress and injection destinations alone come to ${bytes} bytes, over the ${Limits.rulesBytes}-byte cap (every identity lists every destination of its rules)`,
      'split the scope into smaller daemon groups, or select fewer Services per egress rule and binding',
    );
  const identity = (i: Identity) => {
    const refs = i.credentialRefHashes.map((h) => program.credentialRefs.get(h)!);
    const svid = svids.get(i.spiffeId);
    return {
      spiffeId: i.spiffeId,
      workloadID: i.workloadId,
      hash: i.hash,
      inbound: {
        mode: mode(i.inboundMode) ?? 'PERMISSIVE',
        intercept: i.intercept,
        allowedSpiffeIds: i.allowedInbound,
      },
      outbound: { allowedSpiffeIds: i.allowedOutbound },
      egress: i.egressRuleHashes.map((h) => {
        const r = program.rules.get(h)!;
        return {
          hash: r.hash,
          destinations: r.destinations.map(destination),
          tls: { mode: mode(r.mode), intercept: r.intercept },
          allowedSpiffeIds: r.allowedSpiffeIds,
          // The older form names its credential on the rule (egress[].credentialName → WorkloadCredential).
          credentials: r.credentialName
            ? refs
                .filter((c) => c.via === 'WorkloadCredential' && nameOf(c.resource) === r.credentialName)
                .map((c) => c.hash)
            : [],
        };
      }),
      credentials: refs.map((c) => ({
        hash: c.hash,
        binding: c.resource,
        name: nameOf(c.resource),
        kind: credentialKind(c),
        injection: c.injection ? { destinations: c.injection.destinations.map(destination) } : null,
        sysfs: c.sysfs ? { dir: c.sysfs.dir } : null,
      })),
      svid: svid
        ? { dir: svidDirOf(i.spiffeId), serial: svid.serial, notAfter: svid.notAfter.toISOString() }
        : null,
    };
  };
  return {
    version: program.version,
    trustDomain: program.trustDomain,
    identities: [...program.identities.values()].map(identity),
  };
}

/** A wire credential value → the credential store's form. */
export function storeValue(v: CredentialValue): StoreValue | null {
  if (v.value === 'bearer' && v.bearer) return { kind: 'bearer', token: v.bearer.token };
  if (v.value === 'aws' && v.aws)
    return {
      kind: 'aws',
      accessKeyId: v.aws.accessKeyId,
      secretAccessKey: v.aws.secretAccessKey,
      sessionToken: v.aws.sessionToken,
      expiresAt: v.expiresAtUnix ? new Date(v.expiresAtUnix * 1000) : null,
    };
  return null;
}

/** Paths of the control interface that differ from what the writer wrote, by how. */
export interface DriftPaths {
  changed: string[];
  added: string[];
  removed: string[];
  modes: string[];
}

export type EnforceResult = { ok: true; generation: number } | { ok: false; reason: string };

export interface NodeOptions {
  /** Root of the control interface. */
  controlRoot: string;
  /** Run the kernel side here (default); false when another process (the data plane) runs it. */
  kernelSide?: boolean;
  /** How long to wait for the kernel side's verdict on a rule table. */
  enforceTimeoutMs?: number;
  attest?: AttestorOptions;
}

export class NodeSide {
  readonly credentials = new CredentialStore();
  readonly reader: ControlReader;
  readonly attestor: Attestor;
  readonly module: ControlModule | null;

  private constructor(
    readonly writer: ControlWriter,
    private readonly opts: NodeOptions,
  ) {
    this.reader = new ControlReader(opts.controlRoot);
    this.module = opts.kernelSide === false ? null : new ControlModule({ root: opts.controlRoot });
    this.attestor = new Attestor(opts.attest ?? {});
  }

  static async open(opts: NodeOptions): Promise<NodeSide> {
    const writer = await ControlWriter.open(opts.controlRoot);
    return new NodeSide(writer, opts);
  }

  /** config, the intercept CA and the trust bundle; then the kernel side starts. */
  async init(config: { trustDomain: string; daemonId: string }, bundlePem: string): Promise<ControlConfig> {
    const written = await this.writer.writeConfig(config);
    await this.writer.ensureInterceptCa();
    await this.writer.writeTrustBundle(bundlePem);
    await this.module?.start();
    return written;
  }

  setTrustBundle(pem: string): Promise<void> {
    return this.writer.writeTrustBundle(pem);
  }

  /** Writes the program's table; resolves with the kernel side's verdict (never throws for a refusal). */
  async enforce(program: Program, svids: ReadonlyMap<string, SvidFact>): Promise<EnforceResult> {
    let generation: number;
    try {
      generation = (await this.writer.writeRules(ruleTableOf(program, svids))).generation;
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    const verdict = await this.reader.waitForEnforced(generation, {
      timeoutMs: this.opts.enforceTimeoutMs ?? (this.module ? 10_000 : 2000),
    });
    if (verdict.result === 'refused')
      return { ok: false, reason: verdict.status?.error?.reason ?? 'refused by the kernel side' };
    // 'timeout' with no kernel side running: written, and loaded when it starts (as sysfs files are).
    return { ok: true, generation };
  }

  async installedSvid(spiffeId: string) {
    try {
      return await this.reader.svid(spiffeId);
    } catch {
      return null;
    }
  }

  installSvid(spiffeId: string, chainPem: string, keyPem: string) {
    return this.writer.writeSvid(spiffeId, { certPem: chainPem, keyPem });
  }

  removeSvid(spiffeId: string): Promise<void> {
    return this.writer.removeSvid(spiffeId);
  }

  writeSysfs(dir: string, value: StoreValue): Promise<void> {
    return this.writer.writeSysfsCredential(dir, value);
  }

  removeSysfs(dir: string): Promise<void> {
    return this.writer.removeSysfsCredential(dir);
  }

  writeProcesses(records: ProcessRecord[]) {
    return this.writer.writeProcesses(records);
  }

  /** Drops SVID directories and sysfs credentials no identity of the program uses any more. */
  prune(keep: { spiffeIds: Iterable<string>; sysfsDirs: Iterable<string> }): Promise<string[]> {
    return this.writer.prune(keep);
  }

  /**
   * Writes again every file of the control interface the writer owns, from what the agent holds: config, the
   * trust bundle and `ca-certificates.crt`, the intercept CA (a new one when its files were edited: a CA
   * swapped in by hand is never kept), `sysfs` credential files from the values in memory, the process table;
   * identity and credential directories the program does not use are removed. The rule table and SVIDs are
   * the caller's (enforce, and new SVIDs for edited ones). Returns the drift found before, as paths.
   */
  async repair(input: {
    config: { trustDomain: string; daemonId: string };
    bundlePem: string;
    program: Program | null;
    svids: Iterable<string>;
    processes: ProcessRecord[];
  }): Promise<{ before: DriftPaths; pruned: string[] }> {
    const drift = await this.reader.drift().catch(() => null);
    const before: DriftPaths = {
      changed: drift?.changed ?? [],
      added: drift?.added ?? [],
      removed: drift?.removed ?? [],
      modes: drift?.modes.map((m) => m.path) ?? [],
    };
    await this.writer.ensureInterceptCa();
    const sysfs: Array<{ dir: string; value: StoreValue }> = [];
    for (const ref of this.credentialRefsOf(input.program)) {
      const loaded = ref.sysfs ? this.credentials.get(ref.hash) : undefined;
      if (ref.sysfs && loaded) sysfs.push({ dir: ref.sysfs.dir, value: loaded.value() });
    }
    const pruned = await this.writer.batch(async (w) => {
      await w.writeConfig(input.config);
      await w.writeTrustBundle(input.bundlePem);
      for (const { dir, value } of sysfs) await w.writeSysfsCredential(dir, value);
      await w.writeProcesses(input.processes);
      return w.prune({
        spiffeIds: input.svids,
        sysfsDirs: this.credentialRefsOf(input.program).flatMap((r) => (r.sysfs ? [r.sysfs.dir] : [])),
      });
    });
    return { before, pruned };
  }

  private credentialRefsOf(program: Program | null): CredentialRef[] {
    return [...(program?.credentialRefs.values() ?? [])];
  }

  /** The control interface's health as reported upstream. */
  async health(): Promise<ControlHealth> {
    const [health, enforced, drift] = await Promise.all([
      this.reader.health().catch(() => ({ state: 'degraded' as const, reason: 'health unreadable' })),
      this.reader.enforced().catch(() => null),
      this.reader.drift().catch(() => null),
    ]);
    const driftPaths =
      drift && hasDrift(drift)
        ? [
            ...drift.changed.map((p) => `changed ${p}`),
            ...drift.added.map((p) => `added ${p}`),
            ...drift.removed.map((p) => `removed ${p}`),
            ...drift.modes.map((m) => `mode ${m.path} ${m.actual} (expected ${m.expected})`),
          ]
        : [];
    return {
      health:
        health.state === 'ok'
          ? 'OK'
          : health.state === 'absent'
            ? 'ABSENT: the kernel side is not running'
            : `DEGRADED: ${health.reason}`,
      enforcedVersion: enforced?.version ?? '',
      enforcedGeneration: enforced?.generation ?? 0,
      error: enforced?.error?.reason ?? '',
      drift: driftPaths.slice(0, 1000),
    };
  }

  async close(): Promise<void> {
    await this.attestor.stop();
    await this.module?.stop();
  }
}
