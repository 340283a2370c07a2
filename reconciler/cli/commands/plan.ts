import { resolve } from 'node:path';
import { writeFileAtomic } from '../../common/atomic-file.ts';
import { escapeText } from '../../encoding/escape.ts';
import { buildPlan, hasChanges, headHasErrors } from '../../plan/plan.ts';
import { planJson, planMarkdown, planText } from '../../plan/report.ts';
import { PolicyPathError } from '../../policy/load-dir.ts';
import { planCacheDirs, RevisionReader } from '../../revision/reader.ts';
import { RevisionConfigError } from '../../revision/render.ts';
import {
  checkedOut,
  isWorkingCopy,
  readWorktree,
  uncommittedChanges,
  type Worktree,
} from '../../revision/worktree.ts';
import {
  credentialsFromEnv,
  isScpLikeRemote,
  openSource,
  SourceError,
  userCacheDir,
} from '../../source/index.ts';
import {
  type Command,
  type CommandIO,
  EXIT_FINDINGS,
  EXIT_OK,
  EXIT_USAGE,
  oneOf,
  parseFlags,
  UsageError,
} from '../command.ts';
import { timeoutFlag } from '../identity-flags.ts';
import { POLICY_DIR_FLAGS, parseByteSize } from '../policy-input.ts';
import { Progress } from '../progress.ts';

const help = `Usage: riptides-cli plan --repo URL|DIR [--path SUBDIR] [--base REF] --head REF [--format text|markdown|json] [--out FILE]
       riptides-cli plan --repo DIR --local [--path SUBDIR] [--base REF] [--format …] [--out FILE]

Shows what merging HEAD would change, without cluster access and without any secret: the head's
diagnostics, resource changes (field by field), node program changes per scope, the change in effective
access (who may reach whom, where each credential flows), and the risks among them (TLS downgrades,
credentials toward new or external destinations, widened allow lists, broadened selectors, identities
removed while still referenced, access removed from a workload). Secret values never appear; a changed
secret shows a fingerprint.

Flags:
  --repo URL|DIR         an http(s) git remote, or a local working copy or bare repository
  --path SUBDIR          the policy path inside the repository (default: the root)
  --head REF             branch, tag or commit to plan (required unless --local); REF may end in git's
                         ancestry suffixes, HEAD~1 or main^2
  --local                plan the working tree of --repo as it is on disk, uncommitted changes included
                         (as \`argocd app diff --local\` and \`flux diff --path\` do); --base defaults to the
                         merge base of the checked-out commit with the default branch
  --base REF             what it merges into (default: the merge base of HEAD with the default branch)
  --format FORMAT        text (default), markdown (for a pull-request comment) or json
  --out FILE             write the plan to FILE instead of standard output (atomically)
  --trust-domain TD      the trust domain of both sides (default: each revision's riptides.config.yaml at the
                         policy path, so a change of trust domain shows; a base without one takes head's)
  --ca-file FILE         CA bundle for a self-hosted HTTPS git server
  --cache-dir DIR        keeps fetched git objects and parsed files between runs: DIR/git is a bare clone of
                         the repository (every fetched revision of every file, so treat it like the repository),
                         DIR/parsed the parsed policy files; both created 0700. Default:
                         ~/.cache/riptides/plan/<repository> ($XDG_CACHE_HOME respected). Keep it between CI
                         runs and a plan re-parses only the files that changed. Entries are keyed by content and
                         by this build of riptides-cli. The cache is trusted input: keep it per branch, and never
                         share one that a fork's pull request can write.
  --timeout DURATION     longest network wait, and the window over which a transfer must average at least
                         1 KiB/s (default 30s; seconds or a duration such as 45s, 2m; at most 1h); a whole
                         fetch ends after 10 minutes in any case
  --max-repo-size SIZE   refuse a remote repository larger than SIZE (default 512MiB)
  --max-file-size BYTES  refuse larger policy files (default 1048576)

Planning a local working copy with --head when its files under --path differ from that commit warns that
the uncommitted changes are not in the plan.

Progress goes to stderr: one line redrawn in place on a terminal, a few lines otherwise.

Credentials for HTTPS remotes come from the environment, never from flags: RIPTIDES_GIT_TOKEN, or
RIPTIDES_GIT_USERNAME and RIPTIDES_GIT_PASSWORD, or RIPTIDES_GIT_CREDENTIALS_FILE (git-credentials format).

Exit status (as argocd app diff and flux diff): 0 no changes, 1 changes, 2 error (including a head that
does not validate).
`;

