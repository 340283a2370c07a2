/**
 * The one reader of the control tree, for the data plane, drift reports and tests. Every read is bounded
 * (read.ts), parsed and validated against the ABI; a missing file reads as null, a damaged one throws
 * ControlError naming the file. Reads never see a partial file: the writer replaces files atomically.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type ConnectionRecord,
  type ControlConfig,
  ControlPaths,
  type EnforcedStatus,
  type Manifest,
  type ProcessTable,
  type RuleTable,
  SVID_CERT_FILE,
  SVID_KEY_FILE,
  svidDirOf,
} from './abi.ts';
import { ControlError, messageOf } from './errors.ts';
import { computeDrift, type DriftReport } from './manifest.ts';
import { readCapped, readJson } from './read.ts';
import { checkSvid, type SvidFacts } from './svid.ts';
import {
  type Checked,
  describeDiagnostics,
  Limits,
  validateConfig,
  validateManifest,
  validateProcessTable,
  validateRuleTable,
} from './validate.ts';

export type HealthStatus =
  | { state: 'ok' }
  | { state: 'degraded'; reason: string }
  /** No `health` file: the kernel side is not running (as an unloaded module has no sysfs directory). */
  | { state: 'absent' };

/** Parses the `health` file's text. */
export function parseHealth(text: string): HealthStatus {
  const line = text.split('\n', 1)[0] ?? '';
  if (line === 'OK') return { state: 'ok' };
  if (line.startsWith('DEGRADED: ')) return { state: 'degraded', reason: line.slice('DEGRADED: '.length) };
  return { state: 'degraded', reason: `unreadable health ${JSON.stringify(line.slice(0, 80))}` };
}

function validated<T>(path: string, checked: Checked<T>): T {
  if (!checked.ok)
    throw new ControlError(
      'invalid',
      `${path}: ${describeDiagnostics(checked.diagnostics)}`,
      'rewrite it from the agent',
    );
  return checked.value;
}

export class ControlReader {
  constructor(readonly root: string) {}

