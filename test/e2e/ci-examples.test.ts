/**
 * The README's CI examples, run as written: the GitHub Actions job's `run` steps and the GitLab CI job's
 * `script`, taken from the README itself, in bash with the runners' options, against a real checkout of a
 * policy repository. `riptides-cli` is this checkout's; `gh` and `curl` are stand-ins on PATH that keep pull
 * request comments and merge request notes the way GitHub's and GitLab's REST APIs do (authors, ids, edits,
 * 401/403 refusals). Each job runs three times on one pull request: a plan with changes, then a head that
 * does not validate, then a plan that cannot run; there must always be exactly one plan comment, the latest.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { BASE, edit } from '../plan/plan-helpers.ts';
import { createBareRepo, git, WorkClone } from '../support/git-fixtures.ts';
import { scratch } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';

const MARKER = '<!-- riptides-plan -->';
const BOT_TOKEN = 'glpat-TESTONLY-plan-bot-0001';

/** The yaml block that follows `label` in the README. */
function readmeYaml(label: string): Record<string, unknown> {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const at = readme.indexOf(label);
  if (at < 0) throw new Error(`README has no "${label}"`);
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!block) throw new Error(`no yaml block after "${label}"`);
  return parse(block[1]!) as Record<string, unknown>;
}

/** `gh` as the workflow uses it: `gh api [--method M] [--paginate] PATH [--jq EXPR] [-F body=@FILE]`. */
const FAKE_GH = `
const { readFileSync, writeFileSync } = require('node:fs');
const { execFileSync } = require('node:child_process');
const state = JSON.parse(readFileSync(process.env.FAKE_GITHUB_STATE, 'utf8'));
const args = process.argv.slice(2);
const fail = (msg, code = 1) => { process.stderr.write(msg + '\\n'); process.exit(code); };
if (args[0] !== 'api') fail('fake gh: only "gh api" is implemented');
if (!process.env.GH_TOKEN) fail('gh: To use GitHub CLI in a GitHub Actions workflow, set the GH_TOKEN environment variable', 4);
let method = 'GET', path, jq, body;
for (let i = 1; i < args.length; i++) {
  const a = args[i];
  if (a === '--method' || a === '-X') method = args[++i];
  else if (a === '--paginate') {}
  else if (a === '--jq' || a === '-q') jq = args[++i];
  else if (a === '-F' || a === '--field') {
    const [k, v] = args[++i].split(/=(.*)/s);
    if (k !== 'body') fail('fake gh: unexpected field ' + k);
    body = v.startsWith('@') ? readFileSync(v.slice(1), 'utf8') : v;
    if (method === 'GET') method = 'POST';
  } else if (!path) path = a;
  else fail('fake gh: unexpected argument ' + a);
}
const save = () => writeFileSync(process.env.FAKE_GITHUB_STATE, JSON.stringify(state, null, 2));
// GitHub refuses a comment body over 65,536 characters: HTTP 422, "Body is too long (maximum is 65536 characters)".
if (body !== undefined && [...body].length > 65536) fail('gh: Validation Failed (HTTP 422): body is too long (maximum is 65536 characters)');
const out = (value) => {
  const text = JSON.stringify(value);
  process.stdout.write(jq ? execFileSync('jq', ['-r', jq], { input: text }) : text + '\\n');
};
let m;
if ((m = /^repos\\/([^/]+\\/[^/]+)\\/issues\\/(\\d+)\\/comments$/.exec(path))) {
  if (m[1] !== state.repo || Number(m[2]) !== state.pr) fail('gh: Not Found (HTTP 404)');
  if (method === 'GET') out(state.comments);
  else if (method === 'POST') {
    const comment = { id: state.nextId++, user: { login: 'github-actions[bot]' }, body };
    state.comments.push(comment);
    save();
    out(comment);
  } else fail('gh: Not Found (HTTP 404)');
} else if ((m = /^repos\\/([^/]+\\/[^/]+)\\/issues\\/comments\\/(\\d+)$/.exec(path)) && method === 'PATCH') {
  const comment = state.comments.find((c) => c.id === Number(m[2]));
  if (!comment) fail('gh: Not Found (HTTP 404)');
  if (comment.user.login !== 'github-actions[bot]') fail('gh: Resource not accessible by integration (HTTP 403)');
  comment.body = body;
  save();
  out(comment);
} else fail('gh: Not Found (HTTP 404): ' + method + ' ' + path);
`;

