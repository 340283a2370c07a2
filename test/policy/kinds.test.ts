/** Each kind accepts every form the seeds and the reference show, current and older, and nothing else. */
import { describe, expect, it } from 'vitest';
import { renderPolicy } from '../../reconciler/policy/render.ts';

const H = 'apiVersion: core.riptides.io/v1alpha1\n';
const svc = `${H}kind: Service\nmetadata:\n  name: api\nspec:\n  addresses:\n    - address: api.example.com\n      port: 443\n  external: true\n  labels:\n    api: x\n`;

async function render(...docs: string[]) {
  return renderPolicy([{ path: 'p.yaml', bytes: new TextEncoder().encode(docs.join('---\n')) }], {
    trustDomain: 'example.com',
    // Allow lists below name a peer of other.org, a trust domain this one federates with.
    federatesWith: ['other.org'],
  });
}
async function codes(...docs: string[]) {
  return (await render(...docs)).diagnostics.map((d) => `${d.severity}:${d.code}`);
}
function identity(spec: string) {
  return `${H}kind: WorkloadIdentity\nmetadata:\n  name: w\nspec:\n  workloadID: apps/w\n${spec}`;
}
const group = '  scope:\n    daemonGroup:\n      id: g\n';

describe('WorkloadIdentity', () => {
  it('accepts daemonGroup, daemon and the older agent scope', async () => {
    for (const scope of ['daemonGroup', 'daemon', 'agent']) {
      const result = await render(
        identity(
          `  scope:\n    ${scope}:\n      id: riptides/${scope}/x\n  selectors:\n    - process:name: a\n`,
        ),
      );
      expect(result.diagnostics).toEqual([]);
      expect(result.programs![0]!.scope).toEqual({ kind: scope, id: `riptides/${scope}/x` });
    }
  });
  it('accepts selector values as string, integer and list, ORs maps and ANDs keys', async () => {
    const result = await render(
      identity(
        `${group}  selectors:\n    - process:name: [cat, curl]\n      destination:port: 8080\n    - process:cmdline: "next-server (v15"\n`,
      ),
    );
    expect(result.diagnostics).toEqual([]);
    expect(result.programs![0]!.identities[0]!.selectors).toEqual([
      { 'destination:port': ['8080'], 'process:name': ['cat', 'curl'] },
      { 'process:cmdline': ['next-server (v15'] },
    ]);
  });
  it('takes TLS settings, allowed IDs, egress rules and x509 settings', async () => {
    const result = await render(
      svc.replace('external: true', 'external: false'),
      identity(
        `${group}  selectors:\n    - process:name: a\n  connection:\n    tls:\n      mode: MUTUAL\n      intercept: false\n  allowedSPIFFEIDs:\n    inbound: [spiffe://example.com/apps/w]\n    outbound: [spiffe://other.org/x]\n  egress:\n    - selectors:\n        - api: x\n      workloadID: apps/w\n      connection:\n        tls:\n          mode: MUTUAL\n      allowedSPIFFEIDs: [spiffe://example.com/apps/w]\n  svid:\n    x509:\n      dnsNames: [w.example.com]\n      ttl: 3600s\n`,
      ),
    );
    expect(result.diagnostics).toEqual([]);
    const compiled = result.programs![0]!.identities[0]!;
    expect(compiled.x509).toEqual({ ttlSeconds: 3600, dnsNames: ['w.example.com'] });
    expect(compiled.egress[0]!.destinations).toEqual([
      {
        service: 'Service/riptides-system/api',
        external: false,
        address: 'api.example.com',
        port: 443,
        aliases: [],
        networkPrefixes: [],
      },
    ]);
  });
  it('defaults the inbound mode to PERMISSIVE and leaves an egress mode unset as null', async () => {
    const result = await render(
      svc,
      identity(
        `${group}  selectors:\n    - process:name: a\n  egress:\n    - selectors:\n        - api: x\n`,
      ),
    );
    const compiled = result.programs![0]!.identities[0]!;
    expect(compiled.tls.mode).toBe('PERMISSIVE');
    expect(compiled.egress[0]!.tls.mode).toBeNull();
  });
  it('rejects an empty selector list, an empty selector map and a wrong x509 ttl', async () => {
    expect(await codes(identity(`${group}  selectors: []\n`))).toEqual(['error:RT023']);
    expect(await codes(identity(`${group}  selectors:\n    - {}\n`))).toEqual(['error:RT023']);
    expect(
      await codes(
        identity(`${group}  selectors:\n    - process:name: a\n  svid:\n    x509:\n      ttl: 1.5h\n`),
      ),
    ).toEqual(['error:RT023']);
  });
});

