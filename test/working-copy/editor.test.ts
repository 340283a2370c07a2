import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { editorFor } from '../../reconciler/working-copy/editor.ts';
import { policyClone } from '../support/policy-clone.ts';

const SERVICE = `apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata:
  name: search-svc
  namespace: riptides-system
spec:
  addresses:
    - address: search.internal
      port: 9200
  labels:
    app: search
`;

async function setup() {
  const { clone } = await policyClone();
  const editor = await editorFor({ repo: clone.dir, path: 'policies', branch: 'main' });
  const head = () => clone.git('rev-parse', 'HEAD');
  const status = () => clone.git('status', '--porcelain');
  return { clone, editor, head, status };
}

describe('ctl apply into the working copy', () => {
  it('commits a new resource into <path>/<file name>, naming it in the message', async () => {
    const { clone, editor, head, status } = await setup();
    const before = await head();
    const r = await editor.apply({ manifests: SERVICE, filename: 'search.yaml', author: 'token:admin' });
    expect(r).toEqual({
      ok: true,
      commit: await head(),
      changes: [
        { resource: 'Service/riptides-system/search-svc', action: 'created', file: 'policies/search.yaml' },
      ],
    });
    expect(await clone.git('rev-parse', 'HEAD~1')).toBe(before);
    expect(readFileSync(join(clone.dir, 'policies/search.yaml'), 'utf8')).toBe(SERVICE);
    expect(await clone.git('log', '-1', '--format=%an <%ae>%n%B')).toBe(
      'riptides-cli ctl <ctl@riptides.invalid>\nctl apply: created Service/riptides-system/search-svc\n\n- created Service/riptides-system/search-svc (policies/search.yaml)\n\nApplied-by: token:admin',
    );
    expect(await clone.git('show', '--stat', '--format=', 'HEAD')).toMatch(/policies\/search\.yaml \| 11 \+/);
    expect(await status()).toBe('');
  });

  it('replaces an existing resource in place, leaving the rest of its file byte for byte; same content is unchanged', async () => {
    const { clone, editor } = await setup();
    const file = join(clone.dir, 'policies/40-credential-bindings.yaml');
    const original = readFileSync(file, 'utf8');
    const edited = `apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata:
  name: support-assistant-claude-binding
  namespace: riptides-system
spec:
  workloadID: support-assistant/app/assistant-api
  credentialSource: anthropic-bearer
  propagation:
    injection:
      selectors:
        - api: anthropic
    sysfs: {}
`;
    const r = await editor.apply({ manifests: edited, filename: 'b.yaml', author: 'token:admin' });
    expect(r.ok && r.changes).toEqual([
      {
        resource: 'CredentialBinding/riptides-system/support-assistant-claude-binding',
        action: 'configured',
        file: 'policies/40-credential-bindings.yaml',
      },
    ]);
    const now = readFileSync(file, 'utf8');
    const cut = original.indexOf('---\n');
    expect(now.slice(0, cut)).toBe(original.slice(0, cut)); // the first document and its comments untouched
    expect(now.slice(cut)).toBe(`---\n${edited}`);
    const again = await editor.apply({ manifests: edited, filename: 'b.yaml', author: 'token:admin' });
    expect(again).toEqual({
      ok: true,
      commit: null,
      changes: [
        {
          resource: 'CredentialBinding/riptides-system/support-assistant-claude-binding',
          action: 'unchanged',
          file: 'policies/40-credential-bindings.yaml',
        },
      ],
    });
  });

  it('a manifest that does not validate changes nothing and names file, line and field', async () => {
    const { editor, head, status } = await setup();
    const before = await head();
    const r = await editor.apply({
      manifests: SERVICE.replace('  labels:', '  lables:'),
      filename: 'search.yaml',
      author: 'a',
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.status).toBe(422);
    expect(r.diagnostics).toEqual(
      expect.arrayContaining([expect.objectContaining({ code: 'RT020', file: 'search.yaml', line: 10 })]),
    );
    expect(await head()).toBe(before);
    expect(await status()).toBe('');
  });

  it('a resource that breaks a reference elsewhere is refused with the diagnostic of the repository', async () => {
    const { editor, head } = await setup();
    const before = await head();
    const binding = `apiVersion: core.riptides.io/v1alpha1
kind: CredentialBinding
metadata:
  name: dangling
  namespace: riptides-system
spec:
  workloadID: support-assistant/app/assistant-api
  credentialSource: no-such-source
  propagation:
    sysfs: {}
`;
    const r = await editor.apply({ manifests: binding, filename: 'dangling.yaml', author: 'a' });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.reason).toMatch(
      /^the policy would not validate with this apply: 1 error\(s\), first policies\/dangling\.yaml:8:\d+ RT042 /,
    );
    expect(await head()).toBe(before);
  });

  it('refuses Secrets, control-plane kinds, and file names that could leave the policy path', async () => {
    const { editor } = await setup();
    const secret =
      'apiVersion: v1\nkind: Secret\nmetadata:\n  name: k\n  namespace: riptides-system\nstringData:\n  token: "sk-live-1"\n';
    const s = await editor.apply({ manifests: secret, filename: 'secret.yaml', author: 'a' });
    expect(!s.ok && s.error).toMatchObject({
      code: 'SecretRefused',
      hint: expect.stringContaining('--secrets-dir'),
    });
    expect(JSON.stringify(s)).not.toContain('sk-live-1');
    const daemon = await editor.apply({
      manifests: 'apiVersion: core.riptides.io/v1alpha1\nkind: Daemon\nmetadata:\n  name: d\nspec: {}\n',
      filename: 'd.yaml',
      author: 'a',
    });
    expect(!daemon.ok && daemon.status).toBe(422);
    const bad = await editor.apply({ manifests: SERVICE, filename: '../../etc/x.yaml', author: 'a' });
    expect(bad.ok && bad.changes[0]!.file).toBe('policies/x.yaml'); // only the base name is used
    const weird = await editor.apply({ manifests: SERVICE, filename: '.hidden', author: 'a' });
    expect(!weird.ok && weird.error.code).toBe('BadFileName');
  });

  it('refuses to commit over uncommitted or staged work, or on another branch', async () => {
    const { clone, editor } = await setup();
    clone.write({
      'policies/40-credential-bindings.yaml': `${readFileSync(join(clone.dir, 'policies/40-credential-bindings.yaml'), 'utf8')}# wip\n`,
    });
    const dirty = await editor.delete({
      targets: [{ kind: 'cb', name: 'support-assistant-claude-binding' }],
      author: 'a',
    });
    expect(!dirty.ok && dirty.error).toMatchObject({
      code: 'UncommittedChanges',
      reason: expect.stringContaining('policies/40-credential-bindings.yaml'),
    });
    await clone.git('add', 'policies/40-credential-bindings.yaml');
    const staged = await editor.apply({ manifests: SERVICE, filename: 'search.yaml', author: 'a' });
    expect(!staged.ok && staged.error.code).toBe('StagedChanges');
    await clone.git('reset', '--quiet', '--hard');
    await clone.git('checkout', '--quiet', '-b', 'feature');
    const branch = await editor.apply({ manifests: SERVICE, filename: 'search.yaml', author: 'a' });
    expect(!branch.ok && branch.error).toMatchObject({
      code: 'WrongBranch',
      hint: 'switch it back (git switch main), or commit your change with git',
    });
  });
});