/** `curl` as the GitLab job uses it: --fail -sS -H 'PRIVATE-TOKEN: …' [-X M] [--data-urlencode body@FILE] URL. */
const FAKE_CURL = `
const { readFileSync, writeFileSync } = require('node:fs');
const state = JSON.parse(readFileSync(process.env.FAKE_GITLAB_STATE, 'utf8'));
const args = process.argv.slice(2);
let method, url, token, body, failOnHttp = false;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--fail' || a === '-f') failOnHttp = true;
  else if (a === '-sS' || a === '-s' || a === '-S') {}
  else if (a === '-X' || a === '--request') method = args[++i];
  else if (a === '-H' || a === '--header') {
    const [k, v] = args[++i].split(/:\\s*(.*)/s);
    if (k.toLowerCase() === 'private-token') token = v;
  } else if (a === '--data-urlencode') {
    const [k, v] = args[++i].split(/@(.*)/s);
    if (k !== 'body') throw new Error('fake curl: unexpected form field ' + k);
    body = readFileSync(v, 'utf8');
  } else if (!a.startsWith('-') && !url) url = a;
  else { process.stderr.write('fake curl: unexpected argument ' + a + '\\n'); process.exit(2); }
}
method ??= body === undefined ? 'GET' : 'POST';
const respond = (status, value) => {
  if (status >= 400 && failOnHttp) {
    process.stderr.write('curl: (22) The requested URL returned error: ' + status + '\\n');
    process.exit(22);
  }
  process.stdout.write(JSON.stringify(value));
};
const save = () => writeFileSync(process.env.FAKE_GITLAB_STATE, JSON.stringify(state, null, 2));
const u = new URL(url);
if (u.origin + '/api/v4' !== state.api) respond(404, { message: '404 Not Found' });
else if (token !== state.token) respond(401, { message: '401 Unauthorized' });
else {
  const path = u.pathname.slice('/api/v4'.length);
  const notes = '/projects/' + state.project + '/merge_requests/' + state.mr + '/notes';
  let m;
  if (path === '/user' && method === 'GET') respond(200, state.bot);
  else if (path === notes && method === 'GET') {
    const list = [...state.notes].sort((a, b) => (u.searchParams.get('sort') === 'asc' ? a.id - b.id : b.id - a.id));
    respond(200, list.slice(0, Number(u.searchParams.get('per_page') ?? 20)));
  } else if (path === notes && method === 'POST') {
    const note = { id: state.nextId++, author: state.bot, body };
    state.notes.push(note);
    save();
    respond(201, note);
  } else if ((m = new RegExp('^' + notes + '/(\\\\d+)$').exec(path)) && method === 'PUT') {
    const note = state.notes.find((n) => n.id === Number(m[1]));
    if (!note) respond(404, { message: '404 Not found' });
    else if (note.author.id !== state.bot.id) respond(403, { message: '403 Forbidden' });
    else {
      note.body = body;
      save();
      respond(200, note);
    }
  } else respond(404, { message: '404 Not Found' });
}
`;

let tmp: ReturnType<typeof scratch>;
let remote: string;
let author: WorkClone;
let bin: string;
const commits: Record<string, string> = {};

beforeAll(async () => {
  tmp = scratch('ci-examples');
  bin = join(tmp.dir, 'bin');
  mkdirSync(bin);
  const tool = (name: string, text: string) => {
    writeFileSync(join(bin, name), text);
    chmodSync(join(bin, name), 0o755);
  };
  tool(
    'riptides-cli',
    `#!/bin/sh\nexec "${process.execPath}" "${join(repoRoot, 'bin', 'riptides-cli.mjs')}" "$@"\n`,
  );
  // The install step is a no-op here: riptides-cli above is this checkout's.
  tool(
    'npm',
    `#!/bin/sh\n[ "$1" = install ] && [ "$2" = --global ] && case "$3" in git+https://*) exit 0;; esac\necho "fake npm: unexpected $*" >&2; exit 1\n`,
  );
  tool('gh', `#!${process.execPath}\n${FAKE_GH}`);
  tool('curl', `#!${process.execPath}\n${FAKE_CURL}`);

  remote = await createBareRepo(tmp.dir, 'policy');
  author = await WorkClone.create(remote, join(tmp.dir, 'author'));
  const policy = (files: Record<string, string>) =>
    Object.fromEntries([
      ['policies/riptides.config.yaml', 'trustDomain: example.com\n'],
      ...Object.entries(files).map(([k, v]) => [`policies/${k}`, v]),
    ]);
  commits.base = await author.write(policy(BASE)).commit('base');
  await author.push('main');
  await author.git('checkout', '--quiet', '-b', 'feature');
  commits.changed = await author
    .write(
      policy(
        edit(
          BASE,
          'identities.yaml',
          '      mode: MUTUAL\n  allowedSPIFFEIDs',
          '      mode: PERMISSIVE\n  allowedSPIFFEIDs',
        ),
      ),
    )
    .commit('downgrade the server');
  commits.broken = await author
    .write(policy(edit(BASE, 'credentials.yaml', 'credentialSource: token', 'credentialSource: tokn')))
    .commit('a typo');
  await author.push('feature');
});

