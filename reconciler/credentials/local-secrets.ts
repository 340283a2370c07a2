/**
 * Secrets for the embedded default and laptops: v1 Secret manifests (YAML or JSON, `data` base64 and/or
 * `stringData`, as kubectl accepts them) in a directory outside git, watched with chokidar so an edit reaches
 * consumers as a watch event would. Same semantics and the same messages as the kubernetes provider.
 * Parse errors are reported by file:line:col and error code only: parser messages quote the offending line,
 * which may hold a value.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { type FSWatcher, watch } from 'chokidar';
import { LineCounter, parseAllDocuments } from 'yaml';
import { ephemeralFingerprintKey, keyedFingerprint } from './fingerprint.ts';
import {
  decodeSecretDataMap,
  type SecretSnapshot,
  type SecretStore,
  type SecretUpdate,
} from './secret-ref.ts';
import { CredentialError } from './types.ts';

interface Found {
  file: string;
  data: Record<string, Buffer>;
  resourceVersion: string;
  /** Why the manifest cannot be served (a `data` value that is not valid base64). */
  error?: CredentialError;
}

interface Index {
  secrets: Map<string, Found[]>;
  problems: string[];
}

/** What a subscriber has last been told, so a rescan only reports real changes. */
function tagOf(u: SecretUpdate): string {
  return u instanceof CredentialError ? `error:${u.message}` : u.found ? `rv:${u.resourceVersion}` : 'gone';
}

const MANIFEST = /\.(ya?ml|json)$/i;
const MAX_FILE_BYTES = 1024 * 1024;

export class LocalSecretStore implements SecretStore {
  readonly where: string;
  private index: Index | undefined;
  private watcher: FSWatcher | undefined;
  private ready: Promise<void> | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private readonly subscribers = new Map<string, Set<(u: SecretUpdate) => void>>();
  private readonly lastDelivered = new Map<string, string>();
  private readonly versionKey = ephemeralFingerprintKey();

  constructor(
    private readonly dir: string,
    private readonly defaultNamespace: string,
  ) {
    this.where = `secrets dir ${dir}`;
  }

  async read(namespace: string, name: string): Promise<SecretSnapshot> {
    const u = this.lookup(this.scan(), namespace, name);
    if (u instanceof CredentialError) throw u;
    return u;
  }

  subscribe(namespace: string, name: string, onUpdate: (u: SecretUpdate) => void): () => void {
    const key = `${namespace}/${name}`;
    let subs = this.subscribers.get(key);
    if (!subs) {
      subs = new Set();
      this.subscribers.set(key, subs);
    }
    subs.add(onUpdate);
    void this.startWatching().then(() => {
      if (!this.subscribers.get(key)?.has(onUpdate)) return;
      const u = this.lookup(this.index ?? this.scan(), namespace, name);
      this.lastDelivered.set(key, tagOf(u));
      onUpdate(u);
    });
    return () => {
      subs.delete(onUpdate);
      if (subs.size === 0) {
        this.subscribers.delete(key);
        this.lastDelivered.delete(key);
      }
    };
  }

  async close(): Promise<void> {
    if (this.rescanTimer) clearTimeout(this.rescanTimer);
    this.subscribers.clear();
    await this.watcher?.close();
    this.watcher = undefined;
  }

  private startWatching(): Promise<void> {
    if (this.ready) return this.ready;
    const watcher = watch(this.dir, {
      ignoreInitial: true,
      // Editors and `kubectl … -o yaml >` write in steps: wait until the file stops changing.
      awaitWriteFinish: { stabilityThreshold: 40, pollInterval: 10 },
    });
    this.watcher = watcher;
    const changed = () => {
      if (this.rescanTimer) clearTimeout(this.rescanTimer);
      this.rescanTimer = setTimeout(() => this.rescan(), 20);
    };
    watcher.on('all', changed);
    // A vanished or unreadable directory shows up as "not found" answers on the next scan.
    watcher.on('error', changed);
    this.ready = new Promise<void>((resolve) => watcher.once('ready', () => resolve())).then(() => {
      this.index = this.scan();
    });
    return this.ready;
  }

