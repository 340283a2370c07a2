import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { type ApiServer, startApiServer } from '../../reconciler/http/server.ts';
import type { StatusSnapshot } from '../../reconciler/status/model.ts';
import { ReconcilerMetrics } from '../../reconciler/telemetry/metrics.ts';
import { editorFor } from '../../reconciler/working-copy/editor.ts';
import { capture } from '../support/cli.ts';
import type { WorkClone } from '../support/git-fixtures.ts';
import { policyClone } from '../support/policy-clone.ts';
import { scratch, tempDir } from '../support/scratch.ts';
import { HOSTILE_MESSAGE, seededBook } from '../support/status-fixture.ts';

let api: ApiServer;
let stateDir: string;
let snapshot: StatusSnapshot;
let clone: WorkClone;
const cleanup: Array<() => void> = [];

beforeAll(async () => {
  const s = scratch('ctl');
  cleanup.push(s.cleanup);
  stateDir = s.dir;
  const book = seededBook(new Date());
  snapshot = book.snapshot();
  const wc = scratch('ctl-wc');
  cleanup.push(wc.cleanup);
  ({ clone } = await policyClone('ctl-wc', wc.dir));
  api = await startApiServer({
    host: '127.0.0.1',
    port: 0,
    stateDir,
    metrics: new ReconcilerMetrics({ defaultMetrics: false }),
    status: () => book.snapshot(),
    ready: () => ({ ready: true }),
    editor: await editorFor({ repo: clone.dir, path: 'policies', branch: 'main' }),
  });
});
afterAll(async () => {
  await api.close(100);
  for (const c of cleanup) c();
});

async function ctl(...args: string[]) {
  const out = capture(process.cwd(), { XDG_CACHE_HOME: tempDir('ctl-cache') });
  const code = await main(
    ['ctl', ...args, ...(args.includes('--server') ? [] : ['--state-dir', stateDir])],
    out.io,
  );
  return { code, stdout: out.stdout, stderr: out.stderr };
}

const rows = (text: string) => text.trimEnd().split('\n').slice(1);

describe('ctl get, for every kind, from the seeded status', () => {
  const kinds: Array<[string, string, RegExp]> = [
    ['wid', 'WorkloadIdentity', /^NAME\s+WORKLOAD ID\s+SCOPE\s+NODES\s+PROCESSES\s+SVID EXPIRY\s+READY$/],
    ['svc', 'Service', /^NAME\s+ADDRESSES\s+EXTERNAL\s+LABELS$/],
    ['credsrc', 'CredentialSource', /^NAME\s+TYPE\s+STATE\s+MESSAGE$/],
    ['cb', 'CredentialBinding', /^NAME\s+WORKLOAD ID\s+SOURCE\s+STATE\s+EXPIRES$/],
    ['workloadcredentials', 'WorkloadCredential', /^NAME\s+WORKLOAD ID\s+SOURCE\s+STATE\s+EXPIRES$/],
    ['daemons', 'Daemon', /^NAME\s+WORKLOAD ID\s+GROUP\s+HEALTH\s+VERSION\s+LAST CONTACT$/],
  ];
  for (const [short, kind, header] of kinds)
    it(`${short}: one row per ${kind}, in the three output formats`, async () => {
      const expected = (
        kind === 'Daemon' ? snapshot.daemons : snapshot.resources.filter((r) => r.kind === kind)
      ).map((r) => r.name);
      expect(expected.length).toBeGreaterThan(0);
      const table = await ctl('get', short);
      expect(table.code).toBe(0);
      expect(table.stdout.split('\n')[0]).toMatch(header);
      expect(rows(table.stdout).map((r) => r.split(/\s+/)[0])).toEqual([...expected].sort());
      const json = JSON.parse((await ctl('get', short, '-o', 'json')).stdout);
      const items = json.items ?? [json];
      expect(items.map((i: { name: string }) => i.name).sort()).toEqual([...expected].sort());
      const names = (await ctl('get', short, '-o', 'name')).stdout;
      expect(names.trimEnd().split('\n')).toHaveLength(expected.length);
      expect(names).toMatch(new RegExp(`^${kind.toLowerCase()}\\.core\\.riptides\\.io/`));
    });

  it('STATE words of the seeds: credsrc AVAILABLE, cb OK; a server message is escaped', async () => {
    const src = await ctl('get', 'credentialsource', 'anthropic-bearer');
    expect(rows(src.stdout)).toEqual([
      expect.stringMatching(/^anthropic-bearer\s+kubernetes\s+AVAILABLE\s+-$/),
    ]);
    const cb = await ctl('get', 'credentialbinding', 'support-assistant-claude-binding');
    expect(rows(cb.stdout)[0]).toMatch(/\sOK\s+in (59|60)m$/);
    const bad = await ctl('get', 'credsrc', 'vault-openai-apikeys', '-o', 'wide');
    expect(bad.stdout).toContain('\\x1b[31mdenied\\x1b[0m\\n::error::forged');
    expect(bad.stdout).not.toContain(HOSTILE_MESSAGE);
  });

  it('get source: fetched and applied revisions, and the diagnostics of the commit that does not validate', async () => {
    const r = await ctl('get', 'source');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /^NAME\s+BRANCH\s+FETCHED\s+APPLIED\s+READY\s+MESSAGE\npolicy\s+main\s+f2f2f2f2f2f2 \(\d+s ago\)\s+a1a1a1a1a1a1 \(10m ago\)\s+False\s+/,
    );
    expect(r.stdout).toContain(
      '  policies/mtls/30-workload-identities.yaml:13:3: error RT020: unknown field "spec.conection"\n',
    );
    const json = JSON.parse((await ctl('get', 'source', '-o', 'json')).stdout);
    expect(json.conditions.find((c: { type: string }) => c.type === 'Stalled')).toMatchObject({
      status: 'True',
      reason: 'ValidationFailed',
    });
  });

  it('describe shows conditions and recent events', async () => {
    const r = await ctl('describe', 'credsrc', 'vault-openai-apikeys');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Name: +vault-openai-apikeys\nKind: +CredentialSource\n/);
    expect(r.stdout).toMatch(/\nConditions:\n {2}Type .*\n {2}Ready +False +CredentialUnavailable/);
    expect(r.stdout).toMatch(/\nEvents:\n {2}Type .*\n {2}Warning +CredentialError /);
    const src = await ctl('describe', 'source', 'policy');
    expect(src.stdout).toMatch(/Stalled +True +ValidationFailed/);
  });

  it('not found is exit 1; an unknown kind or a missing reconciler is exit 2 with the reason', async () => {
    const missing = await ctl('get', 'wid', 'nope');
    expect([missing.code, missing.stderr]).toEqual([1, 'workloadidentity "nope" not found\n']);
    const described = await ctl('describe', 'svc', 'nope');
    expect(described.code).toBe(1);
    const unknown = await ctl('get', 'widgets');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown kind "widgets": use one of source, sources, .* wid, /);
    const nobody = capture();
    expect(await main(['ctl', 'get', 'wid', '--state-dir', tempDir('ctl-empty')], nobody.io)).toBe(2);
    expect(nobody.stderr).toMatch(/^riptides-cli ctl: no reconciler serves from state directory /);
  });

  it('--server with a credential file; a wrong credential is refused', async () => {
    const dir = tempDir('ctl-cred');
    const good = join(dir, 'admin.token');
    writeFileSync(good, readFileSync(join(stateDir, 'api', 'admin.token')), { mode: 0o600 });
    const r = await ctl('get', 'daemons', '--server', api.url, '--credential-file', good);
    expect(rows(r.stdout)).toHaveLength(2);
    const wrong = join(dir, 'wrong.token');
    writeFileSync(wrong, 'rt_admin_wrong', { mode: 0o600 });
    const refused = await ctl('get', 'daemons', '--server', api.url, '--credential-file', wrong);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/no valid credential/);
  });
});

