import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ParseCache, ValidatedRevisions } from '../../plan/parse-cache.ts';
import { buildPlan, hasChanges, headHasErrors } from '../../plan/plan.ts';
import { planJson, planMarkdown, planText } from '../../plan/report.ts';
import { RevisionConfigError, renderRevision } from '../../plan/revision.ts';
import { CompileMemo } from '../../policy/compile.ts';
import { DEFAULT_MAX_FILE_BYTES } from '../../policy/parse-file.ts';
import { credentialsFromEnv, openSource, SourceError, userCacheDir } from '../../source/index.ts';
import {
  type Command,
  type CommandIO,
  EXIT_FINDINGS,
  EXIT_OK,
  EXIT_USAGE,
  oneOf,
  parseFlags,
  requireFlag,
} from '../command.ts';
import { POLICY_DIR_FLAGS, parseByteSize } from '../policy-input.ts';

const help = `Usage: riptides-cli plan --repo URL|DIR [--path SUBDIR] [--base REF] --head REF [--format text|markdown|json] [--out FILE]

Shows what merging HEAD would change, without cluster access and without any secret: the head's
diagnostics, resource changes (field by field), node program changes per scope, the change in effective
access (who may reach whom, where each credential flows), and the risks among them (TLS downgrades,
credentials toward new or external destinations, widened allow lists, broadened selectors, identities
removed while still referenced). Secret values never appear; a changed secret shows a fingerprint.

Flags:
  --repo URL|DIR         an http(s) git remote, or a local working copy or bare repository
  --path SUBDIR          the policy path inside the repository (default: the root)
  --head REF             branch, tag or commit to plan (required)
  --base REF             what it merges into (default: the merge base of HEAD with the default branch)
  --format FORMAT        text (default), markdown (for a pull-request comment) or json
  --out FILE             write the plan to FILE instead of standard output
  --trust-domain TD      the trust domain (default: riptides.config.yaml at the policy path of HEAD)
  --ca-file FILE         CA bundle for a self-hosted HTTPS git server
  --cache-dir DIR        keeps fetched git objects and parsed files between runs: DIR/git is a bare clone of
                         the repository (every fetched revision of every file, so treat it like the repository),
                         DIR/parsed the parsed policy files; both created 0700. Default:
                         ~/.cache/riptides/plan/<repository> ($XDG_CACHE_HOME respected). Keep it between CI
                         runs and a plan re-parses only the files that changed.
  --timeout SECONDS      longest network wait, and the window over which a transfer must average at least
                         1 KiB/s (default 30); a whole fetch ends after 10 minutes in any case
  --max-repo-size SIZE   refuse a remote repository larger than SIZE (default 512MiB)
  --max-file-size BYTES  refuse larger policy files (default 1048576)

Credentials for HTTPS remotes come from the environment, never from flags: RIPTIDES_GIT_TOKEN, or
RIPTIDES_GIT_USERNAME and RIPTIDES_GIT_PASSWORD, or RIPTIDES_GIT_CREDENTIALS_FILE (git-credentials format).

Exit status (as argocd app diff and flux diff): 0 no changes, 1 changes, 2 error (including a head that
does not validate).
`;

