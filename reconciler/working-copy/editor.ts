/**
 * `ctl apply` and `ctl delete` on the reconciler's side: git stays the source of truth, so an edit is a
 * validated commit into the policy working copy the reconciler tracks, which the ref watch then applies like
 * any other commit. Nothing is written unless the whole repository with the edit applied validates.
 *
 * apply: each document of the manifests is checked on its own (schema, YAML safety), then
 *  - a resource that exists (same kind, namespace, name) is replaced in place, in its file and at its
 *    position, the rest of the file byte for byte as it was; equal content is `unchanged`;
 *  - a new resource is appended to `<path>/<filename>` (the basename of `-f FILE`; `ctl-applied.yaml` for stdin).
 * delete: the named resources (from manifests or `KIND NAME`) are cut out of their files; a file left without
 * documents is removed.
 * Then the policy tree with the edit is validated as a whole (references included: deleting a source still
 * bound is refused), and the change is committed on the tracked branch with a message naming each resource.
 *
 * Refused, with what to do instead: a working copy on another branch, touched files with uncommitted changes,
 * staged changes of other files (the commit would carry them), plaintext `Secret`s (they do not belong in git:
 * use `--secrets-dir` or Kubernetes), control-plane kinds (Daemon, …), a bare or remote repository.
 */
import * as fs from 'node:fs';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, posix, resolve } from 'node:path';
import git from 'isomorphic-git';
import { parseAllDocuments } from 'yaml';
import { makeDirs } from '../common/atomic-file.ts';
import { readRepoConfig } from '../policy/config.ts';
import type { Diagnostic } from '../policy/diagnostics.ts';
import { DEFAULT_NAMESPACE, KINDS } from '../policy/kinds/index.ts';
import { loadPolicyDir } from '../policy/load-dir.ts';
import type { PolicyFile } from '../policy/parse-file.ts';
import { renderPolicy, resolvePositions } from '../policy/render.ts';
import type { LocatedResource } from '../policy/resources.ts';
import { readPolicyFile, resourceKey } from '../policy/resources.ts';
import { resolveKind } from '../status/format.ts';

export interface EditChange {
  /** `Kind/namespace/name`. */
  resource: string;
  action: 'created' | 'configured' | 'unchanged' | 'deleted';
  /** Repository-relative. */
  file: string;
}

export interface EditError {
  code: string;
  reason: string;
  hint: string;
}

export type EditResult =
  | { ok: true; commit: string | null; changes: EditChange[] }
  | { ok: false; status: number; error: EditError; diagnostics?: Diagnostic[] };

export interface ApplyRequest {
  manifests: string;
  /** Basename of the file the manifests came from; decides where new resources go. */
  filename?: string | undefined;
  /** Who asked (the API principal), recorded in the commit. */
  author: string;
}

export interface DeleteRequest {
  manifests?: string | undefined;
  targets?: Array<{ kind: string; namespace?: string; name: string }> | undefined;
  ignoreNotFound?: boolean;
  author: string;
}

export interface PolicyEditor {
  apply(req: ApplyRequest): Promise<EditResult>;
  delete(req: DeleteRequest): Promise<EditResult>;
}

export interface WorkingCopyOptions {
  /** The working copy's root (a directory with a `.git` directory). */
  repo: string;
  /** Policy path inside it (as `--path`). */
  path?: string;
  /** The tracked branch. */
  branch: string;
  /** Default: `trustDomain` of `riptides.config.yaml`. */
  trustDomain?: string;
  allowPlaintextSecrets?: boolean;
}

const refuse = (
  status: number,
  code: string,
  reason: string,
  hint: string,
  diagnostics?: Diagnostic[],
): EditResult => ({
  ok: false,
  status,
  error: { code, reason, hint },
  ...(diagnostics?.length ? { diagnostics } : {}),
});

/** A Kubernetes name: what may become a file name here without escaping the directory. */
const SAFE_FILE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.ya?ml$/;

/**
 * The editor for the repository the reconciler tracks: a working copy gets the real editor; a URL or a bare
 * repository gets one that explains what to do instead.
 */
export async function editorFor(opts: WorkingCopyOptions): Promise<PolicyEditor> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(opts.repo)) return explainingEditor(displayUrl(opts.repo), opts);
  const dotGit = await stat(join(opts.repo, '.git')).catch(() => null);
  if (!dotGit?.isDirectory()) return explainingEditor(resolve(opts.repo), opts);
  return new WorkingCopyEditor(opts);
}

function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    u.search = '';
    return u.href;
  } catch {
    return '(the configured repository)';
  }
}

