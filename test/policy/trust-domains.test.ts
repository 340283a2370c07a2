/** Allow lists name peers of our trust domain, or of one we federate with; anything else is a warning (RT055). */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { capture } from '../support/cli.ts';
import { tempDir } from '../support/scratch.ts';

const identity = `apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: api
spec:
  workloadID: apps/api
  scope:
    daemonGroup:
      id: g
  selectors:
    - process:name: api
  allowedSPIFFEIDs:
    inbound:
      - spiffe://example.com/apps/api
      - spiffe://partner.org/billing
    outbound:
      - spiffe://quickstart.riptides.local/app/orders
`;

function repo(config: string): string {
  const dir = tempDir('trust-domains');
  writeFileSync(join(dir, 'riptides.config.yaml'), config);
  writeFileSync(join(dir, 'identity.yaml'), identity);
  return dir;
}

async function validate(dir: string) {
  const out = capture();
  const code = await main(['validate', '--repo', dir], out.io);
  return { code, ...out };
}

describe('allowed SPIFFE IDs in other trust domains', () => {
  it('warns for each ID in a trust domain that is neither ours nor federated, at its line', async () => {
    const r = await validate(repo('trustDomain: example.com\n'));
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      'identity.yaml:15:9: warning RT055: "spiffe://partner.org/billing" is in trust domain partner.org, which is neither this repository\'s (example.com) nor federated with it: no peer can present it',
    );
    expect(r.stdout).toContain(
      'hint: write spiffe://example.com/billing, or list partner.org under federatesWith in riptides.config.yaml',
    );
    expect(r.stdout).toContain(
      'identity.yaml:17:9: warning RT055: "spiffe://quickstart.riptides.local/app/orders"',
    );
    expect(r.stdout).toMatch(/^valid: 0 error\(s\), 2 warning\(s\)/m);
  });

  it('accepts the IDs of the trust domains listed under federatesWith', async () => {
    const r = await validate(
      repo('trustDomain: example.com\nfederatesWith:\n  - partner.org\n  - quickstart.riptides.local\n'),
    );
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('RT055');
    expect(r.stdout).toMatch(/^valid: 0 error\(s\), 0 warning\(s\)/m);
  });

  it('refuses a federatesWith entry that is not a trust domain name', async () => {
    const r = await validate(repo('trustDomain: example.com\nfederatesWith: [spiffe://partner.org]\n'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('RT060');
    expect(r.stderr).toContain('federatesWith: "spiffe://partner.org" is not a valid trust domain name');
  });
});