describe('ctl delete from the working copy', () => {
  it('refuses to delete a source still bound; deletes bindings then the source; removes an emptied file', async () => {
    const { clone, editor, head } = await setup();
    const before = await head();
    const early = await editor.delete({
      targets: [{ kind: 'credsrc', name: 'anthropic-bearer' }],
      author: 'a',
    });
    expect(!early.ok && early.error.reason).toMatch(/RT042/);
    expect(await head()).toBe(before);
    const bindings = await editor.delete({
      manifests: readFileSync(join(clone.dir, 'policies/40-credential-bindings.yaml'), 'utf8'),
      author: 'a',
    });
    expect(bindings.ok && bindings.changes.map((c) => c.action)).toEqual(['deleted', 'deleted']);
    expect(await clone.git('ls-files', 'policies')).not.toContain('40-credential-bindings.yaml');
    const source = await editor.delete({
      targets: [{ kind: 'credsrc', name: 'anthropic-bearer' }],
      author: 'a',
    });
    expect(source.ok).toBe(true);
    const left = readFileSync(join(clone.dir, 'policies/20-credential-sources.yaml'), 'utf8');
    expect(left).toContain('name: vault-openai-apikeys');
    expect(left).not.toContain('anthropic-bearer');
    const missing = await editor.delete({ targets: [{ kind: 'svc', name: 'nope' }], author: 'a' });
    expect(!missing.ok && missing.status).toBe(404);
    const ignored = await editor.delete({
      targets: [{ kind: 'svc', name: 'nope' }],
      ignoreNotFound: true,
      author: 'a',
    });
    expect(ignored).toEqual({ ok: true, commit: null, changes: [] });
  });
});

describe('a repository without a working copy', () => {
  it('a remote URL or a bare repository gets an explanation of what to do instead', async () => {
    const remote = await editorFor({
      repo: 'https://user:pw@git.example.com/org/policies.git',
      path: 'policies',
      branch: 'main',
    });
    const r = await remote.apply({ manifests: SERVICE, filename: 's.yaml', author: 'a' });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.status).toBe(409);
    expect(r.error.reason).toBe(
      'the reconciler follows https://git.example.com/org/policies.git (branch main) and has no working copy of it: git is the source of truth, so ctl cannot change it here',
    );
    expect(r.error.hint).toMatch(
      /^commit the file under policies\/ in a clone of that repository and push it to main/,
    );
    const { bare } = await policyClone('wc-bare');
    const b = await (await editorFor({ repo: bare, branch: 'main' })).delete({
      targets: [{ kind: 'svc', name: 'x' }],
      author: 'a',
    });
    expect(!b.ok && b.error.code).toBe('NotAWorkingCopy');
  });
});