export const command: Command = {
  name: 'plan',
  summary: 'dry-run a branch: resource, node program and access changes, and their risks',
  help,
  async run(argv: string[], io: CommandIO) {
    const { values } = parseFlags(argv, {
      ...POLICY_DIR_FLAGS,
      base: { type: 'string' },
      head: { type: 'string' },
      format: { type: 'string' },
      out: { type: 'string' },
      'ca-file': { type: 'string' },
      'cache-dir': { type: 'string' },
      timeout: { type: 'string' },
      'max-repo-size': { type: 'string' },
    });
    const repo = requireFlag(values.repo, 'repo');
    const headRef = requireFlag(values.head, 'head');
    const format = oneOf(values.format, ['text', 'markdown', 'json'] as const, 'format', 'text');
    const timeout = values.timeout === undefined ? undefined : Number(values.timeout);
    if (timeout !== undefined && !(timeout > 0))
      throw new Error('--timeout must be a number of seconds greater than 0');
    const maxFileBytes = parseByteSize(values['max-file-size'], 'max-file-size');
    const maxRepoBytes = parseByteSize(values['max-repo-size'], 'max-repo-size');
    const progress = (msg: string) => io.stderr(`${msg}\n`);
    const cacheDir = values['cache-dir']
      ? resolve(io.cwd, values['cache-dir'])
      : userCacheDir('plan', /^[a-z][a-z0-9+.-]*:\/\//i.test(repo) ? repo : resolve(io.cwd, repo), io.env);
    try {
      const remote = /^[a-z][a-z0-9+.-]*:\/\//i.test(repo);
      const auth = remote ? credentialsFromEnv(repo, io.env) : undefined;
      const source = await openSource({
        repo: remote ? repo : resolve(io.cwd, repo),
        ...(auth ? { auth } : {}),
        ...(values['ca-file'] ? { caFile: resolve(io.cwd, values['ca-file']) } : {}),
        cacheDir: join(cacheDir, 'git'),
        ...(timeout ? { timeoutMs: timeout * 1000 } : {}),
        ...(maxRepoBytes ? { maxRepoBytes } : {}),
        onProgress: progress,
      });
      await source.fetch();
      const head = await source.resolveRef(headRef);
      let baseRef = values.base;
      let base: string;
      if (baseRef) {
        base = await source.resolveRef(baseRef);
      } else {
        // Refuses (exit 2, saying how to fetch it) when a single-branch or shallow clone lacks the base.
        ({ commit: base, ref: baseRef } = await source.defaultBase(head, headRef));
      }
      const path = values.path ?? '';
      const parseCache = ParseCache.open(
        join(cacheDir, 'parsed'),
        String(maxFileBytes ?? DEFAULT_MAX_FILE_BYTES),
      );
      const cache = parseCache.asMap();
      const memo = new CompileMemo();
      const validated = ValidatedRevisions.open(join(cacheDir, 'parsed'));
      const common = {
        path,
        cache,
        memo,
        validated,
        ...(values['allow-plaintext-secrets'] ? { allowSecrets: true } : {}),
        ...(maxFileBytes ? { maxFileBytes } : {}),
      };
      progress(`rendering head ${headRef} (${head.slice(0, 8)})`);
      const headRendered = await renderRevision(source, head, {
        ...common,
        ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
      });
      progress(`rendering base ${baseRef} (${base.slice(0, 8)})`);
      const baseRendered = await renderRevision(source, base, {
        ...common,
        trustRecordedValidation: true,
        ...(headRendered.trustDomain ? { trustDomain: headRendered.trustDomain } : {}),
      });
      const plan = buildPlan({
        base: { ref: baseRef, commit: base },
        head: { ref: headRef, commit: head },
        path,
        baseResult: baseRendered.result,
        headResult: headRendered.result,
      });
      parseCache.save();
      validated.save();
      const output =
        format === 'json' ? planJson(plan) : format === 'markdown' ? planMarkdown(plan) : planText(plan);
      if (values.out) writeFileSync(resolve(io.cwd, values.out), output);
      else io.stdout(output);
      progress(
        `read ${headRendered.blobsRead + baseRendered.blobsRead} blob(s); parsed ${headRendered.result.stats.parsed + baseRendered.result.stats.parsed} file(s)`,
      );
      if (headHasErrors(plan)) return EXIT_USAGE;
      return hasChanges(plan) ? EXIT_FINDINGS : EXIT_OK;
    } catch (err) {
      if (err instanceof SourceError) {
        io.stderr(`riptides-cli plan: ${err.message}\n  hint: ${err.hint}\n`);
        return EXIT_USAGE;
      }
      if (err instanceof RevisionConfigError) {
        io.stderr(`riptides-cli plan: ${err.message}\n`);
        return EXIT_USAGE;
      }
      throw err;
    }
  },
};