describe('Service', () => {
  it('accepts addresses with tags, aliases, network names and prefixes, and spec-level tags', async () => {
    expect(
      await codes(
        `${H}kind: Service\nmetadata:\n  name: s\nspec:\n  addresses:\n    - address: 10.0.0.1\n      port: 5432\n      tags: [db]\n      aliases: [db.local]\n      networkNames: [net]\n      networkPrefixes: [10.0.0.0/8, "fd00::/8"]\n    - address: "::1"\n  tags: [postgres]\n  external: null\n  tls: true\n  labels:\n    api: postgres\n`,
      ),
    ).toEqual([]);
  });
  it('rejects bad ports, CIDRs and label values that are not strings', async () => {
    expect(await codes(svc.replace('port: 443', 'port: 70000'))).toEqual(['error:RT023']);
    expect(
      await codes(
        `${H}kind: Service\nmetadata:\n  name: s\nspec:\n  addresses:\n    - address: a.b\n      networkPrefixes: [10.0.0.0/33]\n  labels:\n    v: "1"\n`,
      ),
    ).toEqual(['error:RT035']);
    expect(await codes(svc.replace('api: x', 'version: 2'))).toEqual(['error:RT022']);
  });
});

describe('CredentialSource', () => {
  const src = (body: string) => `${H}kind: CredentialSource\nmetadata:\n  name: s\nspec:\n${body}`;
  it('accepts kubernetes, vault and aws as the seeds write them', async () => {
    expect(
      await codes(
        src('  kubernetes:\n    secretRef:\n      name: k\n      key: token\n    type: BearerToken\n'),
      ),
    ).toEqual([]);
    expect(
      await codes(
        src(
          '  vault:\n    address: https://vault.example.com\n    audience:\n      - example-audience\n    jwtAuthMethodPath: jwt_production\n    path: openai/creds/riptides-role\n    role: openai-apikeys\n    type:\n      token:\n        source: api_key\n',
        ),
      ),
    ).toEqual([]);
    expect(
      await codes(
        src(
          '  aws:\n    roleArn: arn:aws:iam::123456789012:role/r\n    audience: []\n    lifetime: "900s"\n    idTokenClaims: []\n    idTokenLifetime:\n',
        ),
      ),
    ).toEqual([]);
  });
  it('parses gcp, azure and oauth2 and reports them as not yet supported, never silently', async () => {
    expect(
      await codes(
        src(
          '  gcp:\n    oidcProviderId: //iam.googleapis.com/projects/1/x\n    serviceAccount: sa@p.iam.gserviceaccount.com\n    lifetime: 3600s\n',
        ),
      ),
    ).toEqual(['warning:RT051']);
    expect(await codes(src('  azure:\n    tenantID: t\n'))).toEqual(['warning:RT051']);
    expect(await codes(src('  oauth2:\n    tokenURL: https://x\n'))).toEqual(['warning:RT051']);
  });
  it('rejects a kubernetes type other than BearerToken, and a plain-http Vault with a warning', async () => {
    expect(
      await codes(src('  kubernetes:\n    secretRef:\n      name: k\n      key: t\n    type: Basic\n')),
    ).toEqual(['error:RT023']);
    expect(
      await codes(
        src(
          '  vault:\n    address: http://vault:8200\n    path: p\n    role: r\n    type:\n      token:\n        source: k\n',
        ),
      ),
    ).toEqual(['warning:RT054']);
  });
  it('bounds STS lifetimes to 900..43200 seconds', async () => {
    const aws = (l: string) =>
      src(`  aws:\n    roleArn: arn:aws:iam::123456789012:role/r\n    lifetime: ${l}\n`);
    expect(await codes(aws('900s'))).toEqual([]);
    expect(await codes(aws('43200s'))).toEqual([]);
    expect(await codes(aws('899s'))).toEqual(['error:RT032']);
    expect(await codes(aws('43201s'))).toEqual(['error:RT032']);
  });
});