  private rescan(): void {
    const index = this.scan();
    this.index = index;
    for (const [key, subs] of this.subscribers) {
      const [ns, name] = [key.slice(0, key.indexOf('/')), key.slice(key.indexOf('/') + 1)];
      const u = this.lookup(index, ns, name);
      const tag = tagOf(u);
      if (this.lastDelivered.get(key) === tag) continue;
      this.lastDelivered.set(key, tag);
      for (const s of subs) s(u);
    }
  }

  private lookup(index: Index, namespace: string, name: string): SecretUpdate {
    const key = `${namespace}/${name}`;
    const found = index.secrets.get(key) ?? [];
    if (found.length > 1)
      return new CredentialError(
        `Secret ${key} is defined in ${found.map((f) => f.file).join(' and ')} (${this.where}); keep one`,
      );
    const one = found[0];
    if (one?.error) return one.error;
    if (one) return { found: true, data: one.data, resourceVersion: one.resourceVersion };
    if (index.problems.length)
      return new CredentialError(
        `Secret ${key} not found (${this.where}); these files could not be read: ${index.problems.join('; ')}`,
        { withdraw: true },
      );
    return { found: false };
  }

  private scan(): Index {
    const index: Index = { secrets: new Map(), problems: [] };
    if (!existsSync(this.dir)) {
      index.problems.push(`${this.dir} does not exist (create it or pass another --secrets-dir)`);
      return index;
    }
    const files = (readdirSync(this.dir, { recursive: true }) as string[])
      .filter((f) => MANIFEST.test(f))
      .sort();
    for (const rel of files) {
      const path = join(this.dir, rel);
      try {
        const st = statSync(path);
        if (!st.isFile()) continue;
        if (st.size > MAX_FILE_BYTES) {
          index.problems.push(`${rel}: larger than ${MAX_FILE_BYTES} bytes`);
          continue;
        }
        this.scanFile(relative(this.dir, path), readFileSync(path, 'utf8'), index);
      } catch (err) {
        index.problems.push(`${rel}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
      }
    }
    return index;
  }

  private scanFile(rel: string, text: string, index: Index): void {
    const lines = new LineCounter();
    const docs = parseAllDocuments(text, { prettyErrors: false, lineCounter: lines });
    const list = Array.isArray(docs) ? docs : [docs];
    for (const doc of list) {
      const err = doc.errors[0];
      if (err) {
        const pos = lines.linePos(err.pos[0]);
        index.problems.push(`${rel}:${pos.line}:${pos.col}: YAML ${err.code}`);
        continue;
      }
      const obj = doc.toJS({ maxAliasCount: 100 }) as Record<string, unknown> | null;
      if (obj?.kind !== 'Secret' || obj.apiVersion !== 'v1') continue;
      const meta = (obj.metadata ?? {}) as { name?: unknown; namespace?: unknown };
      if (typeof meta.name !== 'string' || !meta.name) {
        index.problems.push(`${rel}: a Secret without metadata.name`);
        continue;
      }
      const ns =
        typeof meta.namespace === 'string' && meta.namespace ? meta.namespace : this.defaultNamespace;
      let data: Record<string, Buffer> = Object.create(null); // as decodeSecretDataMap's: `__proto__` is a key
      let error: CredentialError | undefined;
      try {
        data = decodeSecretDataMap(
          obj.data as Record<string, unknown> | undefined,
          { namespace: ns, name: meta.name },
          `${this.where}, ${rel}`,
        );
      } catch (err) {
        error = err as CredentialError;
      }
      // The API server merges stringData over data on write; so do we.
      for (const [k, v] of Object.entries((obj.stringData ?? {}) as Record<string, unknown>))
        data[k] = Buffer.from(String(v), 'utf8');
      // A version that changes with the values, keyed like every fingerprint of a live value (it never leaves
      // this process, but a plain digest of a Secret would be one careless log line from a guessing oracle).
      const parts = Object.keys(data)
        .sort()
        .flatMap((k) => [Buffer.from(k), Buffer.from([0]), data[k]!, Buffer.from([0])]);
      const key = `${ns}/${meta.name}`;
      const list = index.secrets.get(key) ?? [];
      list.push({
        file: rel,
        data,
        resourceVersion: keyedFingerprint(this.versionKey, Buffer.concat(parts)),
        ...(error ? { error } : {}),
      });
      index.secrets.set(key, list);
    }
  }
}