  #path(rel: string): string {
    return join(this.root, rel);
  }

  async #text(rel: string, cap: number): Promise<string | null> {
    const data = await readCapped(this.#path(rel), cap);
    return data === null ? null : data.toString('utf8');
  }

  async config(): Promise<ControlConfig | null> {
    const raw = await readJson(this.#path(ControlPaths.config), Limits.smallFileBytes);
    return raw === null ? null : validated(this.#path(ControlPaths.config), validateConfig(raw));
  }

  /** The rule table the agent last wrote (not necessarily the one enforced: see {@link enforced}). */
  async rules(): Promise<RuleTable | null> {
    const raw = await readJson(this.#path(ControlPaths.rules), Limits.rulesBytes);
    return raw === null ? null : validated(this.#path(ControlPaths.rules), validateRuleTable(raw));
  }

  /** What the kernel side enforces, and why it refused the last table if it did. */
  async enforced(): Promise<EnforcedStatus | null> {
    const raw = (await readJson(
      this.#path(ControlPaths.enforced),
      Limits.smallFileBytes,
    )) as EnforcedStatus | null;
    if (raw === null) return null;
    const ok =
      typeof raw === 'object' &&
      (raw.version === null || typeof raw.version === 'string') &&
      (raw.generation === null || Number.isSafeInteger(raw.generation)) &&
      typeof raw.at === 'string';
    if (!ok)
      throw new ControlError(
        'invalid',
        `${this.#path(ControlPaths.enforced)} is not an enforced status`,
        'the kernel side rewrites it on its next load',
      );
    return raw;
  }

  async health(): Promise<HealthStatus> {
    const text = await this.#text(ControlPaths.health, Limits.smallFileBytes);
    return text === null ? { state: 'absent' } : parseHealth(text);
  }

  async processes(): Promise<ProcessTable | null> {
    const raw = await readJson(this.#path(ControlPaths.processes), Limits.processesBytes);
    return raw === null ? null : validated(this.#path(ControlPaths.processes), validateProcessTable(raw));
  }

  /** The data plane's `connections` table; a line that is not a JSON object is skipped. */
  async connections(): Promise<ConnectionRecord[]> {
    const text = await this.#text(ControlPaths.connections, Limits.processesBytes);
    if (text === null) return [];
    const out: ConnectionRecord[] = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        const v = JSON.parse(line) as unknown;
        if (v && typeof v === 'object' && !Array.isArray(v)) out.push(v as ConnectionRecord);
      } catch {
        // A torn or foreign line: not a connection.
      }
    }
    return out;
  }

  /** `certs/ca-certificates.crt`: what applications trust. */
  caBundle(): Promise<string | null> {
    return this.#text(ControlPaths.caBundle, Limits.pemBytes);
  }

  /** `certs/trust-bundle.crt`: what peers' SVIDs are verified against. */
  trustBundle(): Promise<string | null> {
    return this.#text(ControlPaths.trustBundle, Limits.pemBytes);
  }

  /** The intercept CA's certificate and key (the data plane mints application-facing certificates with it). */
  async interceptCa(): Promise<{ certPem: string; keyPem: string } | null> {
    const [certPem, keyPem] = await Promise.all([
      this.#text(ControlPaths.interceptCaCert, Limits.pemBytes),
      this.#text(ControlPaths.interceptCaKey, Limits.pemBytes),
    ]);
    return certPem && keyPem ? { certPem, keyPem } : null;
  }

  /**
   * An identity's SVID (chain PEM, key PEM) and its facts, checked to belong together and to the SPIFFE ID.
   * Null when the identity has none. A mismatch (a key that is not the certificate's) throws 'svid-mismatch'.
   */
  async svid(spiffeId: string): Promise<({ certPem: string; keyPem: string } & SvidFacts) | null> {
    const dir = svidDirOf(spiffeId);
    const [certPem, keyPem] = await Promise.all([
      this.#text(`${dir}/${SVID_CERT_FILE}`, Limits.pemBytes),
      this.#text(`${dir}/${SVID_KEY_FILE}`, Limits.pemBytes),
    ]);
    if (certPem === null || keyPem === null) return null;
    try {
      return { certPem, keyPem, ...checkSvid(spiffeId, certPem, keyPem) };
    } catch (err) {
      throw new ControlError(
        'svid-mismatch',
        `${this.#path(dir)}: ${messageOf(err)}`,
        'the agent rewrites it on its next SVID rotation',
      );
    }
  }

  /** The files of a `sysfs` credential directory (`<binding-hash>/<binding-name>`), by name. */
  async sysfsCredential(dir: string): Promise<Record<string, string> | null> {
    if (!/^[0-9a-f]{16,64}\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(dir)) return null;
    const rel = `${ControlPaths.credentials}/${dir}`;
    let names: string[];
    try {
      names = await readdir(this.#path(rel));
    } catch {
      return null;
    }
    const out: Record<string, string> = {};
    for (const name of names.sort()) {
      if (name.startsWith('.')) continue;
      const text = await this.#text(`${rel}/${name}`, Limits.smallFileBytes);
      if (text !== null) out[name] = text;
    }
    return out;
  }

  /**
   * Waits until the kernel side has judged rule-table `generation`: `enforced` when it (or a later one) is in
   * force, `refused` with the reason when it was refused, `timeout` after `timeoutMs` (kernel side not running
   * or busy). Polls `rules.enforced` every `intervalMs`; the deadline is overall.
   */
  async waitForEnforced(
    generation: number,
    opts: { timeoutMs: number; intervalMs?: number },
  ): Promise<{ result: 'enforced' | 'refused' | 'timeout'; status: EnforcedStatus | null }> {
    const deadline = Date.now() + opts.timeoutMs;
    let status: EnforcedStatus | null = null;
    for (;;) {
      try {
        status = await this.enforced();
      } catch {
        status = null; // being rewritten by a foreign hand: look again
      }
      if (status?.error && status.error.generation !== null && status.error.generation >= generation)
        return { result: 'refused', status };
      if (status?.generation !== null && status?.generation !== undefined && status.generation >= generation)
        return { result: 'enforced', status };
      const left = deadline - Date.now();
      if (left <= 0) return { result: 'timeout', status };
      await sleep(Math.min(opts.intervalMs ?? 20, left));
    }
  }

  async manifest(): Promise<Manifest | null> {
    const raw = await readJson(this.#path(ControlPaths.manifest), Limits.manifestBytes);
    return raw === null ? null : validated(this.#path(ControlPaths.manifest), validateManifest(raw));
  }

  /**
   * Files changed, added or removed (or re-moded) since the writer wrote them. Without a manifest, everything
   * in the tree is reported as added.
   */
  async drift(): Promise<DriftReport> {
    let manifest: Manifest | null = null;
    try {
      manifest = await this.manifest();
    } catch {
      manifest = null; // a damaged manifest vouches for nothing
    }
    return computeDrift(this.root, manifest ?? { abi: 1, generation: 0, files: {} });
  }
}