afterAll(() => tmp?.cleanup());

/** A fresh CI workspace: a full clone with the PR's commit checked out; the cache dir survives between runs. */
async function checkout(name: string, sha: string): Promise<string> {
  const ws = join(tmp.dir, name);
  if (!existsSync(ws)) await git(tmp.dir, 'clone', '--quiet', remote, ws);
  await git(ws, 'fetch', '--quiet', 'origin');
  await git(ws, 'checkout', '--quiet', '--detach', sha);
  rmSync(join(ws, 'plan.md'), { force: true });
  rmSync(join(ws, 'comment.md'), { force: true });
  return ws;
}

function bash(script: string, cwd: string, env: NodeJS.ProcessEnv) {
  const file = join(tmp.dir, `step-${Math.random().toString(36).slice(2)}.sh`);
  writeFileSync(file, script);
  return spawnSync('bash', ['--noprofile', '--norc', '-eo', 'pipefail', file], {
    cwd,
    env: {
      PATH: `${bin}:${process.env.PATH}`,
      HOME: tmp.dir,
      XDG_CACHE_HOME: join(tmp.dir, 'xdg'),
      // Where the stand-ins for GitHub and GitLab keep comments and notes.
      FAKE_GITHUB_STATE: join(tmp.dir, 'github-state.json'),
      FAKE_GITLAB_STATE: join(tmp.dir, 'gitlab-state.json'),
      ...env,
    },
    encoding: 'utf8',
    timeout: 120_000,
  });
}

interface Step {
  name?: string;
  id?: string;
  uses?: string;
  run?: string;
  if?: string;
  env?: Record<string, string>;
  'continue-on-error'?: boolean;
}

/** Runs the workflow's job as a GitHub runner would: `${{ }}` from the context, `if`, outputs, bash -eo pipefail. */
function runGithubJob(ws: string, context: Record<string, string>) {
  const workflow = readmeYaml('GitHub Actions, posting the plan');
  const job = (workflow.jobs as Record<string, { steps: Step[] }>).plan!;
  const outputs: Record<string, Record<string, string>> = {};
  const value = (expr: string): string => {
    const e = expr.trim();
    const step = /^steps\.([\w-]+)\.outputs\.([\w-]+)$/.exec(e);
    if (step) return outputs[step[1]!]?.[step[2]!] ?? '';
    if (e in context) return context[e]!;
    throw new Error(`the test's runner does not know \${{ ${e} }}`);
  };
  const substitute = (text: string) => text.replace(/\$\{\{([^}]*)\}\}/g, (_, e: string) => value(e));
  const condition = (cond: string | undefined, failed: boolean): boolean => {
    if (cond === undefined) return !failed;
    if (cond.trim() === 'always()') return true;
    const cmp = /^(.+?)\s*==\s*'([^']*)'$/.exec(cond.trim());
    if (!cmp) throw new Error(`the test's runner does not know the condition ${cond}`);
    return !failed && value(cmp[1]!) === cmp[2];
  };
  let failed = false;
  const log: string[] = [];
  for (const step of job.steps) {
    if (step.uses) {
      // The workspace is already checked out with full history, Node is this one, the cache dir stays.
      expect(step.uses).toMatch(/^actions\/(checkout|setup-node|cache)@v\d+$/);
      continue;
    }
    if (!condition(step.if, failed)) continue;
    const outputFile = join(tmp.dir, `output-${Math.random().toString(36).slice(2)}`);
    writeFileSync(outputFile, '');
    const env = Object.fromEntries(
      Object.entries(step.env ?? {}).map(([k, v]) => [k, substitute(String(v))]),
    );
    const r = bash(substitute(step.run!), ws, { ...env, GITHUB_OUTPUT: outputFile });
    log.push(`$ ${step.name ?? step.run}\n${r.stdout}${r.stderr}`);
    if (step.id)
      outputs[step.id] = Object.fromEntries(
        readFileSync(outputFile, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split(/=(.*)/s).slice(0, 2) as [string, string]),
      );
    if (r.status !== 0 && !step['continue-on-error']) failed = true;
  }
  return { failed, log: log.join('\n') };
}

