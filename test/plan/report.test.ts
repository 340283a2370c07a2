/** What a reviewer reads in a plan: what changed on an edge, what a new resource holds, the summary, SOPS. */
import { describe, expect, it } from 'vitest';
import { planJson, planMarkdown, planText } from '../../reconciler/plan/report.ts';
import { BASE, edit, H, plan } from './plan-helpers.ts';

const downgrade = edit(
  BASE,
  'identities.yaml',
  '      mode: MUTUAL\n  allowedSPIFFEIDs',
  '      mode: PERMISSIVE\n  allowedSPIFFEIDs',
);

describe('a changed access edge', () => {
  it('shows the edge once and only the attribute that changed', () => {
    const p = plan(BASE, downgrade);
    const edge = 'reach spiffe://example.com/apps/client → spiffe://example.com/apps/server';
    expect(planText(p)).toContain(`  ~ ${edge}: serverTls MUTUAL → PERMISSIVE\n`);
    expect(planText(p)).not.toContain('inboundAllowed');
    expect(planMarkdown(p)).toContain(
      '- :arrows_counterclockwise: reach `spiffe://example.com/apps/client` → `spiffe://example.com/apps/server`: serverTls `MUTUAL` → `PERMISSIVE`\n',
    );
    expect(JSON.parse(planJson(p)).access.changed[0].fields).toEqual([
      { attribute: 'serverTls', before: 'MUTUAL', after: 'PERMISSIVE' },
    ]);
  });

  it('shows what entered and left an allow list', () => {
    const head = edit(
      BASE,
      'identities.yaml',
      '      allowedSPIFFEIDs:\n        - spiffe://example.com/apps/server\n',
      '      allowedSPIFFEIDs:\n        - spiffe://example.com/apps/other\n',
    );
    expect(planText(plan(BASE, head))).toContain(
      ': allowedPeers +spiffe://example.com/apps/other -spiffe://example.com/apps/server\n',
    );
  });
});

