/**
 * The one writer of the control tree (the agent's side of the ABI). Every file is replaced atomically
 * (atomic.ts) with its final mode, recorded in `manifest` (SHA-256 + mode) for drift detection, and every rule
 * or process table carries the next value of one monotonic generation counter, persisted in the manifest so
 * that a restarted writer continues above everything it wrote before. Operations run one at a time.
 *
 * Order matters where a reader could otherwise see a mismatch: an SVID's key is written before its
 * certificate, and the rule table that names a new SVID serial is written after both; the kernel side loads
 * SVIDs only when a rule table names them (module.ts), so it never pairs a new key with an old certificate.
 */
import { chmod, readdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CONTROL_ABI,
  type ControlConfig,
  ControlPaths,
  CREDENTIAL_FILES,
  type Manifest,
  Modes,
  type ProcessRecord,
  type ProcessTable,
  type RuleTable,
  SVID_CERT_FILE,
  SVID_KEY_FILE,
  sidOf,
  svidDirOf,
} from './abi.ts';
import { ensureDir, type Owner, writeFileAtomic } from './atomic.ts';
import type { CredentialValue } from './credential-store.ts';
import { ControlError, messageOf } from './errors.ts';
import { createInterceptCa, type InterceptCa, interceptCaProblem } from './intercept-ca.ts';
import { makeDirs } from './make-dirs.ts';
import { sha256Hex } from './manifest.ts';
import { readCapped, readJson } from './read.ts';
import { checkSvid } from './svid.ts';
import { composeCaBundle, loadSystemRoots, parseCertificateBundle, type SystemRoots } from './trust-store.ts';
import {
  describeDiagnostics,
  Limits,
  validateConfig,
  validateManifest,
  validateProcessTable,
  validateRuleTable,
} from './validate.ts';

export interface ControlWriterOptions {
  /** A PEM file of system roots instead of the distribution's (see trust-store.ts). */
  systemRootsFile?: string;
  now?: () => Date;
}

/** The rule table as the agent gives it: the writer adds `abi` and `generation`. */
export type RuleTableInput = Omit<RuleTable, 'abi' | 'generation'>;

/** The files of `sysfs` propagation for a credential value: `token`, or `credentials` (AWS shared-credentials format). */
export function sysfsFiles(value: CredentialValue): Record<string, string> {
  if (value.kind === 'bearer') return { [CREDENTIAL_FILES.bearer]: value.token };
  return {
    [CREDENTIAL_FILES.aws]:
      '[default]\n' +
      `aws_access_key_id = ${value.accessKeyId}\n` +
      `aws_secret_access_key = ${value.secretAccessKey}\n` +
      `aws_session_token = ${value.sessionToken}\n`,
  };
}

const SYSFS_DIR = /^([0-9a-f]{16,64})\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/;

function sysfsParts(dir: string): [string, string] {
  const m = SYSFS_DIR.exec(dir);
  if (!m || dir.length > 300)
    throw new ControlError(
      'invalid',
      `sysfs directory ${JSON.stringify(dir)} is not "<binding-hash>/<binding-name>"`,
      "pass the rule table's credentials[].sysfs.dir unchanged",
    );
  return [m[1]!, m[2]!];
}

export class ControlWriter {
  readonly root: string;
  #files: Manifest['files'];
  #generation: number;
  #systemRoots: SystemRoots;
  #queue: Promise<unknown> = Promise.resolve();
  #batchDepth = 0;
  #manifestDirty = false;
  readonly #opts: ControlWriterOptions;

  private constructor(root: string, manifest: Manifest, roots: SystemRoots, opts: ControlWriterOptions) {
    this.root = root;
    this.#files = { ...manifest.files };
    this.#generation = manifest.generation;
    this.#systemRoots = roots;
    this.#opts = opts;
  }