function explainingEditor(where: string, opts: WorkingCopyOptions): PolicyEditor {
  const answer = (): Promise<EditResult> =>
    Promise.resolve(
      refuse(
        409,
        'NotAWorkingCopy',
        `the reconciler follows ${where} (branch ${opts.branch}) and has no working copy of it: git is the source of truth, so ctl cannot change it here`,
        `commit the file under ${opts.path ?? '.'}/ in a clone of that repository and push it to ${opts.branch} (or open a pull request and review it with riptides-cli plan); the reconciler applies it on the next webhook or poll`,
      ),
    );
  return { apply: answer, delete: answer };
}

interface ManifestDoc {
  key: string;
  kind: string;
  /** The document's own text, without a `---` marker or `...` end. */
  text: string;
  value: unknown;
}

/** Splits YAML into documents with their source text (comments kept), skipping empty ones. */
function documentsOf(text: string): Array<{ start: number; end: number; value: unknown; marker: boolean }> {
  return parseAllDocuments(text)
    .filter((d) => d.contents !== null)
    .map((d) => {
      const slice = text.slice(d.range[0], d.range[2]);
      return { start: d.range[0], end: d.range[2], value: d.toJS(), marker: slice.startsWith('---') };
    });
}

function bodyOf(slice: string): string {
  const body = slice.replace(/^---[^\n]*\n/, '').replace(/(^|\n)\.\.\.[^\n]*\n?$/, '$1');
  return body.endsWith('\n') ? body : `${body}\n`;
}

function keyOf(value: unknown): { key: string; kind: string } | null {
  if (typeof value !== 'object' || value === null) return null;
  const v = value as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  if (typeof v.kind !== 'string' || typeof v.metadata?.name !== 'string') return null;
  const namespace = typeof v.metadata.namespace === 'string' ? v.metadata.namespace : undefined;
  return { kind: v.kind, key: resourceKey(v.kind, { name: v.metadata.name, namespace }) };
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  return v;
}

