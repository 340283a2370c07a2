/**
 * The kernel side of the control interface: what the real module does when the daemon programs it. It loads
 * the tree the agent wrote, checks it as a whole (the rule table's shape and references, and that every SVID
 * the table names is on disk with that serial, for that SPIFFE ID, with its key), and only then puts it in
 * force. A table that fails is refused: the previous one stays in force, `rules.enforced` says which version
 * is enforced and why the new one was refused, and `health` turns DEGRADED until a good one arrives. The data
 * plane takes what it enforces from here (`current()`, the `enforced` event) and never reads a half-checked
 * tree.
 *
 * It notices changes through inotify (fs.watch on the tree's directories) and, because inotify can drop
 * events or be unavailable, through a cheap poll of the files' identities (inode, size, mtime).
 */
import { EventEmitter } from 'node:events';
import { type FSWatcher, watch } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type ControlConfig,
  ControlPaths,
  type EnforcedStatus,
  Modes,
  type ProcessRecord,
  type ProcessTable,
  type RuleTable,
  SVID_CERT_FILE,
  SVID_KEY_FILE,
} from './abi.ts';
import { writeFileAtomic } from './atomic.ts';
import { ControlError, messageOf } from './errors.ts';
import { interceptCaProblem } from './intercept-ca.ts';
import { makeDirs } from './make-dirs.ts';
import { sha256Hex } from './manifest.ts';
import { readCapped, readJson } from './read.ts';
import type { HealthStatus } from './reader.ts';
import { checkSvid, normalizeSerial } from './svid.ts';
import { parseCertificateBundle } from './trust-store.ts';
import {
  describeDiagnostics,
  Limits,
  validateConfig,
  validateProcessTable,
  validateRuleTable,
} from './validate.ts';

export interface LoadedSvid {
  spiffeId: string;
  /** Leaf then chain, PEM. */
  certPem: string;
  keyPem: string;
  serial: string;
  notAfter: Date;
}

/** Everything the data plane enforces, loaded and checked together. */
export interface EnforcedState {
  generation: number;
  version: string;
  table: RuleTable;
  /** By SPIFFE ID; only identities whose `svid` is set. */
  svids: ReadonlyMap<string, LoadedSvid>;
  /** The trust bundle's certificates (PEM blocks), or null when none was written. */
  trustBundle: string[] | null;
  interceptCa: { certPem: string; keyPem: string } | null;
  config: ControlConfig | null;
  loadedAt: Date;
}

export interface Refusal {
  what: 'rules' | 'processes';
  generation: number | null;
  version: string | null;
  reason: string;
}

export interface ControlModuleEvents {
  enforced: [EnforcedState];
  refused: [Refusal];
  processes: [ProcessTable];
  health: [HealthStatus];
}

export interface ControlModuleOptions {
  root: string;
  /** The safety-net poll of file identities. Default 1000 ms. */
  pollIntervalMs?: number;
  /** How long a burst of changes is let settle before one reload. Default 10 ms. */
  debounceMs?: number;
  now?: () => Date;
}

/** Files whose change means "reload"; with their caps. */
const WATCHED = [
  ControlPaths.rules,
  ControlPaths.config,
  ControlPaths.trustBundle,
  ControlPaths.interceptCaCert,
  ControlPaths.interceptCaKey,
  ControlPaths.processes,
] as const;

/** One line, printable: a reason goes into `health` and `rules.enforced`. */
function oneLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').slice(0, 1000);
}

export class ControlModule extends EventEmitter<ControlModuleEvents> {
  readonly root: string;
  readonly #opts: Required<Omit<ControlModuleOptions, 'root' | 'now'>> & { now: () => Date };
  #state: EnforcedState | null = null;
  #tableDigest = '';
  #processes: ProcessTable | null = null;
  #byPid = new Map<number, ProcessRecord>();
  #signatures = new Map<string, string>();
  #problems: { rules: string | null; processes: string | null } = { rules: null, processes: null };
  #health: HealthStatus | null = null;
  #watchers: FSWatcher[] = [];
  #pollTimer: NodeJS.Timeout | undefined;
  #debounceTimer: NodeJS.Timeout | undefined;
  #running: Promise<void> | null = null;
  #again = false;
  #started = false;