// A URL, or scp-like SSH syntax (git@host:org/repo.git), which openSource refuses with a hint rather than
// looking for a directory of that name.
const isUrl = (repo: string) => /^[a-z][a-z0-9+.-]*:\/\//i.test(repo) || isScpLikeRemote(repo);

export const command: Command = {
  name: 'plan',
  summary: 'dry-run a branch or the working tree: resource, node program and access changes, and their risks',
  help,
  async run(argv: string[], io: CommandIO) {
    const { values } = parseFlags(argv, {
      ...POLICY_DIR_FLAGS,
      base: { type: 'string' },
      head: { type: 'string' },
      local: { type: 'boolean' },
      format: { type: 'string' },
      out: { type: 'string' },
      'ca-file': { type: 'string' },
      'cache-dir': { type: 'string' },
      timeout: { type: 'string' },
      'max-repo-size': { type: 'string' },
    });
    if (!values.repo) throw new UsageError('missing required flag --repo');
    const repo = values.repo;
    const remote = isUrl(repo);
    if (values.local && values.head !== undefined)
      throw new UsageError('--local plans the working tree as head: pass --base REF if needed, not --head');
    if (values.local && remote)
      throw new UsageError('--local plans the files on disk: --repo must be a local working copy, not a URL');
    if (!values.local && !values.head) throw new UsageError('missing required flag --head (or --local)');
    const format = oneOf(values.format, ['text', 'markdown', 'json'] as const, 'format', 'text');
    const timeout = values.timeout === undefined ? undefined : timeoutFlag(values.timeout, 'timeout', 30);
    const maxFileBytes = parseByteSize(values['max-file-size'], 'max-file-size');
    const maxRepoBytes = parseByteSize(values['max-repo-size'], 'max-repo-size');
    const progress = new Progress(io);
    // git@host:org/repo.git is a remote (refused by openSource with what to use instead), not a directory.
    const localDir = remote ? undefined : resolve(io.cwd, repo);
    const cacheDir = values['cache-dir']
      ? resolve(io.cwd, values['cache-dir'])
      : userCacheDir('plan', localDir ?? repo, io.env);
    const path = values.path ?? '';
    const dirs = planCacheDirs(cacheDir);
    try {
      const auth = remote ? credentialsFromEnv(repo, io.env) : undefined;
      const source = await openSource({
        repo: localDir ?? repo,
        ...(auth ? { auth } : {}),
        ...(values['ca-file'] ? { caFile: resolve(io.cwd, values['ca-file']) } : {}),
        cacheDir: dirs.git,
        ...(timeout ? { timeoutMs: timeout * 1000 } : {}),
        ...(maxRepoBytes ? { maxRepoBytes } : {}),
        onProgress: (msg, transfer) =>
          transfer ? progress.transfer(transfer.phase, transfer.loaded, transfer.total) : progress.step(msg),
      });
      await source.fetch();
      // The checked-out commit of a local working copy: what --local builds on, and what a dirty tree differs from.
      const checkedOutRef = localDir && isWorkingCopy(localDir) ? checkedOut(localDir) : undefined;
      const localHead = checkedOutRef
        ? await source.resolveRef(checkedOutRef).catch(() => undefined)
        : undefined;
      if (values.local && !localHead)
        throw new UsageError(`--local needs a working copy with a commit checked out; ${repo} has none`);
      const headRef = values.local ? 'HEAD' : values.head!;
      const head = values.local ? localHead! : await source.resolveRef(headRef);
      let worktree: Worktree | undefined;
      if (localHead && (values.local || head === localHead)) {
        try {
          worktree = readWorktree(localDir!, path, maxFileBytes);
        } catch (err) {
          // Without --local the tree is only compared: a path missing on disk leaves nothing to compare.
          if (values.local || !(err instanceof PolicyPathError)) throw err;
        }
      }
      let baseRef = values.base;
      let base: string;
      if (baseRef) {
        base = await source.resolveRef(baseRef);
      } else {
        // Refuses (exit 2, saying how to fetch it) when a single-branch or shallow clone lacks the base.
        ({ commit: base, ref: baseRef } = await source.defaultBase(head, headRef));
      }
      const subdir = path.replace(/^\.?\/*/, '').replace(/\/+$/, '');
      const uncommitted =
        worktree && head === localHead
          ? uncommittedChanges(worktree, await source.listFiles(head, subdir || undefined))
          : [];
      if (!values.local && uncommitted.length) {
        progress.clear();
        io.stderr(
          `warning: the working tree has uncommitted changes under ${escapeText(subdir || '.')} that this plan of ${escapeText(headRef)} (${head.slice(0, 8)}) does not include: ${escapeText(listed(uncommitted))}; pass --local to plan the working tree\n`,
        );
      }
      // One reader for both revisions: the base re-parses and recompiles only what differs from the head.
      const reader = RevisionReader.onDisk(dirs.parsed, {
        path,
        ...(values['allow-plaintext-secrets'] ? { allowSecrets: true } : {}),
        ...(maxFileBytes ? { maxFileBytes } : {}),
      });
      const headLabel = values.local ? 'working tree' : headRef;
      progress.step(
        `rendering head ${headLabel} (${head.slice(0, 8)}${values.local ? ' + uncommitted' : ''})`,
      );
      const local = values.local ? worktree : undefined;
      const headRendered = await reader.render(local ?? source, head, {
        ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
        ...(local ? { extra: local.diagnostics } : {}),
      });
      progress.step(`rendering base ${baseRef} (${base.slice(0, 8)})`);
      const baseRendered = await reader.render(source, base, {
        trustRecordedValidation: true,
        missingPathIsEmpty: true,
        ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
        ...(headRendered.trustDomain ? { fallbackTrustDomain: headRendered.trustDomain } : {}),
      });
      const plan = buildPlan({
        base: { ref: baseRef, commit: base },
        head: { ref: headLabel, commit: head },
        path,
        baseResult: baseRendered.result,
        headResult: headRendered.result,
        trustDomains: { base: baseRendered.trustDomain, head: headRendered.trustDomain },
      });
      if (!baseRendered.pathExists)
        plan.notes.unshift(
          `${subdir} does not exist at base ${baseRef} (${base.slice(0, 8)}): everything under it is new`,
        );
      if (values.local)
        plan.notes.unshift(
          uncommitted.length
            ? `head is the working tree: ${head.slice(0, 8)} plus uncommitted changes to ${listed(uncommitted)}`
            : `head is the working tree, the same as ${head.slice(0, 8)} under ${subdir || '.'}`,
        );
      await reader.save();
      const output =
        format === 'json' ? planJson(plan) : format === 'markdown' ? planMarkdown(plan) : planText(plan);
      if (values.out) await writeFileAtomic(resolve(io.cwd, values.out), output, { dirMode: 0o777 });
      else io.stdout(output);
      progress.done(
        `read ${headRendered.blobsRead + baseRendered.blobsRead} blob(s); parsed ${headRendered.result.stats.parsed + baseRendered.result.stats.parsed} file(s)`,
      );
      if (headHasErrors(plan)) return EXIT_USAGE;
      return hasChanges(plan) ? EXIT_FINDINGS : EXIT_OK;
    } catch (err) {
      progress.clear();
      if (err instanceof SourceError) {
        io.stderr(`riptides-cli plan: ${escapeText(err.message)}\n  hint: ${escapeText(err.hint)}\n`);
        return EXIT_USAGE;
      }
      if (err instanceof RevisionConfigError || err instanceof PolicyPathError) {
        io.stderr(`riptides-cli plan: ${escapeText(err.message)}\n`);
        return EXIT_USAGE;
      }
      throw err;
    }
  },
};

function listed(paths: readonly string[]): string {
  const shown = paths.slice(0, 5).join(', ');
  return paths.length > 5 ? `${shown} and ${paths.length - 5} more` : shown;
}