class WorkingCopyEditor implements PolicyEditor {
  readonly #dir: string;
  readonly #path: string;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: WorkingCopyOptions) {
    this.#dir = resolve(opts.repo);
    this.#path = posix.normalize((opts.path ?? '.').split('\\').join('/')).replace(/\/$/, '');
  }

  apply(req: ApplyRequest): Promise<EditResult> {
    return this.#serial(() => this.#apply(req));
  }

  delete(req: DeleteRequest): Promise<EditResult> {
    return this.#serial(() => this.#delete(req));
  }

  /** One edit at a time: two ctl applies never interleave their writes and commits. */
  #serial(work: () => Promise<EditResult>): Promise<EditResult> {
    const next = this.#queue.then(work, work);
    this.#queue = next.catch(() => {});
    return next;
  }

  /** Parses and checks the manifests on their own; returns their documents or the refusal. */
  #manifests(text: string, filename: string): ManifestDoc[] | EditResult {
    const checked = readPolicyFile({ path: filename, bytes: Buffer.from(text) });
    const diagnostics = resolvePositions(checked.diagnostics, new Map([[filename, checked.text]]));
    const errors = diagnostics.filter((d) => d.severity === 'error' || d.code === 'RT010');
    if (errors.length)
      return refuse(
        422,
        'ValidationFailed',
        `${filename} does not validate: ${errors.length} error(s)`,
        'fix them and apply again; nothing was changed',
        errors,
      );
    const docs: ManifestDoc[] = [];
    for (const d of documentsOf(text)) {
      const id = keyOf(d.value);
      if (!id) continue;
      if (id.kind === 'Secret')
        return refuse(
          422,
          'SecretRefused',
          `${id.key}: a Secret's value does not belong in the policy repository`,
          "put the Secret manifest in the reconciler's --secrets-dir (outside git), or create it in Kubernetes; CredentialSources refer to it by name",
        );
      if (!(id.kind in KINDS))
        return refuse(
          422,
          'KindRefused',
          `${id.key}: ${id.kind} is not reconciled from git`,
          'apply only WorkloadIdentity, Service, CredentialSource, CredentialBinding or WorkloadCredential',
        );
      if (docs.some((x) => x.key === id.key))
        return refuse(
          422,
          'DuplicateResource',
          `${id.key} appears twice in ${filename}`,
          'keep one document per resource',
        );
      docs.push({ key: id.key, kind: id.kind, text: bodyOf(text.slice(d.start, d.end)), value: d.value });
    }
    if (!docs.length)
      return refuse(
        422,
        'NothingToApply',
        `${filename} holds no resource`,
        'pass a file with at least one resource document',
      );
    return docs;
  }

  /** The working copy's policy tree and where each resource lives, after the git checks. */
  async #open(): Promise<
    { files: PolicyFile[]; resources: LocatedResource[]; trustDomain: string } | EditResult
  > {
    const branch = await git.currentBranch({ fs, dir: this.#dir, fullname: false }).catch(() => undefined);
    if (branch !== this.opts.branch)
      return refuse(
        409,
        'WrongBranch',
        `the working copy ${this.#dir} is on ${branch ? `branch ${branch}` : 'a detached HEAD'}, but the reconciler applies ${this.opts.branch}`,
        `switch it back (git switch ${this.opts.branch}), or commit your change with git`,
      );
    const staged = await this.#stagedPaths();
    if (staged.length)
      return refuse(
        409,
        'StagedChanges',
        `the index has staged changes (${staged.slice(0, 3).join(', ')}${staged.length > 3 ? ', …' : ''}) that a commit would carry along`,
        'commit or unstage them first (git restore --staged …); ctl commits only its own change',
      );
    const tree = loadPolicyDir({ repo: this.#dir, path: this.#path });
    let trustDomain = this.opts.trustDomain;
    if (!trustDomain && tree.config)
      trustDomain = readRepoConfig(tree.config.path, tree.config.text).config.trustDomain;
    if (!trustDomain)
      return refuse(
        409,
        'NoTrustDomain',
        'no trust domain for validation',
        'write "trustDomain: <name>" into riptides.config.yaml at the root of the policy path',
      );
    const resources = tree.files.flatMap((f) => readPolicyFile(f).resources);
    return { files: tree.files, resources, trustDomain };
  }

  /** Paths whose index entry differs from HEAD (staged changes). */
  async #stagedPaths(): Promise<string[]> {
    const staged: string[] = [];
    await git.walk({
      fs,
      dir: this.#dir,
      trees: [git.TREE({ ref: 'HEAD' }), git.STAGE()],
      map: async (filepath, [head, stage]) => {
        if (filepath === '.') return undefined;
        const [ht, st] = [await head?.type(), await stage?.type()];
        if (ht === 'tree' || st === 'tree') return undefined;
        if ((await head?.oid()) !== (await stage?.oid())) staged.push(filepath);
        return undefined;
      },
    });
    return staged;
  }

  /** Refuses when a file about to be written has uncommitted changes. */
  async #dirty(paths: string[]): Promise<EditResult | null> {
    for (const filepath of paths) {
      const s = await git.status({ fs, dir: this.#dir, filepath });
      if (s !== 'unmodified' && s !== 'absent')
        return refuse(
          409,
          'UncommittedChanges',
          `${filepath} has uncommitted changes (${s})`,
          'commit or stash them first (git stash); ctl will not commit your work in progress',
        );
    }
    return null;
  }

  async #apply(req: ApplyRequest): Promise<EditResult> {
    const filename = basename(req.filename ?? 'ctl-applied.yaml');
    if (!SAFE_FILE.test(filename))
      return refuse(
        422,
        'BadFileName',
        `"${filename}" cannot be a policy file name`,
        'name the file like my-service.yaml (letters, digits, . _ -)',
      );
    const docs = this.#manifests(req.manifests, filename);
    if (!Array.isArray(docs)) return docs;
    const opened = await this.#open();
    if (!('files' in opened)) return opened;

    const texts = new Map<string, string>(
      opened.files.map((f) => [f.path, Buffer.from(f.bytes).toString('utf8')]),
    );
    const where = new Map(opened.resources.map((r) => [r.located.key, r.located.file]));
    const changes: EditChange[] = [];
    const newFile = this.#path === '.' ? filename : `${this.#path}/${filename}`;
    for (const doc of docs) {
      const file = where.get(doc.key);
      if (file === undefined) {
        const before = texts.get(newFile) ?? '';
        const sep = before === '' ? '' : `${before.endsWith('\n') ? '' : '\n'}---\n`;
        texts.set(newFile, `${before}${sep}${doc.text}`);
        changes.push({ resource: doc.key, action: 'created', file: newFile });
        continue;
      }
      const text = texts.get(file)!;
      const found = documentsOf(text).find((d) => keyOf(d.value)?.key === doc.key)!;
      if (sameValue(found.value, doc.value)) {
        changes.push({ resource: doc.key, action: 'unchanged', file });
        continue;
      }
      const replacement = `${found.marker ? '---\n' : ''}${doc.text}`;
      texts.set(file, text.slice(0, found.start) + replacement + text.slice(found.end));
      changes.push({ resource: doc.key, action: 'configured', file });
    }
    return this.#commit(opened, texts, new Set(), changes, 'apply', req.author);
  }

  async #delete(req: DeleteRequest): Promise<EditResult> {
    let keys: string[] = [];
    if (req.manifests !== undefined) {
      for (const d of documentsOf(req.manifests)) {
        const id = keyOf(d.value);
        if (id) keys.push(id.key);
      }
    }
    for (const t of req.targets ?? []) {
      const kind = resolveKind(String(t.kind));
      if (!kind || kind === 'Source' || kind === 'Daemon')
        return refuse(
          422,
          'KindRefused',
          `cannot delete kind "${t.kind}" from git`,
          'delete a WorkloadIdentity, Service, CredentialSource, CredentialBinding or WorkloadCredential',
        );
      keys.push(resourceKey(kind, { name: String(t.name), namespace: t.namespace ?? DEFAULT_NAMESPACE }));
    }
    keys = [...new Set(keys)];
    if (!keys.length) return refuse(422, 'NothingToDelete', 'no resource named', 'pass -f FILE or KIND NAME');
    const opened = await this.#open();
    if (!('files' in opened)) return opened;
    const texts = new Map<string, string>(
      opened.files.map((f) => [f.path, Buffer.from(f.bytes).toString('utf8')]),
    );
    const where = new Map(opened.resources.map((r) => [r.located.key, r.located.file]));
    const changes: EditChange[] = [];
    const removed = new Set<string>();
    for (const key of keys) {
      const file = where.get(key);
      if (file === undefined) {
        if (req.ignoreNotFound) continue;
        return refuse(
          404,
          'NotFound',
          `${key} is not in the policy working copy`,
          'check the name (riptides-cli ctl get), or pass --ignore-not-found',
        );
      }
      const text = texts.get(file)!;
      const found = documentsOf(text).find((d) => keyOf(d.value)?.key === key)!;
      let rest = text.slice(0, found.start) + text.slice(found.end);
      // The next document may now open the file with a bare marker: harmless, but keep the first clean.
      if (found.start === 0 || text.slice(0, found.start).trim() === '')
        rest = rest.replace(/^(\s*)---[ \t]*\n/, '$1');
      if (documentsOf(rest).length === 0) {
        removed.add(file);
        texts.delete(file);
      } else texts.set(file, rest);
      changes.push({ resource: key, action: 'deleted', file });
    }
    return this.#commit(opened, texts, removed, changes, 'delete', req.author);
  }

  /** Validates the tree with the edit, writes the touched files and commits them. */
  async #commit(
    opened: { files: PolicyFile[]; trustDomain: string },
    texts: Map<string, string>,
    removed: Set<string>,
    changes: EditChange[],
    verb: 'apply' | 'delete',
    author: string,
  ): Promise<EditResult> {
    const touched = [...new Set(changes.filter((c) => c.action !== 'unchanged').map((c) => c.file))];
    if (!touched.length) return { ok: true, commit: null, changes };
    const files: PolicyFile[] = [...texts].map(([path, text]) => ({ path, bytes: Buffer.from(text) }));
    const rendered = renderPolicy(files, {
      trustDomain: opened.trustDomain,
      ...(this.opts.allowPlaintextSecrets ? { allowSecrets: true } : {}),
    });
    const errors = rendered.diagnostics.filter((d) => d.severity === 'error');
    if (errors.length)
      return refuse(
        422,
        'ValidationFailed',
        `the policy would not validate with this ${verb}: ${errors.length} error(s), first ${errors[0]!.file}:${errors[0]!.line}:${errors[0]!.column} ${errors[0]!.code} ${errors[0]!.message}`,
        'nothing was changed; fix the errors (they name file and line) and try again',
        errors,
      );
    const dirty = await this.#dirty(touched);
    if (dirty) return dirty;

    const originals = new Map<string, string | null>();
    for (const file of touched)
      originals.set(file, await readFile(join(this.#dir, file), 'utf8').catch(() => null));
    try {
      for (const file of touched) {
        const full = join(this.#dir, file);
        if (removed.has(file)) {
          await rm(full, { force: true });
          await git.remove({ fs, dir: this.#dir, filepath: file });
        } else {
          await makeDirs(dirname(full));
          await writeFile(full, texts.get(file)!);
          await git.add({ fs, dir: this.#dir, filepath: file });
        }
      }
      const summary = changes
        .filter((c) => c.action !== 'unchanged')
        .map((c) => `${c.action} ${c.resource}`)
        .join(', ');
      const commit = await git.commit({
        fs,
        dir: this.#dir,
        message: `ctl ${verb}: ${summary.length > 200 ? `${summary.slice(0, 199)}…` : summary}\n\n${changes
          .filter((c) => c.action !== 'unchanged')
          .map((c) => `- ${c.action} ${c.resource} (${c.file})`)
          .join('\n')}\n\nApplied-by: ${author}\n`,
        author: { name: 'riptides-cli ctl', email: 'ctl@riptides.invalid' },
      });
      return { ok: true, commit, changes };
    } catch (err) {
      // Put the working copy back as it was: files and index.
      for (const [file, text] of originals) {
        const full = join(this.#dir, file);
        if (text === null) await rm(full, { force: true });
        else await writeFile(full, text);
        await git.resetIndex({ fs, dir: this.#dir, filepath: file }).catch(() => {});
      }
      throw err;
    }
  }
}