  /**
   * Opens (creating it when needed) the tree under `root`: directories with their modes, the manifest, the
   * generation to continue from (above any generation found in `rules`, `processes`, `rules.enforced` or the
   * manifest), and the system roots.
   */
  static async open(root: string, opts: ControlWriterOptions = {}): Promise<ControlWriter> {
    try {
      await makeDirs(root, Modes.root);
      await chmod(root, Modes.root);
      await ensureDir(root, 'certs', Modes.publicDir);
      await ensureDir(root, 'private', Modes.privateDir);
      await ensureDir(root, ControlPaths.identities, Modes.privateDir);
      await ensureDir(root, ControlPaths.credentials, Modes.traverseDir);
    } catch (err) {
      if (err instanceof ControlError) throw err;
      throw new ControlError(
        'io',
        `cannot prepare the control tree at ${root}: ${messageOf(err)}`,
        'check that the agent may write there (it runs as root in production)',
      );
    }
    const manifest = await loadManifest(root);
    let generation = manifest.generation;
    for (const path of [ControlPaths.rules, ControlPaths.processes]) {
      try {
        const v = (await readJson(join(root, path), Limits.rulesBytes)) as { generation?: unknown } | null;
        const g = Number(v?.generation ?? 0);
        if (Number.isSafeInteger(g) && g > generation) generation = g;
      } catch {
        // A damaged file says nothing about generations; the manifest still does.
      }
    }
    generation = Math.max(generation, await judgedGeneration(root));
    const roots = await loadSystemRoots(opts.systemRootsFile ? { file: opts.systemRootsFile } : {});
    return new ControlWriter(root, { ...manifest, generation }, roots, opts);
  }

  /** The last generation written. */
  get generation(): number {
    return this.#generation;
  }

  /** Where the system roots in `ca-certificates.crt` came from. */
  get systemRootsSource(): string {
    return this.#systemRoots.source;
  }

