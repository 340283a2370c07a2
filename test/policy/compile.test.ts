import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { teamFile } from '../../fixtures/generators/large-repo.ts';
import { CompileMemo, serializePrograms } from '../../reconciler/policy/compile.ts';
import type { PolicyFile } from '../../reconciler/policy/parse-file.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';

const TD = 'example.com';
const TEAMS = 6;

/** Each team's file split into its documents, so tests can move documents between files freely. */
const documents = Array.from({ length: TEAMS }, (_, i) => teamFile(i, TEAMS, TD, 2).split(/^---\n/m)).flat();

function filesFrom(order: number[], cut: number[]): PolicyFile[] {
  const docs = order.map((i) => documents[i]!);
  const files: PolicyFile[] = [];
  let start = 0;
  for (const size of [...cut, docs.length]) {
    const chunk = docs.slice(start, start + Math.max(1, size));
    if (chunk.length === 0) break;
    files.push({ path: `f${files.length}.yaml`, bytes: new TextEncoder().encode(chunk.join('---\n')) });
    start += chunk.length;
  }
  if (start < docs.length)
    files.push({
      path: `f${files.length}.yaml`,
      bytes: new TextEncoder().encode(docs.slice(start).join('---\n')),
    });
  return files;
}

async function compileBytes(files: PolicyFile[]): Promise<string> {
  const result = renderPolicy(files, { trustDomain: TD });
  expect(result.diagnostics).toEqual([]);
  return serializePrograms(result.programs!);
}