  constructor(opts: ControlModuleOptions) {
    super();
    this.root = opts.root;
    this.#opts = {
      pollIntervalMs: opts.pollIntervalMs ?? 1000,
      debounceMs: opts.debounceMs ?? 10,
      now: opts.now ?? (() => new Date()),
    };
  }

  /** Loads what is there, then follows changes. Resolves once the first load has been judged. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await makeDirs(this.root, Modes.root);
    await this.reload();
    this.#watch();
    this.#pollTimer = setInterval(() => void this.#poll(), this.#opts.pollIntervalMs);
    this.#pollTimer.unref();
  }

  /** Stops following changes and removes `health` (an unloaded module has no sysfs directory). */
  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
    clearInterval(this.#pollTimer);
    clearTimeout(this.#debounceTimer);
    await this.#running?.catch(() => {});
    await rm(join(this.root, ControlPaths.health), { force: true });
  }

  /** What is in force, or null when no table has ever been accepted. */
  current(): EnforcedState | null {
    return this.#state;
  }

  /** The process table in force (the agent's attestation), or null before the first. */
  processes(): ProcessTable | null {
    return this.#processes;
  }

  /**
   * The attested process with this pid, when its start time matches (so a reused pid never inherits the
   * identity of the process that had the pid before). Without `startTime` the pid alone is looked up.
   */
  process(pid: number, startTime?: number): ProcessRecord | undefined {
    const r = this.#byPid.get(pid);
    if (r && startTime !== undefined && r.startTime !== startTime) return undefined;
    return r;
  }

  health(): HealthStatus {
    return this.#health ?? { state: 'absent' };
  }

  /** Loads the tree now (also what file changes trigger). Concurrent calls coalesce into one more pass. */
  reload(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.#reloadOnce();
        } while (this.#again);
      } finally {
        this.#running = null;
      }
    })();
    return this.#running;
  }

  #schedule(): void {
    if (!this.#started) return;
    clearTimeout(this.#debounceTimer);
    this.#debounceTimer = setTimeout(() => void this.reload(), this.#opts.debounceMs);
  }

  #watch(): void {
    for (const dir of ['', 'certs', 'private']) {
      try {
        const w = watch(join(this.root, dir), { persistent: false }, () => this.#schedule());
        w.on('error', () => {}); // the poll still covers it
        this.#watchers.push(w);
      } catch {
        // No inotify here (or the directory is not there yet): the poll covers it.
      }
    }
  }

  async #signature(rel: string): Promise<string> {
    try {
      const st = await stat(join(this.root, rel), { bigint: true });
      return `${st.ino}:${st.size}:${st.mtimeNs}`;
    } catch {
      return 'absent';
    }
  }

  async #poll(): Promise<void> {
    for (const rel of WATCHED) {
      if ((await this.#signature(rel)) !== this.#signatures.get(rel)) {
        this.#schedule();
        return;
      }
    }
    // SVIDs expire without any file changing.
    await this.#updateHealth();
  }

  async #reloadOnce(): Promise<void> {
    const before = new Map(this.#signatures);
    for (const rel of WATCHED) this.#signatures.set(rel, await this.#signature(rel));
    const changed = (rel: string) => before.get(rel) !== this.#signatures.get(rel);
    if (changed(ControlPaths.processes)) await this.#loadProcesses();
    if (WATCHED.some((rel) => rel !== ControlPaths.processes && changed(rel))) await this.#loadRules();
    await this.#updateHealth();
  }

  async #loadProcesses(): Promise<void> {
    let raw: unknown;
    try {
      raw = await readJson(join(this.root, ControlPaths.processes), Limits.processesBytes);
    } catch (err) {
      return this.#refuseProcesses(null, messageOf(err));
    }
    if (raw === null) return; // never written, or removed: keep what is known
    const checked = validateProcessTable(raw);
    if (!checked.ok)
      return this.#refuseProcesses(generationOf(raw), describeDiagnostics(checked.diagnostics));
    if (this.#processes && checked.value.generation <= this.#processes.generation) return;
    this.#processes = checked.value;
    this.#byPid = new Map(checked.value.processes.map((p) => [p.pid, p]));
    this.#problems.processes = null;
    this.emit('processes', checked.value);
  }

  #refuseProcesses(generation: number | null, reason: string): void {
    this.#problems.processes = `process table${generation !== null ? ` generation ${generation}` : ''} refused: ${oneLine(reason)}`;
    this.emit('refused', { what: 'processes', generation, version: null, reason: oneLine(reason) });
  }

  async #loadRules(): Promise<void> {
    let raw: unknown;
    try {
      raw = await readJson(join(this.root, ControlPaths.rules), Limits.rulesBytes);
    } catch (err) {
      return this.#refuse(null, null, messageOf(err));
    }
    if (raw === null) {
      if (this.#state) return this.#refuse(null, null, `${ControlPaths.rules} was removed`);
      return this.#writeEnforced();
    }
    const checked = validateRuleTable(raw);
    if (!checked.ok)
      return this.#refuse(generationOf(raw), versionOf(raw), describeDiagnostics(checked.diagnostics));
    const table = checked.value;
    const digest = sha256Hex(JSON.stringify(table));
    if (this.#state && table.generation < this.#state.generation)
      return this.#refuse(
        table.generation,
        table.version,
        `generation ${table.generation} is older than generation ${this.#state.generation} in force (a replayed table)`,
      );
    // The writer numbers every table it writes: the same number with other content was not written by it.
    if (this.#state && table.generation === this.#state.generation && digest !== this.#tableDigest)
      return this.#refuse(
        table.generation,
        table.version,
        `generation ${table.generation} is already in force with other content (edited outside the writer)`,
      );
    try {
      this.#state = await this.#assemble(table);
      this.#tableDigest = digest;
    } catch (err) {
      return this.#refuse(table.generation, table.version, messageOf(err));
    }
    this.#problems.rules = null;
    // Health, then the data plane (listeners), then the verdict on disk: whoever reads the verdict sees the
    // health that goes with it, and the state it names is already in force.
    await this.#updateHealth();
    this.emit('enforced', this.#state);
    await this.#writeEnforced();
  }

  /** Everything the table needs, read and checked; throws with the reason when anything does not hold. */
  async #assemble(table: RuleTable): Promise<EnforcedState> {
    const previous = this.#state?.svids;
    const svids = new Map<string, LoadedSvid>();
    for (const identity of table.identities) {
      if (!identity.svid) continue;
      const want = normalizeSerial(identity.svid.serial);
      const cached = previous?.get(identity.spiffeId);
      if (cached && cached.serial === want) {
        svids.set(identity.spiffeId, cached);
        continue;
      }
      const dir = join(this.root, identity.svid.dir);
      const [cert, key] = await Promise.all([
        readCapped(join(dir, SVID_CERT_FILE), Limits.pemBytes),
        readCapped(join(dir, SVID_KEY_FILE), Limits.pemBytes),
      ]);
      if (!cert || !key)
        throw new Error(
          `the SVID of ${identity.spiffeId} is not in ${identity.svid.dir} (${!cert ? SVID_CERT_FILE : SVID_KEY_FILE} missing)`,
        );
      let facts: ReturnType<typeof checkSvid>;
      try {
        facts = checkSvid(identity.spiffeId, cert.toString('utf8'), key.toString('utf8'));
      } catch (err) {
        throw new Error(`the SVID in ${identity.svid.dir} for ${identity.spiffeId}: ${messageOf(err)}`);
      }
      if (facts.serial !== want)
        throw new Error(
          `the SVID in ${identity.svid.dir} has serial ${facts.serial}, the table says ${want}`,
        );
      svids.set(identity.spiffeId, {
        spiffeId: identity.spiffeId,
        certPem: facts.chain.join(''),
        keyPem: key.toString('utf8'),
        serial: facts.serial,
        notAfter: new Date(facts.notAfter),
      });
    }
    const bundleText = await readCapped(join(this.root, ControlPaths.trustBundle), Limits.pemBytes);
    let trustBundle: string[] | null = null;
    if (bundleText)
      trustBundle = parseCertificateBundle(bundleText.toString('utf8'), ControlPaths.trustBundle);
    const [caCert, caKey] = await Promise.all([
      readCapped(join(this.root, ControlPaths.interceptCaCert), Limits.pemBytes),
      readCapped(join(this.root, ControlPaths.interceptCaKey), Limits.pemBytes),
    ]);
    let interceptCa: EnforcedState['interceptCa'] = null;
    if (caCert && caKey) {
      interceptCa = { certPem: caCert.toString('utf8'), keyPem: caKey.toString('utf8') };
      const problem = interceptCaProblem(interceptCa, this.#opts.now());
      if (problem && !problem.startsWith('it expires')) throw new Error(`the intercept CA: ${problem}`);
    }
    const rawConfig = await readJson(join(this.root, ControlPaths.config), Limits.smallFileBytes);
    let config: ControlConfig | null = null;
    if (rawConfig !== null) {
      const checked = validateConfig(rawConfig);
      if (!checked.ok) throw new Error(`${ControlPaths.config}: ${describeDiagnostics(checked.diagnostics)}`);
      config = checked.value;
      if (config.trust_domain !== table.trustDomain)
        throw new Error(
          `the table's trust domain "${table.trustDomain}" is not the module's "${config.trust_domain}"`,
        );
    }
    return {
      generation: table.generation,
      version: table.version,
      table,
      svids,
      trustBundle,
      interceptCa,
      config,
      loadedAt: this.#opts.now(),
    };
  }

  async #refuse(generation: number | null, version: string | null, reason: string): Promise<void> {
    const line = oneLine(reason);
    const kept = this.#state ? `generation ${this.#state.generation} stays in force` : 'nothing is enforced';
    this.#problems.rules = `rule table${generation !== null ? ` generation ${generation}` : ''} refused (${kept}): ${line}`;
    await this.#updateHealth();
    this.emit('refused', { what: 'rules', generation, version, reason: line });
    await this.#writeEnforced({ generation, version, reason: line });
  }

  async #writeEnforced(error?: EnforcedStatus['error']): Promise<void> {
    const status: EnforcedStatus = {
      version: this.#state?.version ?? null,
      generation: this.#state?.generation ?? null,
      at: this.#opts.now().toISOString(),
      ...(error ? { error } : {}),
    };
    await this.#put(ControlPaths.enforced, `${JSON.stringify(status)}\n`, Modes.privateFile);
  }

  async #updateHealth(): Promise<void> {
    const now = this.#opts.now().getTime();
    let expired: string | null = null;
    for (const svid of this.#state?.svids.values() ?? []) {
      if (svid.notAfter.getTime() <= now) {
        expired = `the SVID of ${svid.spiffeId} expired at ${svid.notAfter.toISOString()}`;
        break;
      }
    }
    const reason = this.#problems.rules ?? this.#problems.processes ?? expired;
    const next: HealthStatus = reason ? { state: 'degraded', reason: oneLine(reason) } : { state: 'ok' };
    const same =
      this.#health?.state === next.state &&
      (next.state !== 'degraded' || (this.#health as { reason?: string }).reason === next.reason);
    if (same) return;
    this.#health = next;
    if (!this.#started && this.#running === null) return;
    await this.#put(
      ControlPaths.health,
      next.state === 'ok' ? 'OK\n' : `DEGRADED: ${next.reason}\n`,
      Modes.publicFile,
    );
    this.emit('health', next);
  }

  async #put(rel: string, text: string, mode: number): Promise<void> {
    try {
      await writeFileAtomic(join(this.root, rel), text, mode);
    } catch (err) {
      // The tree may be gone (an agent's state dir removed): nothing to report into. Say so on the state.
      this.#problems.rules ??= new ControlError('io', `cannot write ${rel}: ${messageOf(err)}`, '').message;
    }
  }
}

function generationOf(raw: unknown): number | null {
  const g = (raw as { generation?: unknown } | null)?.generation;
  return typeof g === 'number' && Number.isSafeInteger(g) ? g : null;
}

function versionOf(raw: unknown): string | null {
  const v = (raw as { version?: unknown } | null)?.version;
  return typeof v === 'string' ? v.slice(0, 128) : null;
}