describe('CredentialBinding and WorkloadCredential', () => {
  const base = [
    svc,
    identity(`${group}  selectors:\n    - process:name: a\n  connection:\n    tls:\n      intercept: true\n`),
    `${H}kind: CredentialSource\nmetadata:\n  name: s\nspec:\n  kubernetes:\n    secretRef:\n      name: k\n      key: t\n    type: BearerToken\n`,
  ];
  it('binds with injection, sysfs, or both; neither is an error', async () => {
    const binding = (p: string) =>
      `${H}kind: CredentialBinding\nmetadata:\n  name: b\nspec:\n  workloadID: apps/w\n  credentialSource: s\n  propagation:\n${p}`;
    expect(
      await codes(...base, binding('    injection:\n      selectors:\n        - api: x\n    sysfs: {}\n')),
    ).toEqual([]);
    expect(await codes(...base, binding('    sysfs: {}\n'))).toEqual([]);
    expect(await codes(...base, binding('    {}\n'))).toEqual(['error:RT024']);
  });
  it('warns when a TLS destination would receive a credential without interception', async () => {
    const noIntercept = base.map((d) => d.replace('  connection:\n    tls:\n      intercept: true\n', ''));
    expect(
      await codes(
        ...noIntercept,
        `${H}kind: CredentialBinding\nmetadata:\n  name: b\nspec:\n  workloadID: apps/w\n  credentialSource: s\n  propagation:\n    injection:\n      selectors:\n        - api: x\n`,
      ),
    ).toEqual(['warning:RT049']);
  });
  it('resolves the older WorkloadCredential through egress credentialName', async () => {
    const result = await render(
      svc,
      base[2]!,
      `${H}kind: WorkloadCredential\nmetadata:\n  name: wc\nspec:\n  workloadID: apps/w\n  credentialSource: s\n`,
      identity(
        `${group}  selectors:\n    - process:name: [streamlit]\n  egress:\n    - selectors:\n        - api: x\n      credentialName: wc\n      connection:\n        tls:\n          intercept: true\n`,
      ),
    );
    expect(result.diagnostics).toEqual([]);
    expect(result.programs![0]!.identities[0]!.credentials[0]).toMatchObject({
      via: 'WorkloadCredential',
      resource: 'WorkloadCredential/riptides-system/wc',
    });
  });
});

describe('Secret and unmanaged kinds', () => {
  it('accepts a Secret without values and a SOPS-encrypted one', async () => {
    expect(await codes('apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: Opaque\n')).toEqual([]);
    expect(
      await codes(
        'apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  token: ENC[AES256_GCM,data:3q2+7w==,iv:AAAAAAAAAAAAAAAAAAAAAA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]\nsops:\n  version: 3.9.0\n',
      ),
    ).toEqual([]);
  });
  it('ignores control-plane kinds with a warning', async () => {
    expect(
      await codes(
        'apiVersion: auth.riptides.io/v1alpha1\nkind: Verifier\nmetadata:\n  name: v\nspec:\n  joinToken: {}\n',
      ),
    ).toEqual(['warning:RT010']);
  });
});