/** Runs the GitLab job's script as the runner does: one bash session, `set -eo pipefail`, CI variables in env. */
function runGitlabJob(ws: string, variables: Record<string, string>) {
  const config = readmeYaml('GitLab CI, as a merge-request note');
  const job = config.plan as { script: string[]; variables?: Record<string, string> };
  const r = bash(job.script.join('\n'), ws, { ...job.variables, ...variables });
  return { failed: r.status !== 0, log: `${r.stdout}${r.stderr}` };
}

describe('the README GitHub Actions example', () => {
  const state = () => join(tmp.dir, 'github-state.json');
  const comments = () =>
    (
      JSON.parse(readFileSync(state(), 'utf8')) as {
        comments: { id: number; user: { login: string }; body: string }[];
      }
    ).comments;
  const run = async (sha: string, baseRef = 'main') => {
    const ws = await checkout('gh-workspace', sha);
    return runGithubJob(ws, {
      'github.base_ref': baseRef,
      'github.head_ref': 'feature',
      'github.sha': sha,
      'github.token': 'ghs_TESTONLYtoken',
      'github.repository': 'acme/policy',
      'github.event.number': '7',
      'github.server_url': 'https://github.com',
      'github.run_id': '4242',
    });
  };

  it('posts every plan, the failing ones too, always as the one latest plan comment', async () => {
    // Someone quoted an old plan, marker included: never edited by the job.
    writeFileSync(
      state(),
      JSON.stringify({
        repo: 'acme/policy',
        pr: 7,
        nextId: 100,
        comments: [{ id: 1, user: { login: 'alice' }, body: `${MARKER}\nquoting the old plan` }],
      }),
    );

    const changed = await run(commits.changed!);
    expect(changed.failed, changed.log).toBe(false);
    const [quoted, first] = comments();
    expect(comments()).toHaveLength(2);
    expect(quoted!.body).toBe(`${MARKER}\nquoting the old plan`);
    expect(first!.user.login).toBe('github-actions[bot]');
    expect(first!.body.startsWith(`${MARKER}\n### Riptides plan: \`origin/main\``)).toBe(true);
    expect(first!.body).toContain('`tls-downgrade`');

    // The next push does not validate: the job fails, after replacing the plan comment with the errors.
    const broken = await run(commits.broken!);
    expect(broken.failed, broken.log).toBe(true);
    expect(comments()).toHaveLength(2);
    const second = comments()[1]!;
    expect(second.id).toBe(first!.id);
    expect(second.body).toContain(':x: **Head does not validate: 1 error(s). Nothing would be applied.**');
    expect(second.body).toContain('**RT042**');
    expect(second.body).not.toContain('tls-downgrade');

    // The plan cannot run at all (the base branch is gone): the comment says so and points to the log.
    const cannot = await run(commits.broken!, 'deleted-branch');
    expect(cannot.failed, cannot.log).toBe(true);
    expect(comments()).toHaveLength(2);
    expect(comments()[1]!.body).toBe(
      `${MARKER}\n### Riptides plan could not run (exit 2)\n\nSee the job log: https://github.com/acme/policy/actions/runs/4242\n`,
    );
  });
});

describe('the README GitHub Actions example, on a plan too long for one comment', () => {
  it("posts it cut, marker included, within GitHub's limit", async () => {
    const many = Array.from(
      { length: 1200 },
      (_, i) =>
        `apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: bulk-${i}\nspec:\n  addresses:\n    - address: bulk-${i}.internal.example.com\n      port: 8443\n  labels:\n    app: bulk-${i}\n`,
    ).join('---\n');
    await author.git('checkout', '--quiet', '-b', 'bulk', commits.base!);
    const bulk = await author.write({ 'policies/bulk.yaml': many }).commit('1,200 services');
    await author.push('bulk');
    writeFileSync(
      join(tmp.dir, 'github-state.json'),
      JSON.stringify({ repo: 'acme/policy', pr: 8, nextId: 500, comments: [] }),
    );
    const ws = await checkout('gh-bulk', bulk);
    const r = runGithubJob(ws, {
      'github.base_ref': 'main',
      'github.head_ref': 'bulk',
      'github.sha': bulk,
      'github.token': 'ghs_TESTONLYtoken',
      'github.repository': 'acme/policy',
      'github.event.number': '8',
      'github.server_url': 'https://github.com',
      'github.run_id': '4243',
    });
    expect(r.failed, r.log).toBe(false);
    const { comments } = JSON.parse(readFileSync(join(tmp.dir, 'github-state.json'), 'utf8'));
    expect(comments).toHaveLength(1);
    expect(comments[0].body.startsWith(`${MARKER}\n### Riptides plan:`)).toBe(true);
    expect(comments[0].body).toContain("cut to fit GitHub's 65536-character comment limit");
    expect([...comments[0].body].length).toBeLessThanOrEqual(65_536);
  });
});