  #now(): Date {
    return this.#opts.now ? this.#opts.now() : new Date();
  }

  /** Runs operations one at a time, in call order; the manifest is flushed when the outermost one ends. */
  #run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(async () => {
      this.#batchDepth++;
      try {
        return await fn();
      } finally {
        this.#batchDepth--;
        if (this.#batchDepth === 0 && this.#manifestDirty) await this.#flushManifest();
      }
    });
    this.#queue = next.catch(() => {});
    return next;
  }

  /**
   * Runs several writes as one operation: one manifest write at the end instead of one per file (programming
   * a thousand identities writes a thousand SVIDs). Other calls wait until it ends.
   */
  batch<T>(fn: (w: BatchWriter) => Promise<T>): Promise<T> {
    return this.#run(() => fn(this.#batchWriter()));
  }

  async #write(rel: string, data: string | Uint8Array, mode: number, owner?: Owner): Promise<void> {
    try {
      await writeFileAtomic(join(this.root, rel), data, mode, owner);
    } catch (err) {
      throw new ControlError(
        'io',
        `cannot write ${join(this.root, rel)}: ${messageOf(err)}`,
        'check the disk and the permissions of the control tree',
      );
    }
    this.#files[rel] = { sha256: sha256Hex(data), mode };
    this.#manifestDirty = true;
  }

  async #remove(rel: string): Promise<void> {
    await rm(join(this.root, rel), { recursive: true, force: true });
    for (const path of Object.keys(this.#files))
      if (path === rel || path.startsWith(`${rel}/`)) delete this.#files[path];
    this.#manifestDirty = true;
  }

  async #flushManifest(): Promise<void> {
    const manifest: Manifest = { abi: CONTROL_ABI, generation: this.#generation, files: this.#files };
    await writeFileAtomic(
      join(this.root, ControlPaths.manifest),
      JSON.stringify(manifest),
      Modes.privateFile,
    );
    this.#manifestDirty = false;
  }

  #batchWriter(): BatchWriter {
    return {
      writeConfig: (c) => this.#writeConfig(c),
      writeTrustBundle: (pem) => this.#writeTrustBundle(pem),
      writeSvid: (id, pem) => this.#writeSvid(id, pem),
      removeSvid: (id) => this.#remove(svidDirOf(id)),
      writeSysfsCredential: (dir, value, owner) => this.#writeSysfs(dir, value, owner),
      removeSysfsCredential: (dir) => this.#removeSysfs(dir),
      writeRules: (t) => this.#writeRules(t),
      writeProcesses: (p) => this.#writeProcesses(p),
      prune: (keep) => this.#prune(keep),
    };
  }

  /** `config`: the module's trust domain and daemon ID (as the real module's `config`). */
  writeConfig(c: { trustDomain: string; daemonId: string }): Promise<ControlConfig> {
    return this.#run(() => this.#writeConfig(c));
  }

  async #writeConfig(c: { trustDomain: string; daemonId: string }): Promise<ControlConfig> {
    const checked = validateConfig({ abi: CONTROL_ABI, trust_domain: c.trustDomain, daemon_id: c.daemonId });
    if (!checked.ok)
      throw new ControlError(
        'invalid',
        `config refused: ${describeDiagnostics(checked.diagnostics)}`,
        'pass the trust domain name and the daemon ID',
      );
    await this.#write(ControlPaths.config, `${JSON.stringify(checked.value)}\n`, Modes.publicFile);
    return checked.value;
  }

  /**
   * The node's intercept CA: kept when it exists, matches its key and has more than 30 days left; created
   * otherwise (then `ca-certificates.crt` is rewritten to carry it). `reason` says why one was created.
   */
  ensureInterceptCa(
    opts: { commonName?: string } = {},
  ): Promise<{ certPem: string; created: boolean; reason?: string }> {
    return this.#run(async () => {
      const certPath = join(this.root, ControlPaths.interceptCaCert);
      const keyPath = join(this.root, ControlPaths.interceptCaKey);
      let existing: InterceptCa | null = null;
      let reason = 'none existed';
      try {
        const [cert, key] = await Promise.all([
          readCapped(certPath, Limits.pemBytes),
          readCapped(keyPath, Limits.pemBytes),
        ]);
        if (cert && key) existing = { certPem: cert.toString('utf8'), keyPem: key.toString('utf8') };
        else if (cert || key) reason = `only its ${cert ? 'certificate' : 'key'} was there`;
      } catch (err) {
        reason = messageOf(err);
      }
      if (existing) {
        const recorded = [
          [ControlPaths.interceptCaCert, existing.certPem],
          [ControlPaths.interceptCaKey, existing.keyPem],
        ].find(([rel, pem]) => this.#files[rel!] && this.#files[rel!]!.sha256 !== sha256Hex(pem!));
        // A CA swapped in by hand would let whoever made it read every intercepted request: never keep it.
        const problem = recorded
          ? `${recorded[0]} was changed outside the writer`
          : interceptCaProblem(existing, this.#now());
        if (!problem) {
          // Recorded so that drift detection knows these files even when an earlier writer made them.
          this.#files[ControlPaths.interceptCaCert] = {
            sha256: sha256Hex(existing.certPem),
            mode: Modes.publicFile,
          };
          this.#files[ControlPaths.interceptCaKey] = {
            sha256: sha256Hex(existing.keyPem),
            mode: Modes.privateFile,
          };
          this.#manifestDirty = true;
          return { certPem: existing.certPem, created: false };
        }
        reason = problem;
      }
      const ca = await createInterceptCa({ commonName: opts.commonName, now: this.#now() });
      await this.#write(ControlPaths.interceptCaKey, ca.keyPem, Modes.privateFile);
      await this.#write(ControlPaths.interceptCaCert, ca.certPem, Modes.publicFile);
      await this.#writeCaBundle();
      return { certPem: ca.certPem, created: true, reason };
    });
  }

  /** `certs/trust-bundle.crt` (the trust domain's authorities), then `ca-certificates.crt` to match. */
  writeTrustBundle(pem: string): Promise<void> {
    return this.#run(() => this.#writeTrustBundle(pem));
  }

  async #writeTrustBundle(pem: string): Promise<void> {
    let certs: string[];
    try {
      certs = parseCertificateBundle(pem, 'the trust bundle');
    } catch (err) {
      throw new ControlError('invalid', messageOf(err), 'pass the PEM bundle the reconciler serves');
    }
    await this.#write(ControlPaths.trustBundle, certs.join(''), Modes.publicFile);
    await this.#writeCaBundle();
  }

  /** Re-reads the system roots (after the host's trust store was updated) and rewrites `ca-certificates.crt`. */
  refreshSystemRoots(): Promise<string> {
    return this.#run(async () => {
      this.#systemRoots = await loadSystemRoots(
        this.#opts.systemRootsFile ? { file: this.#opts.systemRootsFile } : {},
      );
      await this.#writeCaBundle();
      return this.#systemRoots.source;
    });
  }

  async #writeCaBundle(): Promise<void> {
    const read = async (rel: string) =>
      (await readCapped(join(this.root, rel), Limits.pemBytes))?.toString('utf8') ?? null;
    const bundle = composeCaBundle({
      systemRoots: this.#systemRoots.pem,
      interceptCa: await read(ControlPaths.interceptCaCert),
      trustBundle: await read(ControlPaths.trustBundle),
    });
    await this.#write(ControlPaths.caBundle, bundle, Modes.publicFile);
  }

  /**
   * Installs an identity's X.509-SVID (`certPem`: leaf then chain) and key under `identities/<sid>/`, after
   * checking that the leaf is an SVID for `spiffeId` and the key is its key. Key first, then certificate.
   * Returns what the rule table's `svid` field must say.
   */
  writeSvid(
    spiffeId: string,
    pem: { certPem: string; keyPem: string },
  ): Promise<{ dir: string; serial: string; notAfter: string }> {
    return this.#run(() => this.#writeSvid(spiffeId, pem));
  }

  async #writeSvid(spiffeId: string, pem: { certPem: string; keyPem: string }) {
    let facts: ReturnType<typeof checkSvid>;
    try {
      facts = checkSvid(spiffeId, pem.certPem, pem.keyPem);
    } catch (err) {
      throw new ControlError(
        'svid-mismatch',
        `SVID for ${spiffeId} refused: ${messageOf(err)}`,
        'install the certificate the reconciler signed for this key',
      );
    }
    const dir = svidDirOf(spiffeId);
    await ensureDir(this.root, dir, Modes.privateDir);
    await this.#write(`${dir}/${SVID_KEY_FILE}`, pem.keyPem, Modes.privateFile);
    await this.#write(`${dir}/${SVID_CERT_FILE}`, facts.chain.join(''), Modes.publicFile);
    return { dir, serial: facts.serial, notAfter: facts.notAfter };
  }

  removeSvid(spiffeId: string): Promise<void> {
    return this.#run(() => this.#remove(svidDirOf(spiffeId)));
  }

  /**
   * `credentials/<binding-hash>/<binding-name>/`: the `sysfs` propagation files of a credential (`token`, or
   * `credentials` for AWS), 0600 in a 0700 directory; both owned by `owner` when given (the workload's uid, so
   * that it can read its own file), root otherwise. Files of another kind left there are removed.
   */
  writeSysfsCredential(dir: string, value: CredentialValue, owner?: Owner): Promise<void> {
    return this.#run(() => this.#writeSysfs(dir, value, owner));
  }

  async #writeSysfs(dir: string, value: CredentialValue, owner?: Owner): Promise<void> {
    const [bindingHash] = sysfsParts(dir);
    await ensureDir(this.root, `${ControlPaths.credentials}/${bindingHash}`, Modes.traverseDir);
    const rel = `${ControlPaths.credentials}/${dir}`;
    await ensureDir(this.root, rel, Modes.privateDir, owner);
    const files = sysfsFiles(value);
    for (const [name, content] of Object.entries(files))
      await this.#write(`${rel}/${name}`, content, Modes.privateFile, owner);
    for (const name of await readdir(join(this.root, rel))) {
      // Own names only: a stray file named `constructor` is not one of the files written here.
      if (!Object.hasOwn(files, name) && !name.startsWith('.')) await this.#remove(`${rel}/${name}`);
    }
  }

  removeSysfsCredential(dir: string): Promise<void> {
    return this.#run(() => this.#removeSysfs(dir));
  }

  async #removeSysfs(dir: string): Promise<void> {
    const [bindingHash] = sysfsParts(dir);
    await this.#remove(`${ControlPaths.credentials}/${dir}`);
    await rmdir(join(this.root, ControlPaths.credentials, bindingHash)).catch(() => {});
  }

  /**
   * Validates and writes the rule table with the next generation. A table that fails validation is refused
   * with ControlError('invalid') naming the field, and nothing is written: the agent NACKs it and the table in
   * force stays. The kernel side validates the file again when it loads it.
   */
  writeRules(table: RuleTableInput): Promise<RuleTable> {
    return this.#run(() => this.#writeRules(table));
  }

  async #writeRules(input: RuleTableInput): Promise<RuleTable> {
    // A table put there by another hand may have used our next number and been judged: never reuse a
    // generation the kernel side has a verdict on, or a waiting agent would read that verdict as its own.
    this.#generation = Math.max(this.#generation, await judgedGeneration(this.root));
    const generation = this.#generation + 1;
    const checked = validateRuleTable({ ...input, abi: CONTROL_ABI, generation });
    if (!checked.ok)
      throw new ControlError(
        'invalid',
        `rule table refused: ${describeDiagnostics(checked.diagnostics)}`,
        'the program does not compile to a valid table; NACK it and keep the one in force',
      );
    const text = JSON.stringify(checked.value);
    if (Buffer.byteLength(text) > Limits.rulesBytes)
      throw new ControlError(
        'too-large',
        `rule table refused: ${Buffer.byteLength(text)} bytes, over the ${Limits.rulesBytes}-byte cap`,
        'split the scope into smaller daemon groups',
      );
    this.#generation = generation;
    await this.#write(ControlPaths.rules, text, Modes.privateFile);
    return checked.value;
  }

  /** `processes`: attested processes and their identities, with the next generation. */
  writeProcesses(processes: ProcessRecord[]): Promise<ProcessTable> {
    return this.#run(() => this.#writeProcesses(processes));
  }

  async #writeProcesses(processes: ProcessRecord[]): Promise<ProcessTable> {
    const generation = this.#generation + 1;
    const checked = validateProcessTable({ abi: CONTROL_ABI, generation, processes });
    if (!checked.ok)
      throw new ControlError(
        'invalid',
        `process table refused: ${describeDiagnostics(checked.diagnostics)}`,
        'this is a bug of the attestor; report it',
      );
    this.#generation = generation;
    await this.#write(ControlPaths.processes, JSON.stringify(checked.value), Modes.privateFile);
    return checked.value;
  }

  /**
   * Removes SVID directories and `sysfs` credential directories that are not in `keep` (identities and
   * bindings that left the program). Returns what was removed, as paths relative to the root.
   */
  prune(keep: { spiffeIds: Iterable<string>; sysfsDirs: Iterable<string> }): Promise<string[]> {
    return this.#run(() => this.#prune(keep));
  }

  async #prune(keep: { spiffeIds: Iterable<string>; sysfsDirs: Iterable<string> }): Promise<string[]> {
    const removed: string[] = [];
    const sids = new Set([...keep.spiffeIds].map(sidOf));
    for (const sid of await readdir(join(this.root, ControlPaths.identities)).catch(() => [] as string[])) {
      if (sids.has(sid) || sid.startsWith('.')) continue;
      await this.#remove(`${ControlPaths.identities}/${sid}`);
      removed.push(`${ControlPaths.identities}/${sid}`);
    }
    const dirs = new Set(keep.sysfsDirs);
    const credRoot = join(this.root, ControlPaths.credentials);
    for (const hash of await readdir(credRoot).catch(() => [] as string[])) {
      if (hash.startsWith('.')) continue;
      const names = await readdir(join(credRoot, hash)).catch(() => null);
      if (names === null) {
        await this.#remove(`${ControlPaths.credentials}/${hash}`);
        removed.push(`${ControlPaths.credentials}/${hash}`);
        continue;
      }
      for (const name of names) {
        if (dirs.has(`${hash}/${name}`) || name.startsWith('.')) continue;
        await this.#remove(`${ControlPaths.credentials}/${hash}/${name}`);
        removed.push(`${ControlPaths.credentials}/${hash}/${name}`);
      }
      await rmdir(join(credRoot, hash)).catch(() => {});
    }
    return removed.sort();
  }
}

