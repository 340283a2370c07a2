/**
 * Real inputs for control-interface tests: a trust domain's authority (the reconciler's own CA code), SVIDs it
 * signs for keys made here, and rule tables naming them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IdentityRule } from '../../kernel-module/control/abi.ts';
import type { RuleTableInput } from '../../kernel-module/control/writer.ts';
import { type Authority, generateKeyAndCsr, initAuthority } from '../../reconciler/identity/authority.ts';

export const TD = 'example.org';

export interface Pki {
  authority: Authority;
  /** A key and the SVID the authority signed for it. */
  svid(spiffeId: string, ttlSeconds?: number): Promise<{ certPem: string; keyPem: string; serial: string }>;
  close(): void;
}

export async function startPki(trustDomain = TD): Promise<Pki> {
  const dir = mkdtempSync(join(tmpdir(), 'riptides-control-pki-'));
  const authority = await initAuthority({ trustDomain, dir: join(dir, 'ca') });
  return {
    authority,
    async svid(spiffeId, ttlSeconds) {
      const { keyPem, csrPem } = await generateKeyAndCsr(spiffeId);
      const signed = await authority.signX509Svid({ csrPem, ...(ttlSeconds ? { ttlSeconds } : {}) });
      return { certPem: signed.chainPem, keyPem, serial: signed.serial };
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** An identity rule for `workload` with one egress rule injecting one bearer credential. */
export function identityRule(
  workload: string,
  opts: { svid?: IdentityRule['svid']; trustDomain?: string } = {},
): IdentityRule {
  const spiffeId = `spiffe://${opts.trustDomain ?? TD}/${workload}`;
  const credentialHash = 'c0ffee00c0ffee00';
  const destination = {
    service: 'Service/riptides-system/github-api',
    external: true,
    address: 'api.github.com',
    port: 443,
    aliases: [],
    networkPrefixes: [],
  };
  return {
    spiffeId,
    workloadID: workload,
    hash: 'a1b2c3d4e5f60718',
    inbound: { mode: 'MUTUAL', intercept: false, allowedSpiffeIds: [`spiffe://${TD}/peer`] },
    outbound: { allowedSpiffeIds: [] },
    egress: [
      {
        hash: '0123456789abcdef',
        destinations: [destination],
        tls: { mode: 'SIMPLE', intercept: true },
        allowedSpiffeIds: [],
        credentials: [credentialHash],
      },
    ],
    credentials: [
      {
        hash: credentialHash,
        binding: 'CredentialBinding/riptides-system/github-token',
        name: 'github-token',
        kind: 'bearer',
        injection: { destinations: [destination] },
        sysfs: { dir: '00112233445566ff/github-token' },
      },
    ],
    svid: opts.svid ?? null,
  };
}

export function table(version: string, identities: IdentityRule[], trustDomain = TD): RuleTableInput {
  return { version, trustDomain, identities };
}