describe('the README GitLab CI example', () => {
  const state = () => join(tmp.dir, 'gitlab-state.json');
  const notes = () =>
    (
      JSON.parse(readFileSync(state(), 'utf8')) as {
        notes: { id: number; author: { id: number }; body: string }[];
      }
    ).notes;
  const run = async (sha: string, target = 'main') => {
    const ws = await checkout('gl-workspace', sha);
    return runGitlabJob(ws, {
      CI_MERGE_REQUEST_TARGET_BRANCH_NAME: target,
      CI_COMMIT_SHA: sha,
      CI_API_V4_URL: 'https://gitlab.example.com/api/v4',
      CI_PROJECT_ID: '12',
      CI_MERGE_REQUEST_IID: '3',
      CI_JOB_URL: 'https://gitlab.example.com/acme/policy/-/jobs/99',
      PLAN_BOT_TOKEN: BOT_TOKEN,
    });
  };

  it('posts every plan, the failing ones too, always as the one latest plan note', async () => {
    writeFileSync(
      state(),
      JSON.stringify({
        api: 'https://gitlab.example.com/api/v4',
        token: BOT_TOKEN,
        project: '12',
        mr: '3',
        nextId: 500,
        bot: { id: 77, username: 'project_12_bot' },
        notes: [{ id: 10, author: { id: 5, username: 'alice' }, body: `${MARKER}\nquoting the old plan` }],
      }),
    );
    const changed = await run(commits.changed!);
    expect(changed.failed, changed.log).toBe(false);
    expect(notes()).toHaveLength(2);
    const first = notes()[1]!;
    expect(first.author.id).toBe(77);
    expect(first.body.startsWith(`${MARKER}\n### Riptides plan: \`origin/main\``)).toBe(true);
    expect(first.body).toContain('`tls-downgrade`');

    const broken = await run(commits.broken!);
    expect(broken.failed, broken.log).toBe(true);
    expect(notes()).toHaveLength(2);
    expect(notes()[1]!.id).toBe(first.id);
    expect(notes()[1]!.body).toContain(
      ':x: **Head does not validate: 1 error(s). Nothing would be applied.**',
    );
    expect(notes()[0]!.body).toBe(`${MARKER}\nquoting the old plan`);

    const cannot = await run(commits.broken!, 'deleted-branch');
    expect(cannot.failed, cannot.log).toBe(true);
    expect(notes()).toHaveLength(2);
    expect(notes()[1]!.body).toBe(
      `${MARKER}\n### Riptides plan could not run (exit 2)\n\nSee the job log: https://gitlab.example.com/acme/policy/-/jobs/99\n`,
    );
  });
});

describe("the README's CI examples' caches", () => {
  it("are keyed per branch: a merge request never restores another's cache, which plan trusts", () => {
    const gitlab = Object.values(readmeYaml('GitLab CI, as a merge-request note')).find(
      (job): job is { cache: { key: string } } => typeof job === 'object' && job !== null && 'cache' in job,
    );
    expect(gitlab?.cache.key).toBe('riptides-plan-$CI_COMMIT_REF_SLUG');
    const workflow = readmeYaml('GitHub Actions, posting the plan') as {
      jobs: Record<
        string,
        { steps: Array<{ uses?: string; with?: { key?: string; 'restore-keys'?: string } }> }
      >;
    };
    const cache = Object.values(workflow.jobs)
      .flatMap((j) => j.steps)
      .find((s) => s.uses?.startsWith('actions/cache@'));
    // biome-ignore lint/suspicious/noTemplateCurlyInString: GitHub Actions expressions, not JavaScript templates
    expect(cache?.with?.key).toBe('riptides-plan-${{ github.head_ref }}-${{ github.sha }}');
    // Falling back to its own branch's older cache, then the base branch's (actions/cache lets a pull request
    // read those two scopes only), never a key that another pull request could have written.
    expect(cache?.with?.['restore-keys']?.trim().split('\n')).toEqual([
      // biome-ignore lint/suspicious/noTemplateCurlyInString: GitHub Actions expressions, not JavaScript templates
      'riptides-plan-${{ github.head_ref }}-',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: GitHub Actions expressions, not JavaScript templates
      'riptides-plan-${{ github.base_ref }}-',
    ]);
  });
});