/** The writer's operations as they run inside {@link ControlWriter.batch}. */
export interface BatchWriter {
  writeConfig(c: { trustDomain: string; daemonId: string }): Promise<ControlConfig>;
  writeTrustBundle(pem: string): Promise<void>;
  writeSvid(
    spiffeId: string,
    pem: { certPem: string; keyPem: string },
  ): Promise<{ dir: string; serial: string; notAfter: string }>;
  removeSvid(spiffeId: string): Promise<void>;
  writeSysfsCredential(dir: string, value: CredentialValue, owner?: Owner): Promise<void>;
  removeSysfsCredential(dir: string): Promise<void>;
  writeRules(table: RuleTableInput): Promise<RuleTable>;
  writeProcesses(processes: ProcessRecord[]): Promise<ProcessTable>;
  prune(keep: { spiffeIds: Iterable<string>; sysfsDirs: Iterable<string> }): Promise<string[]>;
}

/** The highest generation `rules.enforced` names (in force or refused); 0 when there is none. */
async function judgedGeneration(root: string): Promise<number> {
  try {
    const v = (await readJson(join(root, ControlPaths.enforced), Limits.smallFileBytes)) as {
      generation?: unknown;
      error?: { generation?: unknown };
    } | null;
    const g = Math.max(Number(v?.generation ?? 0), Number(v?.error?.generation ?? 0));
    return Number.isSafeInteger(g) && g > 0 ? g : 0;
  } catch {
    return 0;
  }
}

async function loadManifest(root: string): Promise<Manifest> {
  try {
    const raw = await readJson(join(root, ControlPaths.manifest), Limits.manifestBytes);
    if (raw !== null) {
      const checked = validateManifest(raw);
      if (checked.ok) return checked.value;
    }
  } catch {
    // A damaged manifest: start a new one; the drift report will show what was there.
  }
  return { abi: CONTROL_ABI, generation: 0, files: {} };
}