describe('a created resource', () => {
  it('shows its body, field by field, as Atlantis and flux diff do', () => {
    const head = {
      ...BASE,
      'more.yaml': `${H}kind: Service\nmetadata:\n  name: cache\n  labels:\n    team: a\nspec:\n  addresses:\n    - address: cache.internal\n      port: 6379\n  labels:\n    app: cache\n`,
    };
    const text = planText(plan(BASE, head));
    expect(text).toContain(
      [
        '► Service/riptides-system/cache created',
        '    metadata.labels.team: + a',
        '    spec.addresses[0].address: + cache.internal',
        '    spec.addresses[0].port: + 6379',
        '    spec.labels.app: + cache',
        '',
      ].join('\n'),
    );
  });

  it('masks the values of a created Secret, data and stringData alike, and the last-applied copy', () => {
    const token = 'sk-live-created-0123456789';
    const b64 = Buffer.from(token).toString('base64');
    const secret = `apiVersion: v1\nkind: Secret\nmetadata:\n  name: tok\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '{"data":{"token":"${b64}"}}'\ndata:\n  token: ${b64}\nstringData:\n  same: ${token}\n`;
    const p = plan(BASE, { ...BASE, 'secret.yaml': secret });
    const text = planText(p);
    const digest = text.match(/data\.token: \+ (sha256:[0-9a-f]{8}) \(secret value; digests shown\)/)?.[1];
    expect(digest).toBeDefined();
    // The same bytes show the same digest whether committed as base64 data or as stringData.
    expect(text).toContain(`stringData.same: + ${digest} (secret value; digests shown)`);
    expect(text).toMatch(
      /metadata\.annotations\.kubectl\.kubernetes\.io\/last-applied-configuration: \+ sha256:[0-9a-f]{8} \(secret/,
    );
    for (const out of [text, planMarkdown(p), planJson(p)]) {
      expect(out).not.toContain(token);
      expect(out).not.toContain(b64);
    }
  });
});

describe('a map key named like a property every object has', () => {
  it('is added and removed like any other key, in every format', () => {
    for (const [gone, come] of [
      ['owner', 'constructor'],
      ['toString', 'valueOf'],
      ['hasOwnProperty', 'team'],
    ]) {
      const base = edit(BASE, 'services.yaml', '    app: api\n', `    app: api\n    ${gone}: x\n`);
      const p = plan(base, edit(base, 'services.yaml', `    ${gone}: x\n`, `    ${come}: y\n`));
      const text = planText(p);
      expect(text).toContain('► Service/riptides-system/api changed\n');
      expect(text).toContain(`    spec.labels.${gone}: - x\n`);
      expect(text).toContain(`    spec.labels.${come}: + y\n`);
      expect(planMarkdown(p)).toContain(`  - \`spec.labels.${gone}\`: - \`x\`\n`);
      expect(JSON.parse(planJson(p)).resources[0].fields).toEqual(
        [
          { path: `spec.labels.${gone}`, before: 'x' },
          { path: `spec.labels.${come}`, after: 'y' },
        ].sort((a, b) => (a.path < b.path ? -1 : 1)),
      );
    }
  });
});

describe('the Markdown summary', () => {
  it('keeps risks out of the added / changed / removed table, on a line of their own', () => {
    const md = planMarkdown(plan(BASE, downgrade));
    const table = md.split('\n').filter((l) => l.startsWith('|'));
    expect(table).toEqual([
      '| | added / created | changed | removed / deleted |',
      '| --- | ---: | ---: | ---: |',
      '| Resources | 0 | 1 | 0 |',
      '| Node programs | 0 | 1 | 0 |',
      '| Access edges | 0 | 1 | 0 |',
    ]);
    expect(md).toContain('\n**Risks: :warning: 1 high, 0 medium**\n');
  });
});

describe('SOPS-encrypted Secrets', () => {
  const enc = (data: string) =>
    `ENC[AES256_GCM,data:${data},iv:AAAAAAAAAAAAAAAAAAAAAA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]`;
  const sopsSecret = (ciphertext: string, modified: string) =>
    `apiVersion: v1\nkind: Secret\nmetadata:\n  name: sealed\nstringData:\n  token: ${enc(ciphertext)}\nsops:\n  age:\n    - recipient: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n      enc: |\n        -----BEGIN AGE ENCRYPTED FILE-----\n        YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOQ==\n        -----END AGE ENCRYPTED FILE-----\n  lastmodified: "${modified}"\n  mac: ${enc('bWFj')}\n  version: 3.9.0\n`;

  it('shows the envelope masked on one line, and values as digests of their ciphertext', () => {
    const base = { ...BASE, 'sealed.yaml': sopsSecret('Zmlyc3Q=', '2024-01-01T00:00:00Z') };
    const head = { ...BASE, 'sealed.yaml': sopsSecret('c2Vjb25k', '2024-02-01T00:00:00Z') };
    const p = plan(base, head);
    const text = planText(p);
    const lines = text.split('\n');
    const at = lines.indexOf('► Secret/riptides-system/sealed changed');
    expect(lines.slice(at + 1, at + 3)).toEqual([
      expect.stringMatching(
        /^ {4}sops: \*\*SOPS\*\* envelope sha256:[0-9a-f]{8} → \*\*SOPS\*\* envelope sha256:[0-9a-f]{8} \(secret value; digests shown\)$/,
      ),
      expect.stringMatching(
        /^ {4}stringData\.token: \*\*SOPS\*\* sha256:[0-9a-f]{8} → \*\*SOPS\*\* sha256:[0-9a-f]{8} \(secret value; digests shown\)$/,
      ),
    ]);
    expect(lines[at + 3]).not.toMatch(/^ {4}/);
    for (const out of [text, planMarkdown(p), planJson(p)]) {
      expect(out).not.toContain('ENC[');
      expect(out).not.toContain('age1ql3z');
      expect(out).not.toContain('BEGIN AGE');
    }
  });
});

describe('a plan too long for one pull-request comment', () => {
  /** A plan deleting `n` Services with names of varied lengths: many sizes of cut. */
  const bulk = (n: number, pad: number) => {
    const p = plan(BASE, BASE);
    p.resources = Array.from({ length: n }, (_, i) => ({
      kind: 'Service',
      namespace: 'riptides-system',
      name: `svc-${'x'.repeat(pad + (i % 13))}-${i}`,
      change: 'deleted' as const,
      file: 'services.yaml',
      fields: [],
    }));
    p.access.removed = Array.from({ length: n }, (_, i) => ({
      kind: 'reach' as const,
      from: 'spiffe://example.com/apps/client',
      to: `Service/riptides-system/svc-${i} (svc-${i}.internal:443)`,
      attributes: { tls: 'MUTUAL' },
    }));
    return p;
  };

  it('leaves room for the marker line the CI examples put before it, at every size', () => {
    const marker = '<!-- riptides-plan -->\n';
    for (let n = 400; n < 1300; n += 23) {
      for (const pad of [0, 5, 19]) {
        const md = planMarkdown(bulk(n, pad));
        expect(marker.length + md.length, `${n} resources, names +${pad}`).toBeLessThanOrEqual(65_536);
      }
    }
  });

  it('keeps every section, saying how many of its lines were cut', () => {
    const md = planMarkdown(bulk(6000, 40));
    expect(md).toContain("> This plan was cut to fit GitHub's 65536-character comment limit");
    for (const title of [
      'Resource changes (6000)',
      'Node program changes (0)',
      'Effective access (0 added, 0 changed, 6000 removed)',
    ])
      expect(md).toContain(`<summary>${title}</summary>`);
    const cut = [...md.matchAll(/^- … (\d+) more line\(s\) cut to fit the comment limit$/gm)].map((m) =>
      Number(m[1]),
    );
    expect(cut).toHaveLength(2);
    const shown = md
      .split('\n')
      .filter((l) => l.startsWith('- **deleted**') || l.startsWith('- :heavy_minus_sign:')).length;
    expect(shown + cut[0]! + cut[1]!).toBe(12_000);
  });
});