describe('compile output', () => {
  let reference = '';
  beforeAll(async () => {
    reference = await compileBytes(
      filesFrom(
        documents.map((_, i) => i),
        [],
      ),
    );
  });

  it('is byte-identical whatever the file and document order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.shuffledSubarray(
          documents.map((_, i) => i),
          { minLength: documents.length, maxLength: documents.length },
        ),
        fc.array(fc.integer({ min: 1, max: 8 }), { maxLength: 10 }),
        fc.array(fc.integer(), { minLength: 0, maxLength: 1 }),
        async (order, cut, reverse) => {
          const files = filesFrom(order, cut);
          if (reverse.length) files.reverse();
          expect(await compileBytes(files)).toBe(reference);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('gives one program per scope, identities sorted, every identity, rule and credential hashed', async () => {
    const programs = JSON.parse(reference) as Array<{
      scope: { id: string };
      hash: string;
      identities: Array<{
        spiffeId: string;
        hash: string;
        egress: Array<{ hash: string }>;
        credentials: Array<{ hash: string }>;
      }>;
    }>;
    expect(programs.map((p) => p.scope.id)).toEqual([
      'riptides/daemongroup/region-0/workers',
      'riptides/daemongroup/region-1/workers',
    ]);
    for (const p of programs) {
      expect(p.hash).toMatch(/^[0-9a-f]{16}$/);
      const ids = p.identities.map((i) => i.spiffeId);
      expect(ids).toEqual([...ids].sort());
      for (const i of p.identities) {
        expect(i.hash).toMatch(/^[0-9a-f]{16}$/);
        for (const h of [...i.egress, ...i.credentials]) expect(h.hash).toMatch(/^[0-9a-f]{16}$/);
      }
    }
  });

  it('changes the hash of exactly what changed', async () => {
    const base = JSON.parse(reference) as Array<{
      hash: string;
      identities: Array<{ spiffeId: string; hash: string }>;
    }>;
    const edited = documents.map((d) =>
      d.includes('workloadID: apps/team-2/api\n  scope')
        ? d.replace('mode: MUTUAL\n      intercept: true', 'mode: PERMISSIVE\n      intercept: true')
        : d,
    );
    expect(edited).not.toEqual(documents);
    const files = [{ path: 'all.yaml', bytes: new TextEncoder().encode(edited.join('---\n')) }];
    const after = JSON.parse(await compileBytes(files)) as typeof base;
    const hashes = (ps: typeof base) =>
      new Map(ps.flatMap((p) => p.identities.map((i) => [i.spiffeId, i.hash] as const)));
    const before = hashes(base);
    const changed = [...hashes(after)].filter(([id, h]) => before.get(id) !== h).map(([id]) => id);
    expect(changed).toEqual(['spiffe://example.com/apps/team-2/api']);
    expect(after.filter((p, i) => p.hash !== base[i]!.hash)).toHaveLength(1);
  });

  it('compiles nothing when any error is present', async () => {
    const broken = [
      ...documents,
      'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  labels: {}\n',
    ];
    const result = renderPolicy([{ path: 'x.yaml', bytes: new TextEncoder().encode(broken.join('---\n')) }], {
      trustDomain: TD,
    });
    expect(result.diagnostics.some((d) => d.severity === 'error')).toBe(true);
    expect(result.programs).toBeNull();
  });

  it('reuses cached file results by content id and parses only new ones', async () => {
    const cache = new Map();
    const files = filesFrom(
      documents.map((_, i) => i),
      [5, 5, 5, 5, 5],
    ).map((f, i) => ({ ...f, id: `blob-${i}` }));
    expect(renderPolicy(files, { trustDomain: TD, cache }).stats.parsed).toBe(files.length);
    const changed = files.map((f, i) => (i === 2 ? { ...f, id: 'blob-2-new' } : f));
    const second = renderPolicy(changed, { trustDomain: TD, cache });
    expect(second.stats.parsed).toBe(1);
    expect(serializePrograms(second.programs!)).toBe(reference);
  });
});

describe('compile memo', () => {
  const EDITS: Array<[string, string]> = [
    ['port: 8443', 'port: 9443'],
    ['mode: MUTUAL\n      intercept: true', 'mode: SIMPLE\n      intercept: true'],
    ['tier: backend', 'tier: frontend'],
    ['path: apikeys/creds/team-', 'path: apikeys/other/team-'],
    ['lifetime: 3600s', 'lifetime: 1800s'],
    ['    sysfs: {}\n', ''],
    ['role: team-', 'role: renamed-'],
    ['port: 7000', 'port: 7001'],
  ];

  it('gives exactly what a fresh compile gives after every single-file edit', () => {
    // One resource per file, so that editing a Service leaves the bindings and identities that select it as
    // the very same objects: the memo must notice the dependency, not a changed file.
    // Plus a Service that only an egress rule selects (no binding), so identities must track it themselves.
    const lonely = [
      'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: lonely\nspec:\n  addresses:\n    - address: lonely.internal\n      port: 7000\n  labels:\n    app: lonely\n',
      'apiVersion: core.riptides.io/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: watcher\nspec:\n  workloadID: apps/watcher\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: watcher\n  egress:\n    - selectors:\n        - app: lonely\n',
    ];
    const files = [...documents, ...lonely].map((text, i) => ({ path: `d${i}.yaml`, id: `blob-${i}`, text }));
    const toInputs = (fs: typeof files) =>
      fs.map((f) => ({ path: f.path, id: f.id, bytes: new TextEncoder().encode(f.text) }));
    let applied = 0;
    for (const [which, file] of files.entries()) {
      for (const [from, to] of EDITS) {
        if (!file.text.includes(from)) continue;
        applied++;
        const cache = new Map();
        const memo = new CompileMemo();
        renderPolicy(toInputs(files), { trustDomain: TD, cache, memo });
        const edited = files.map((f, i) =>
          i === which ? { ...f, id: `${f.id}-edited`, text: f.text.split(from).join(to) } : f,
        );
        const withMemo = renderPolicy(toInputs(edited), { trustDomain: TD, cache, memo });
        const fresh = renderPolicy(toInputs(edited), { trustDomain: TD });
        expect(withMemo.diagnostics, `${file.path}: ${from}`).toEqual(fresh.diagnostics);
        expect(serializePrograms(withMemo.programs ?? []), `${file.path}: ${from}`).toBe(
          serializePrograms(fresh.programs ?? []),
        );
      }
    }
    expect(applied).toBeGreaterThan(30);
  });

  it('lists the Services a selector selects in file order after one of them is edited, as a fresh render does', () => {
    const service = (name: string, port: number) =>
      `apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: ${name}\nspec:\n  external: true\n  addresses:\n    - address: ${name}.example.com\n      port: ${port}\n  labels:\n    app: shared\n`;
    const identity =
      'apiVersion: core.riptides.io/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: caller\nspec:\n  workloadID: apps/caller\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: caller\n  egress:\n    - selectors:\n        - app: shared\n      connection:\n        tls:\n          mode: MUTUAL\n';
    const cache = new Map();
    const memo = new CompileMemo();
    const render = (ports: number[]) => {
      const texts = [...ports.map((p, i) => service(`s${i}`, p)), identity];
      const inputs = texts.map((text, i) => ({
        path: `f${i}.yaml`,
        id: `f${i}-${text.length}-${ports[i] ?? 0}`,
        bytes: new TextEncoder().encode(text),
      }));
      const withMemo = renderPolicy(inputs, { trustDomain: TD, cache, memo });
      expect(withMemo.diagnostics).toEqual(renderPolicy(inputs, { trustDomain: TD }).diagnostics);
      return withMemo.diagnostics.filter((d) => d.code === 'RT046').map((d) => d.message.split(' to ')[1]);
    };
    const first = 'Service/riptides-system/s0, an external service that holds no SPIFFE identity';
    expect(render([443, 443, 443])[0]).toBe(first);
    // s0 is edited: a new object, indexed again after s1 and s2, but still listed first.
    const after = render([8443, 443, 443]);
    expect(after[0]).toBe(first);
    expect(after).toHaveLength(3);
    // The same parsed Services given in another order are listed in that order, as a fresh render lists them.
    const reordered = (order: number[]) => {
      const texts = [service('s0', 8443), service('s1', 443), service('s2', 443)];
      const inputs = [
        ...order.map((i) => ({ path: `f${i}.yaml`, text: texts[i]! })),
        { path: 'f3.yaml', text: identity },
      ].map(({ path, text }) => ({
        path,
        id: `${path}-${text.length}-${text.includes('8443') ? 8443 : 443}`,
        bytes: new TextEncoder().encode(text),
      }));
      const withMemo = renderPolicy(inputs, { trustDomain: TD, cache, memo });
      expect(withMemo.diagnostics).toEqual(renderPolicy(inputs, { trustDomain: TD }).diagnostics);
    };
    reordered([0, 1, 2]);
    reordered([2, 1, 0]);
  });

  it('repeats the diagnostics of unchanged resources as a fresh render finds them, and drops them once fixed', () => {
    const identity = (name: string, workloadID: string, selectorKey: string) =>
      `apiVersion: core.riptides.io/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: ${name}\nspec:\n  workloadID: ${workloadID}\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - ${selectorKey}: ${name}\n`;
    const secret =
      'apiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\n  namespace: riptides-system\nstringData:\n  token: not-in-git-please\n';
    const cache = new Map();
    const memo = new CompileMemo();
    const render = (texts: Record<string, string>, opts: { trustDomain: string; allowSecrets?: boolean }) => {
      const inputs = Object.entries(texts).map(([path, text]) => ({
        path,
        id: `${path}-${text}`,
        bytes: new TextEncoder().encode(text),
      }));
      const withMemo = renderPolicy(inputs, { ...opts, cache, memo });
      expect(withMemo.diagnostics).toEqual(renderPolicy(inputs, opts).diagnostics);
      return withMemo.diagnostics.map((d) => `${d.file} ${d.code}`);
    };
    const files = {
      'a.yaml': identity('a', '/apps/a', 'process:name'),
      // The same invalid ID twice: invalid IDs claim nothing, so no RT041 either time.
      'a2.yaml': identity('a2', '/apps/a', 'process:name'),
      'b.yaml': identity('b', 'apps/b', 'process:nmae'),
      'c.yaml': identity('c', 'apps/c', 'process:name'),
      's.yaml': secret,
    };
    const td = { trustDomain: TD };
    const first = render(files, td);
    expect(first).toEqual(
      expect.arrayContaining(['a.yaml RT031', 'a2.yaml RT031', 'b.yaml RT036', 's.yaml RT050']),
    );
    expect(first).not.toContain('a2.yaml RT041');
    // c changes: a's and b's findings are repeated; the Secret is allowed once the options say so.
    expect(render({ ...files, 'c.yaml': identity('c', 'apps/c2', 'process:name') }, td)).toEqual(first);
    expect(render(files, { ...td, allowSecrets: true })).not.toContain('s.yaml RT050');
    expect(render(files, td)).toEqual(first);
    // a and b fixed: their findings are gone.
    const fixed = render(
      {
        ...files,
        'a.yaml': identity('a', 'apps/a', 'process:name'),
        'b.yaml': identity('b', 'apps/b', 'process:name'),
      },
      td,
    );
    expect(fixed.filter((d) => d.startsWith('a.yaml') || d.startsWith('b.yaml'))).toEqual([]);
  });

  it('finds the same process claims (RT047) as a fresh render, scope by scope, as claims come and go', () => {
    const identity = (name: string, group: string, process: string) =>
      `apiVersion: core.riptides.io/v1alpha1\nkind: WorkloadIdentity\nmetadata:\n  name: ${name}\nspec:\n  workloadID: apps/${name}\n  scope:\n    daemonGroup:\n      id: ${group}\n  selectors:\n    - process:name: ${process}\n`;
    const cache = new Map();
    const memo = new CompileMemo();
    const render = (processes: Record<string, string>) => {
      const inputs = Object.entries(processes).map(([name, process]) => {
        const text = identity(name, name.startsWith('a') ? 'g1' : 'g2', process);
        return { path: `${name}.yaml`, id: `${name}-${process}`, bytes: new TextEncoder().encode(text) };
      });
      const withMemo = renderPolicy(inputs, { trustDomain: TD, cache, memo });
      expect(withMemo.diagnostics).toEqual(renderPolicy(inputs, { trustDomain: TD }).diagnostics);
      return withMemo.diagnostics.filter((d) => d.code === 'RT047').map((d) => d.file);
    };
    expect(render({ a1: 'a', a2: 'b', b1: 'c', b2: 'd' })).toEqual([]);
    expect(render({ a1: 'a', a2: 'a', b1: 'c', b2: 'd' })).toEqual(['a2.yaml']);
    // g1 is as it was (the same parsed objects): its claim is carried; g2's is new.
    expect(render({ a1: 'a', a2: 'a', b1: 'c', b2: 'c' })).toEqual(['a2.yaml', 'b2.yaml']);
    expect(render({ a1: 'a', a2: 'b', b1: 'c', b2: 'c' })).toEqual(['b2.yaml']);
    expect(render({ a1: 'a', a2: 'b', b1: 'c', b2: 'd' })).toEqual([]);
  });
  it('finds the same cross-resource diagnostics as a fresh render while the resources they refer to come, go and change', () => {
    const head = (kind: string, name: string) =>
      `apiVersion: core.riptides.io/v1alpha1\nkind: ${kind}\nmetadata:\n  name: ${name}\n  namespace: team\nspec:\n`;
    const identity = (name: string, o: { intercept?: boolean; allow?: string; egress?: string } = {}) =>
      `${head('WorkloadIdentity', name)}  workloadID: apps/${name}\n  scope:\n    daemonGroup:\n      id: g\n  selectors:\n    - process:name: ${name}\n` +
      (o.intercept ? '  connection:\n    tls:\n      intercept: true\n' : '') +
      (o.allow ? `  allowedSPIFFEIDs:\n    inbound:\n      - ${o.allow}\n` : '') +
      (o.egress ?? '');
    const service = (name: string, label: string) =>
      `${head('Service', name)}  addresses:\n    - address: ${name}.example.net\n      port: 443\n  labels:\n    app: ${label}\n`;
    const source = (name: string) =>
      `${head('CredentialSource', name)}  kubernetes:\n    secretRef:\n      name: api-key\n      key: token\n    type: BearerToken\n`;
    const binding = (workload: string, src: string) =>
      `${head('CredentialBinding', `${workload}-binding`)}  workloadID: apps/${workload}\n  credentialSource: ${src}\n  propagation:\n    injection:\n      selectors:\n        - app: api\n`;
    const wc = (name: string, workload: string) =>
      `${head('WorkloadCredential', name)}  workloadID: apps/${workload}\n  credentialSource: src\n`;
    const egress = (label: string, credential?: string) =>
      `  egress:\n    - selectors:\n        - app: ${label}\n${credential ? `      credentialName: ${credential}\n` : ''}`;
    const base: Record<string, string> = {
      'a.yaml': identity('a', {
        intercept: true,
        allow: `spiffe://${TD}/apps/b`,
        egress: egress('api', 'a-cred'),
      }),
      'b.yaml': identity('b', { intercept: true }),
      'api.yaml': service('api', 'api'),
      'src.yaml': source('src'),
      'bind.yaml': binding('b', 'src'),
      'wc.yaml': wc('a-cred', 'a'),
    };
    const cache = new Map();
    const memo = new CompileMemo();
    const render = (files: Record<string, string>, federatesWith: string[] = []) => {
      const inputs = Object.entries(files).map(([path, text]) => ({
        path,
        id: `${path}-${text}`,
        bytes: new TextEncoder().encode(text),
      }));
      const opts = { trustDomain: TD, ...(federatesWith.length ? { federatesWith } : {}) };
      const withMemo = renderPolicy(inputs, { ...opts, cache, memo });
      const fresh = renderPolicy(inputs, opts);
      expect(withMemo.diagnostics).toEqual(fresh.diagnostics);
      expect(serializePrograms(withMemo.programs ?? [])).toBe(serializePrograms(fresh.programs ?? []));
      return [...new Set(withMemo.diagnostics.map((d) => `${d.file} ${d.code}`))].sort();
    };
    expect(render(base)).toEqual([]);
    // b's file changes only its intercept: the binding (another file) now injects toward TLS without it.
    expect(render({ ...base, 'b.yaml': identity('b') })).toEqual(['bind.yaml RT049']);
    // b leaves: a's allow list names nobody, the binding names no identity.
    const { 'b.yaml': _b, ...noB } = base;
    expect(render(noB)).toEqual(['a.yaml RT048', 'bind.yaml RT044']);
    expect(render(base)).toEqual([]);
    // The source is renamed: the binding and the WorkloadCredential name nothing.
    expect(render({ ...base, 'src.yaml': source('src2') })).toEqual(['bind.yaml RT042', 'wc.yaml RT042']);
    // The Service's label moves: a's egress rule and the binding select nothing.
    expect(render({ ...base, 'api.yaml': service('api', 'web') })).toEqual([
      'a.yaml RT045',
      'bind.yaml RT045',
    ]);
    // The WorkloadCredential now belongs to b: a's rule names another workload's credential.
    expect(render({ ...base, 'wc.yaml': wc('a-cred', 'b') })).toEqual(['a.yaml RT053']);
    // An allowed ID in another trust domain: refused until the options federate with it.
    const foreign = {
      ...base,
      'a.yaml': identity('a', {
        intercept: true,
        allow: 'spiffe://other.org/apps/x',
        egress: egress('api', 'a-cred'),
      }),
    };
    expect(render(foreign)).toEqual(['a.yaml RT055']);
    expect(render(foreign, ['other.org'])).toEqual([]);
    // A name nobody has; then an identity whose name is close: a fresh render suggests it, and so must this one.
    const typo = {
      ...base,
      'a.yaml': identity('a', {
        intercept: true,
        allow: `spiffe://${TD}/apps/zebra`,
        egress: egress('api', 'a-cred'),
      }),
    };
    expect(render(typo)).toEqual(['a.yaml RT048']);
    expect(render({ ...typo, 'z.yaml': identity('zebra1') })).toEqual(['a.yaml RT048']);
    expect(render(base)).toEqual([]);
  });
});

describe('compile memo through a long sequence', () => {
  it('gives what a fresh compile gives after each of 300 random edits and moves, on one memo', () => {
    // The documents of six teams over files; each step edits a document (one of EDITS, or undoes one) or moves a
    // document to another file, so that what a file's edit replaces is read from other files.
    const EDITS: Array<[string, string]> = [
      ['port: 8443', 'port: 9443'],
      ['tier: backend', 'tier: frontend'],
      ['path: apikeys/creds/team-', 'path: apikeys/other/team-'],
      ['lifetime: 3600s', 'lifetime: 1800s'],
      ['    sysfs: {}\n', ''],
      ['role: team-', 'role: renamed-'],
      ['mode: MUTUAL\n      intercept: true', 'mode: SIMPLE\n      intercept: true'],
      ['id: group-0', 'id: group-1'],
      ['credentialSource: team-1-credentials', 'credentialSource: team-2-credentials'],
    ];
    let seed = 7;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    // Team 0's injecting rule also names a WorkloadCredential (the older form), which an edit moves to another
    // source while the identity's document stays as it is.
    const texts = documents.map((d) =>
      d.replace(
        '        - app: team-0-api\n      connection:\n        tls:\n          mode: SIMPLE',
        '        - app: team-0-api\n      credentialName: team-0-wc\n      connection:\n        tls:\n          mode: SIMPLE',
      ),
    );
    expect(texts.join('')).toContain('credentialName: team-0-wc');
    texts.push(
      `apiVersion: core.riptides.io/v1alpha1\nkind: WorkloadCredential\nmetadata:\n  name: team-0-wc\n  namespace: riptides-system\nspec:\n  workloadID: apps/team-0/api\n  credentialSource: team-1-credentials\n`,
    );
    // The WorkloadCredential has a file of its own (f9), so that its edits change nothing else.
    const fileOf = texts.map((_, i) => (i === texts.length - 1 ? 9 : i % 9));
    const cache = new Map();
    const memo = new CompileMemo();
    let clean = 0;
    let changedPrograms = 0;
    let previous = '';
    for (let step = 0; step < 300; step++) {
      const d = Math.floor(rand() * texts.length);
      if (rand() < 0.2 && fileOf[d] !== 9) fileOf[d] = Math.floor(rand() * 9);
      else {
        const [from, to] = EDITS[Math.floor(rand() * EDITS.length)]!;
        const text = texts[d]!;
        if (text.includes(from)) texts[d] = text.split(from).join(to);
        else if (to && text.includes(to)) texts[d] = text.split(to).join(from);
      }
      const inputs = Array.from({ length: 10 }, (_, f) => {
        const text = texts.filter((_, i) => fileOf[i] === f).join('---\n');
        return { path: `f${f}.yaml`, id: `f${f}:${text}`, bytes: new TextEncoder().encode(text) };
      }).filter((f) => f.bytes.length > 0);
      const kept = renderPolicy(inputs, { trustDomain: TD, cache, memo });
      const fresh = renderPolicy(inputs, { trustDomain: TD });
      expect(kept.diagnostics, `step ${step}`).toEqual(fresh.diagnostics);
      const programs = serializePrograms(fresh.programs ?? []);
      expect(serializePrograms(kept.programs ?? []), `step ${step}`).toBe(programs);
      if (fresh.programs) {
        clean++;
        if (programs !== previous) changedPrograms++;
        previous = programs;
      }
    }
    // Most steps compile, and most of those change a program: the comparison covers compile, not only checks.
    expect(clean).toBeGreaterThan(150);
    expect(changedPrograms).toBeGreaterThan(25);
  });
});
