import { describe, expect, it } from 'vitest';
import { hasChanges } from '../../reconciler/plan/plan.ts';
import { planMarkdown, planText } from '../../reconciler/plan/report.ts';
import { BASE, edit, type Files, H, plan } from './plan-helpers.ts';

const rules = (p: ReturnType<typeof plan>) => p.risks.map((r) => `${r.severity}:${r.rule}`);

describe('plan risks, one rule at a time', () => {
  it('base against itself: no changes, no risks', () => {
    const p = plan(BASE, BASE);
    expect(hasChanges(p)).toBe(false);
    expect(p.risks).toEqual([]);
    expect(p.access).toEqual({ added: [], removed: [], changed: [] });
  });

  it('tls-downgrade: an identity leaves MUTUAL', () => {
    const p = plan(
      BASE,
      edit(
        BASE,
        'identities.yaml',
        '      mode: MUTUAL\n  allowedSPIFFEIDs',
        '      mode: PERMISSIVE\n  allowedSPIFFEIDs',
      ),
    );
    expect(rules(p)).toEqual(['high:tls-downgrade']);
    expect(p.risks[0]!.resource).toBe('WorkloadIdentity/riptides-system/server');
  });

  it('tls-downgrade: an egress rule leaves MUTUAL', () => {
    const p = plan(BASE, edit(BASE, 'identities.yaml', '          mode: MUTUAL', '          mode: SIMPLE'));
    expect(rules(p)).toEqual(['high:tls-downgrade']);
    expect(p.risks[0]!.message).toContain('no longer MUTUAL TLS (now SIMPLE)');
  });

  it('credential-new-destination: a credential injected toward one more internal service', () => {
    const p = plan(
      BASE,
      edit(
        BASE,
        'credentials.yaml',
        '        - app: billing\n',
        '        - app: billing\n        - app: api\n',
      ),
    );
    expect(rules(p)).toContain('medium:credential-new-destination');
    expect(p.risks.find((r) => r.rule === 'credential-new-destination')!.message).toContain(
      'api.internal:8443',
    );
  });

  it('credential-to-external: a credential newly flows to an external service', () => {
    const p = plan(
      BASE,
      edit(BASE, 'credentials.yaml', '        - app: billing\n', '        - app: partner\n'),
    );
    // The token stops going to billing: that is access removed, by the binding's own choice (medium).
    expect(rules(p)).toEqual(['high:credential-to-external', 'medium:access-removed']);
    expect(p.risks[0]!.resource).toBe('CredentialBinding/riptides-system/client-token');
    expect(p.access.removed.map((e) => e.to)).toEqual([
      'Service/riptides-system/billing (billing.internal:9000)',
    ]);
  });

  it('allowed-peers-widened: an inbound allow list gains a peer, and an egress rule stops pinning its peer', () => {
    const wider = edit(
      BASE,
      'identities.yaml',
      '      - spiffe://example.com/apps/client\n',
      '      - spiffe://example.com/apps/client\n      - spiffe://partner.org/anyone\n',
    );
    expect(rules(plan(BASE, wider))).toEqual(['medium:allowed-peers-widened']);
    const unpinned = edit(
      BASE,
      'identities.yaml',
      '      allowedSPIFFEIDs:\n        - spiffe://example.com/apps/server\n',
      '',
    );
    expect(rules(plan(BASE, unpinned))).toEqual(['high:allowed-peers-widened']);
  });

  it('selector-broadened: a key removed from a selector map, or one more ORed selector', () => {
    const fewer = edit(
      BASE,
      'identities.yaml',
      '    - process:name: client\n      k8s:pod:namespace: apps\n',
      '    - process:name: client\n',
    );
    expect(rules(plan(BASE, fewer))).toEqual(['medium:selector-broadened']);
    const more = edit(
      BASE,
      'identities.yaml',
      '    - process:name: client\n      k8s:pod:namespace: apps\n',
      '    - process:name: client\n      k8s:pod:namespace: apps\n    - process:name: curl\n',
    );
    expect(rules(plan(BASE, more))).toEqual(['medium:selector-broadened']);
  });

  it('selector-broadened: a value added to a list, a shorter command-line prefix, another process', () => {
    const client = '    - process:name: client\n      k8s:pod:namespace: apps\n';
    for (const [to, change] of [
      [
        '    - process:name: [client, bash]\n      k8s:pod:namespace: apps\n',
        'process:name: "client" → ["client","bash"]',
      ],
      ['    - process:name: bash\n      k8s:pod:namespace: apps\n', 'process:name: "client" → "bash"'],
    ] as const) {
      const p = plan(BASE, edit(BASE, 'identities.yaml', client, to));
      expect(rules(p), to).toEqual(['medium:selector-broadened']);
      expect(p.risks[0]!.message).toBe(
        `process selectors: selector 0 now matches what no selector matched before (${change})`,
      );
    }
    const withCmdline = edit(
      BASE,
      'identities.yaml',
      client,
      `${client}      process:cmdline: "client --serve"\n`,
    );
    const shorter = edit(withCmdline, 'identities.yaml', '"client --serve"', '"c"');
    expect(rules(plan(withCmdline, shorter))).toEqual(['medium:selector-broadened']);
    // Narrowing, and reordering ORed selectors, is not broadening.
    expect(rules(plan(shorter, withCmdline))).toEqual([]);
    const two = edit(BASE, 'identities.yaml', client, `${client}    - process:name: curl\n`);
    const swapped = edit(BASE, 'identities.yaml', client, `    - process:name: curl\n${client}`);
    expect(rules(plan(two, swapped))).toEqual([]);
  });

  it('selector-broadened: a binding injects into Services matched by fewer labels', () => {
    const strict = edit(
      BASE,
      'credentials.yaml',
      '        - app: billing\n',
      '        - app: billing\n          env: prod\n',
    );
    const p = plan(strict, BASE);
    expect(rules(p)).toContain('medium:selector-broadened');
    expect(p.risks.find((r) => r.rule === 'selector-broadened')!.message).toBe(
      'injection selectors: selector 0 no longer requires env',
    );
  });

  it('selector-broadened: a label named like a property every object has counts when it is dropped', () => {
    for (const label of ['constructor', 'toString', 'valueOf']) {
      const strict = edit(
        BASE,
        'credentials.yaml',
        '        - app: billing\n',
        `        - app: billing\n          ${label}: prod\n`,
      );
      const p = plan(strict, BASE);
      expect(p.risks.find((r) => r.rule === 'selector-broadened')?.message, label).toBe(
        `injection selectors: selector 0 no longer requires ${label}`,
      );
    }
  });

  it('identity-removed-while-referenced: the server goes while the client still pins it', () => {
    const text = BASE['identities.yaml'];
    const withoutServer = { ...BASE, 'identities.yaml': text.slice(text.indexOf('---\n') + 4) };
    const p = plan(BASE, withoutServer);
    expect(rules(p)).toContain('high:identity-removed-while-referenced');
    expect(p.resources).toContainEqual(
      expect.objectContaining({ kind: 'WorkloadIdentity', name: 'server', change: 'deleted' }),
    );
  });

  it('access-removed: a Service deleted while an egress rule still selects it cuts the client off (high)', () => {
    const services = BASE['services.yaml'];
    const withoutApi = { ...BASE, 'services.yaml': services.slice(services.indexOf('---\n') + 4) };
    const p = plan(BASE, withoutApi);
    const removed = p.risks.filter((r) => r.rule === 'access-removed');
    expect(removed).toEqual([
      {
        rule: 'access-removed',
        severity: 'high',
        message:
          'spiffe://example.com/apps/client loses access to Service/riptides-system/api (api.internal:8443): Service api is deleted while egress rule 0 still selects it',
        resource: 'WorkloadIdentity/riptides-system/client',
        lost: {
          workload: 'spiffe://example.com/apps/client',
          to: 'Service/riptides-system/api (api.internal:8443)',
        },
      },
    ]);
    expect(p.accessLost).toEqual({
      workloads: ['spiffe://example.com/apps/client'],
      destinations: ['Service/riptides-system/api (api.internal:8443)'],
    });
    expect(planText(p)).toContain(
      'Access removed: 1 workload(s) lose access to 1 destination(s): spiffe://example.com/apps/client',
    );
    expect(planText(p)).toMatch(
      /\[high\] access-removed: spiffe:\/\/example\.com\/apps\/client loses access/,
    );
    expect(planMarkdown(p)).toContain('**Access removed: 1 workload(s) lose access to 1 destination(s)**');
  });

  it('access-removed: a Service a binding still injects into is deleted, and an identity its peer reaches is deleted', () => {
    const services = BASE['services.yaml'];
    const withoutBilling = { ...BASE, 'services.yaml': services.slice(0, services.lastIndexOf('---\n')) };
    const credential = plan(BASE, withoutBilling).risks.filter((r) => r.rule === 'access-removed');
    expect(credential.map((r) => [r.severity, r.message])).toEqual([
      [
        'high',
        'spiffe://example.com/apps/client loses credential CredentialSource/riptides-system/token toward Service/riptides-system/billing (billing.internal:9000): Service billing is deleted while client-token still selects it',
      ],
    ]);
    const text = BASE['identities.yaml'];
    const withoutServer = { ...BASE, 'identities.yaml': text.slice(text.indexOf('---\n') + 4) };
    const peer = plan(BASE, withoutServer);
    expect(peer.risks.filter((r) => r.rule === 'access-removed').map((r) => [r.severity, r.message])).toEqual(
      [
        [
          'high',
          'spiffe://example.com/apps/client loses access to spiffe://example.com/apps/server: identity spiffe://example.com/apps/server is deleted',
        ],
      ],
    );
    expect(peer.accessLost.workloads).toEqual(['spiffe://example.com/apps/client']);
  });

  it('access-removed: medium when the workload drops it itself; nothing for a move or for a workload that goes', () => {
    const noEgress = edit(
      BASE,
      'identities.yaml',
      '  egress:\n    - selectors:\n        - app: api\n      connection:\n        tls:\n          mode: MUTUAL\n      allowedSPIFFEIDs:\n        - spiffe://example.com/apps/server\n',
      '',
    );
    const dropped = plan(BASE, noEgress).risks.filter((r) => r.rule === 'access-removed');
    expect(dropped.map((r) => [r.severity, r.message])).toEqual([
      [
        'medium',
        'spiffe://example.com/apps/client loses access to Service/riptides-system/api (api.internal:8443): its egress rules no longer select it',
      ],
    ]);
    const moved = plan(BASE, edit(BASE, 'services.yaml', 'port: 8443', 'port: 9443'));
    expect(rules(moved)).not.toContain('medium:access-removed');
    expect(rules(moved)).not.toContain('high:access-removed');
    expect(moved.accessLost).toEqual({ workloads: [], destinations: [] });
    const identities = BASE['identities.yaml'];
    const withoutClient = {
      ...BASE,
      'identities.yaml': identities.slice(0, identities.indexOf('---\n')),
      'credentials.yaml': BASE['credentials.yaml'].slice(0, BASE['credentials.yaml'].indexOf('---\n')),
    };
    expect(plan(BASE, withoutClient).accessLost.workloads).toEqual([]);
  });

  it('a Service renamed or moved to another namespace at the same address: no access lost, no credential news', () => {
    for (const [from, to] of [
      ['  name: api\n', '  name: api-v2\n'],
      ['  name: api\n', '  name: api\n  namespace: edge\n'],
      ['  name: billing\n', '  name: billing-v2\n'],
    ] as const) {
      const p = plan(BASE, edit(BASE, 'services.yaml', from, to));
      expect(p.access.removed.length, from).toBe(1);
      expect(p.risks, `${from} → ${to}`).toEqual([]);
      expect(p.accessLost).toEqual({ workloads: [], destinations: [] });
    }
  });

  it('tls-downgrade: an egress rule leaves MUTUAL while its Service moves or is renamed', () => {
    const downgrade = (files: Files) =>
      edit(files, 'identities.yaml', '          mode: MUTUAL', '          mode: PERMISSIVE');
    for (const [from, to] of [
      ['port: 8443', 'port: 9443'],
      ['address: api.internal', 'address: api.internal.example.com'],
      ['  name: api\n', '  name: api-v2\n'],
      ['  name: api\n', '  name: api\n  namespace: edge\n'],
    ] as const) {
      const p = plan(BASE, downgrade(edit(BASE, 'services.yaml', from, to)));
      expect(rules(p), `${from} → ${to}`).toEqual(['high:tls-downgrade']);
      expect(p.risks[0]!.message).toMatch(
        /^spiffe:\/\/example\.com\/apps\/client → Service\/\S+ \(\S+\) is no longer MUTUAL TLS \(now PERMISSIVE\)$/,
      );
    }
  });

  it('allowed-peers-widened: an egress rule stops pinning its peer while its Service moves', () => {
    const head = edit(
      edit(BASE, 'services.yaml', 'port: 8443', 'port: 9443'),
      'identities.yaml',
      '      allowedSPIFFEIDs:\n        - spiffe://example.com/apps/server\n',
      '',
    );
    expect(rules(plan(BASE, head))).toEqual(['high:allowed-peers-widened']);
  });

  it('reports an edge both ends contribute to as changed, not added, when only one end changes', () => {
    const head = edit(
      BASE,
      'identities.yaml',
      '  connection:\n    tls:\n      intercept: true\n',
      '  connection:\n    tls:\n      intercept: true\n  allowedSPIFFEIDs:\n    outbound:\n      - spiffe://example.com/apps/server\n',
    );
    const p = plan(BASE, head);
    const key = 'reach spiffe://example.com/apps/client -> spiffe://example.com/apps/server';
    expect(p.access.added).toEqual([]);
    expect(p.access.changed.map((c) => c.key)).toEqual([key]);
    expect(p.access.changed[0]!.after.attributes).toMatchObject({
      inboundAllowed: true,
      outboundAllowed: true,
      serverTls: 'MUTUAL',
    });
  });

  it('reports resources created, changed field by field, and deleted', () => {
    const head = edit(
      {
        ...BASE,
        'extra.yaml': `${H}kind: Service\nmetadata:\n  name: extra\nspec:\n  labels:\n    app: extra\n`,
      },
      'services.yaml',
      'port: 9000',
      'port: 9001',
    );
    const p = plan(BASE, head);
    expect(p.resources.map((r) => `${r.change} ${r.kind}/${r.name}`)).toEqual([
      'changed Service/billing',
      'created Service/extra',
    ]);
    expect(p.resources[0]!.fields).toEqual([{ path: 'spec.addresses[0].port', before: 9000, after: 9001 }]);
    expect(p.programs).toHaveLength(1);
  });

  it('stops at the diagnostics when head does not validate', () => {
    const p = plan(BASE, edit(BASE, 'credentials.yaml', 'credentialSource: token', 'credentialSource: tokn'));
    expect(p.diagnostics.some((d) => d.code === 'RT042')).toBe(true);
    expect(p.resources).toEqual([]);
    expect(p.risks).toEqual([]);
  });
});