describe('ctl apply and delete', () => {
  const svc = (port: number) => `apiVersion: core.riptides.io/v1alpha1
kind: Service
metadata:
  name: search-svc
  namespace: riptides-system
spec:
  addresses:
    - address: search.internal
      port: ${port}
  labels:
    app: search
`;

  it('apply -f FILE commits into the working copy; an invalid file is refused with file:line', async () => {
    const dir = tempDir('ctl-apply');
    writeFileSync(join(dir, 'search.yaml'), svc(9200));
    const out = capture(dir);
    expect(await main(['ctl', 'apply', '-f', 'search.yaml', '--state-dir', stateDir], out.io)).toBe(0);
    expect(out.stdout).toBe('service.core.riptides.io/search-svc created\n');
    expect(out.stderr).toMatch(/^committed [0-9a-f]{12}; the reconciler applies it on its next pass/);
    expect(await clone.git('log', '-1', '--format=%s')).toBe(
      'ctl apply: created Service/riptides-system/search-svc',
    );

    writeFileSync(join(dir, 'bad.yaml'), svc(99999));
    const bad = capture(dir);
    expect(await main(['ctl', 'apply', '-f', 'bad.yaml', '--state-dir', stateDir], bad.io)).toBe(1);
    expect(bad.stderr).toMatch(
      /^riptides-cli ctl apply: bad\.yaml does not validate: 1 error\(s\)\n {2}hint: fix them and apply again; nothing was changed\n {2}bad\.yaml:9:\d+: error RT02\d: /,
    );
  });

  it('apply -f - reads stdin (the shipped command); delete KIND NAME removes it again', async () => {
    const child = spawn(
      process.execPath,
      ['bin/riptides-cli.mjs', 'ctl', 'apply', '-f', '-', '--state-dir', stateDir],
      {
        env: { ...process.env, XDG_CACHE_HOME: tempDir('ctl-bin-cache') },
      },
    );
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stdin.end(svc(9300));
    const code = await new Promise((r) => child.on('exit', r));
    expect([code, stdout]).toEqual([0, 'service.core.riptides.io/search-svc configured\n']);
    expect(readFileSync(join(clone.dir, 'policies/search.yaml'), 'utf8')).toContain('port: 9300');

    const del = await ctl('delete', 'svc', 'search-svc');
    expect([del.code, del.stdout]).toEqual([0, 'service.core.riptides.io/search-svc deleted\n']);
    expect(await clone.git('ls-files', 'policies/search.yaml')).toBe('');
    const again = await ctl('delete', 'svc', 'search-svc');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/Service\/riptides-system\/search-svc is not in the policy working copy/);
    expect((await ctl('delete', 'svc', 'search-svc', '--ignore-not-found')).code).toBe(0);
  });
});
