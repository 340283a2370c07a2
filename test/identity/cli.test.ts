import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandIO } from '../../reconciler/cli/command.ts';
import { main } from '../../reconciler/cli/main.ts';
import { openssl, tempDir } from '../support/identity-helpers.ts';

const tmp = tempDir();
afterAll(tmp.cleanup);

async function cli(...argv: string[]) {
  let stdout = '';
  let stderr = '';
  const io: CommandIO = {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
    env: {},
    cwd: tmp.dir,
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}

describe('riptides-cli ca / svid / jwt / bundle', () => {
  beforeAll(async () => {
    const init = await cli(
      'ca',
      'init',
      '--trust-domain',
      'example.org',
      '--dir',
      'ca',
      '--issuer',
      'https://127.0.0.1:8443/oidc',
    );
    expect(init).toMatchObject({ code: 0, stderr: '' });
    expect(init.stdout).toMatch(/trust domain example.org \(ec-p256\)/);
    expect(init.stdout).toMatch(/signing CA .* active/);
  });

  it('svid mint writes a chain, a 0600 key and the bundle that openssl verifies', async () => {
    const out = join(tmp.dir, 'out');
    const res = await cli(
      'svid',
      'mint',
      '--dir',
      'ca',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--ttl',
      '30m',
      '--dns',
      'web.local',
      '--dns',
      'web',
      '--out',
      'out',
    );
    expect(res).toMatchObject({ code: 0, stderr: '' });
    expect(res.stdout).toMatch(/minted spiffe:\/\/example.org\/web/);
    expect(statSync(join(out, 'key.pem')).mode & 0o777).toBe(0o600);
    const verify = openssl([
      'verify',
      '-CAfile',
      join(out, 'bundle.pem'),
      '-untrusted',
      join(out, 'svid.pem'),
      join(out, 'svid.pem'),
    ]);
    expect(verify.status).toBe(0);
    const text = openssl(['x509', '-in', join(out, 'svid.pem'), '-noout', '-text']).out;
    expect(text).toContain('URI:spiffe://example.org/web, DNS:web.local, DNS:web');
    // The key belongs to the certificate.
    const keyPub = openssl(['pkey', '-in', join(out, 'key.pem'), '-pubout']).out;
    const certPub = openssl(['x509', '-in', join(out, 'svid.pem'), '-noout', '-pubkey']).out;
    expect(keyPub).toBe(certPub);
    expect(res.stdout).not.toContain('PRIVATE KEY');
  });

  it('jwt mint prints a token that verifies with the jwt-svid keys of `bundle show --format jwks`', async () => {
    const res = await cli(
      'jwt',
      'mint',
      '--dir',
      'ca',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--audience',
      'vault',
      '--ttl',
      '2m',
    );
    expect(res.code).toBe(0);
    const token = res.stdout.trim();
    const bundle = JSON.parse((await cli('bundle', 'show', '--dir', 'ca', '--format', 'spiffe')).stdout) as {
      keys: Record<string, unknown>[];
    };
    const x509 = bundle.keys.filter((k) => k.use === 'x509-svid');
    expect(x509).toHaveLength(2);
    for (const k of x509) {
      expect(k).not.toHaveProperty('kid');
      expect(k.x5c).toHaveLength(1);
    }
    const jwt = bundle.keys.filter((k) => k.use === 'jwt-svid');
    expect(jwt.every((k) => typeof k.kid === 'string')).toBe(true);
    // jose only picks keys with `use: sig` (or none); the SPIFFE bundle says `jwt-svid`.
    const jwks = createLocalJWKSet({ keys: jwt.map(({ use: _use, ...k }) => k) });
    const { payload } = await jwtVerify(token, jwks, {
      issuer: 'https://127.0.0.1:8443/oidc',
      audience: 'vault',
    });
    expect(payload.sub).toBe('spiffe://example.org/web');
    expect(payload.exp! - payload.iat!).toBe(120);
  });

  it('bundle show prints PEM by default; ca rotate and ca show print the state', async () => {
    const pem = await cli('bundle', 'show', '--dir', 'ca');
    expect(pem.stdout.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(pem.stdout).toBe(readFileSync(join(tmp.dir, 'out', 'bundle.pem'), 'utf8'));
    const rotate = await cli('ca', 'rotate', '--dir', 'ca', '--json');
    expect(rotate.code).toBe(0);
    expect(JSON.parse(rotate.stdout)).toMatchObject({
      trustDomain: 'example.org',
      signingCas: [{ state: 'active' }],
    });
    expect((await cli('ca', 'show', '--dir', 'ca')).stdout).toMatch(/JWT key/);
  });

  it.each(['ca', 'svid', 'jwt', 'bundle'])('%s --help prints usage', async (name) => {
    const res = await cli(name, '--help');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(`riptides-cli ${name}`);
  });

  it('reports usage mistakes and refusals with what to do, exit 2', async () => {
    const missing = await cli('svid', 'mint', '--dir', 'ca', '--out', 'o2');
    expect(missing).toMatchObject({ code: 2 });
    expect(missing.stderr).toMatch(/missing required flag --spiffe-id[\s\S]*riptides-cli svid --help/);
    const foreign = await cli(
      'svid',
      'mint',
      '--dir',
      'ca',
      '--spiffe-id',
      'spiffe://other.org/x',
      '--out',
      'o3',
    );
    expect(foreign.code).toBe(2);
    expect(foreign.stderr).toMatch(
      /--spiffe-id "spiffe:\/\/other.org\/x" is in trust domain other.org, but this CA issues for example.org; write spiffe:\/\/example.org\/<workload path>/,
    );
    const noCa = await cli(
      'jwt',
      'mint',
      '--dir',
      'nowhere',
      '--spiffe-id',
      'spiffe://example.org/x',
      '--audience',
      'a',
    );
    expect(noCa.stderr).toMatch(/no authority.json here: create the CA first/);
    expect(
      (await cli('ca', 'init', '--trust-domain', 'x.org', '--dir', 'y', '--upstream-cert', 'c.pem')).stderr,
    ).toMatch(/--upstream-cert and --upstream-key go together/);
    expect(
      (await cli('ca', 'init', '--trust-domain', 'x.org', '--dir', 'y', '--key-type', 'dsa')).stderr,
    ).toMatch(/--key-type must be one of ec-p256, rsa-2048/);
    expect(
      (
        await cli(
          'svid',
          'mint',
          '--dir',
          'ca',
          '--spiffe-id',
          'spiffe://example.org/x',
          '--ttl',
          'soon',
          '--out',
          'o',
        )
      ).stderr,
    ).toMatch(/--ttl must be a duration/);
    expect((await cli('bundle', 'list', '--dir', 'ca')).stderr).toMatch(
      /unknown subcommand "list" \(the subcommands are show\)/,
    );
  });
});
