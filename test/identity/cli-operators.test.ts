/**
 * The identity authority as operators meet it: keys that relying parties accept (a standard JWKS, and the
 * OIDC discovery document served under the issuer's path), lifetimes that say when they were capped,
 * rotations that say what they did, and --spiffe-id errors in terms of the flag.
 */
import { join } from 'node:path';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { openAuthority } from '../../reconciler/identity/authority.ts';
import { capture } from '../support/cli.ts';
import { scratch } from '../support/scratch.ts';

const ISSUER = 'https://oidc.example.test/tenant-a';
let tmp: ReturnType<typeof scratch>;
let ca: string;

async function cli(...argv: string[]) {
  const out = capture(tmp.dir);
  const code = await main(argv, out.io);
  return { code, stdout: out.stdout, stderr: out.stderr };
}

beforeAll(async () => {
  tmp = scratch('cli-operators');
  ca = join(tmp.dir, 'ca');
  expect(
    (await cli('ca', 'init', '--trust-domain', 'example.org', '--dir', 'ca', '--issuer', ISSUER)).code,
  ).toBe(0);
});

afterAll(() => tmp?.cleanup());

const mint = async (ttl = '5m') =>
  (
    await cli(
      'jwt',
      'mint',
      '--dir',
      'ca',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--audience',
      'sts',
      '--ttl',
      ttl,
    )
  ).stdout.trim();

describe('keys for relying parties', () => {
  it('bundle show --format oidc-jwks is a JWKS that jose verifies tokens with, as printed', async () => {
    const token = await mint();
    const jwks = JSON.parse((await cli('bundle', 'show', '--dir', 'ca', '--format', 'oidc-jwks')).stdout);
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { issuer: ISSUER, audience: 'sts' });
    expect(payload.sub).toBe('spiffe://example.org/web');
    for (const key of jwks.keys)
      expect(key).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
  });

  it('bundle show --format spiffe stays the SPIFFE bundle, which OIDC libraries do not accept', async () => {
    const token = await mint();
    const bundle = JSON.parse((await cli('bundle', 'show', '--dir', 'ca', '--format', 'spiffe')).stdout);
    expect(bundle.keys.map((k: { use: string }) => k.use).sort()).toEqual([
      'jwt-svid',
      'x509-svid',
      'x509-svid',
    ]);
    expect(bundle.spiffe_refresh_hint).toBeGreaterThan(0);
    await expect(jwtVerify(token, createLocalJWKSet(bundle), { audience: 'sts' })).rejects.toThrow(
      /no applicable key found/,
    );
    const old = await cli('bundle', 'show', '--dir', 'ca', '--format', 'jwks');
    expect(old.code).toBe(2);
    expect(old.stderr).toContain('"oidc-jwks" the JWKS that OIDC relying parties accept');
  });

  it('jwt --help points relying parties at the formats they accept', async () => {
    const help = (await cli('jwt', '--help')).stdout;
    expect(help).toContain('bundle show --dir DIR --format oidc-jwks');
    expect(help).toContain('oidc serve --dir DIR');
    expect(help).not.toMatch(/--format jwks\b/);
  });

  it('oidc serve answers discovery and keys under the issuer path, and follows a rotation', async () => {
    let stop!: () => void;
    const stopped = new Promise<void>((resolve) => {
      stop = resolve;
    });
    const out = capture(tmp.dir);
    out.io.untilStopped = () => stopped;
    const serving = main(
      ['oidc', 'serve', '--dir', 'ca', '--listen', '127.0.0.1:0', '--issuer', `${ISSUER}/`],
      out.io,
    );
    try {
      const deadline = Date.now() + 10_000;
      while (!out.stdout.includes('\n') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const base = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(out.stdout)?.[1];
      expect(base, out.stdout + out.stderr).toBeDefined();

      const discovery = await fetch(`${base}/tenant-a/.well-known/openid-configuration`);
      expect(discovery.status).toBe(200);
      expect(await discovery.json()).toMatchObject({
        issuer: ISSUER,
        jwks_uri: `${ISSUER}/keys`,
        id_token_signing_alg_values_supported: ['ES256'],
      });
      // Only under the issuer's path.
      expect((await fetch(`${base}/.well-known/openid-configuration`)).status).toBe(404);
      expect((await fetch(`${base}/keys`)).status).toBe(404);

      const token = await mint();
      const remote = createRemoteJWKSet(new URL(`${base}/tenant-a/keys`));
      const { payload } = await jwtVerify(token, remote, { issuer: ISSUER, audience: 'sts' });
      expect(payload.sub).toBe('spiffe://example.org/web');

      // Another process (cron's `ca rotate`, a day on) prepares the next JWT key: it is published without a restart.
      const later = await openAuthority(ca, { now: () => new Date(Date.now() + 13 * 3600_000) });
      await later.rotate();
      const published = async () =>
        ((await (await fetch(`${base}/tenant-a/keys`)).json()) as { keys: unknown[] }).keys.length;
      const until = Date.now() + 10_000;
      while ((await published()) < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect(await published()).toBe(2);
    } finally {
      stop();
    }
    expect(await serving).toBe(0);
  });

  it('oidc serve refuses an issuer that is not the one the CA signs with', async () => {
    const r = await cli(
      'oidc',
      'serve',
      '--dir',
      'ca',
      '--listen',
      '127.0.0.1:0',
      '--issuer',
      'https://elsewhere.test',
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `--issuer https://elsewhere.test is not the issuer this CA signs JWT-SVIDs with (${ISSUER}): relying parties would refuse every token`,
    );
  });
});

describe('what the commands say they did', () => {
  it('svid mint --ttl 48h says it was capped, and to what: the signing CA end', async () => {
    const r = await cli(
      'svid',
      'mint',
      '--dir',
      'ca',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--ttl',
      '48h',
      '--out',
      'long',
    );
    expect(r.code).toBe(0);
    const status = JSON.parse((await cli('ca', 'show', '--dir', 'ca', '--json')).stdout);
    const caEnd = status.signingCas.find((s: { state: string }) => s.state === 'active').notAfter;
    const capped =
      /^warning: --ttl 48h was capped to (23h5\d?m?\d*s?) \(until (\S+)\): an X509-SVID never outlives the signing CA that signs it/.exec(
        r.stderr,
      );
    expect(capped, r.stderr).not.toBeNull();
    // Certificates keep whole seconds: the SVID ends in the second its signing CA ends.
    expect(Math.floor(Date.parse(capped![2]!) / 1000)).toBe(Math.floor(Date.parse(caEnd) / 1000));
    expect(r.stdout).toContain(`notAfter  ${capped![2]} (capped: see the warning)`);
    const short = await cli(
      'svid',
      'mint',
      '--dir',
      'ca',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--ttl',
      '30m',
      '--out',
      'short',
    );
    expect(short.stderr).toBe('');
  });

  it('jwt mint says when its --ttl was capped by the signing key', async () => {
    const r = await cli(
      'jwt',
      'mint',
      '--dir',
      'ca',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--audience',
      'a',
      '--ttl',
      '7d',
    );
    expect(r.code).toBe(0);
    const { iat, exp } = decodeJwt(r.stdout.trim());
    expect(exp! - iat!).toBeLessThan(7 * 86_400);
    expect(r.stderr).toMatch(
      /^warning: --ttl 7d was capped to \S+ \(until \S+\): a JWT-SVID never outlives the key that signs it/,
    );
  });

  it('ca rotate prints the step it took, or that nothing was due, and when the next one is', async () => {
    const dir = join(tmp.dir, 'rotating');
    // A 14 s signing CA (and JWT key), backdated 10 s: the next is prepared half-way, two seconds from now.
    expect(
      (await cli('ca', 'init', '--trust-domain', 'example.org', '--dir', dir, '--ca-ttl', '14s')).code,
    ).toBe(0);
    const idle = await cli('ca', 'rotate', '--dir', dir);
    expect(idle.stdout).toMatch(
      /^rotated: nothing due\nnext rotation step due (\S+): prepare the next (signing CA|JWT key)\n$/,
    );
    const due = Date.parse(/due (\S+):/.exec(idle.stdout)![1]!);
    while (Date.now() < due + 50) await new Promise((r) => setTimeout(r, 50));
    const step = await cli('ca', 'rotate', '--dir', dir);
    expect(step.stdout).toMatch(
      /^rotated: prepared the next signing CA [0-9a-f]+, published in the bundle before it signs$/m,
    );
    expect(step.stdout).toMatch(
      /^rotated: prepared the next JWT key \S+, published in the bundle before it signs$/m,
    );
    expect(step.stdout).toMatch(
      /^next rotation step due \S+: activate the prepared (signing CA|JWT key) \S+$/m,
    );
  });

  it('an invalid --spiffe-id is explained in terms of the flag, not of a CSR', async () => {
    for (const [id, reason] of [
      ['example.org/web', 'scheme is missing or invalid'],
      ['spiffe://example.org/web/', 'path cannot have a trailing slash'],
      ['spiffe://example.org', 'names the trust domain itself'],
      ['spiffe://other.org/web', 'is in trust domain other.org, but this CA issues for example.org'],
    ]) {
      const r = await cli('svid', 'mint', '--dir', 'ca', '--spiffe-id', id!, '--out', 'x');
      expect(r.code, id).toBe(2);
      expect(r.stderr, id).toContain(`--spiffe-id "${id}"`);
      expect(r.stderr, id).toContain(reason);
      expect(r.stderr, id).toContain('write spiffe://example.org/<workload path>');
      expect(r.stderr, id).not.toMatch(/CSR/);
      const jwt = await cli('jwt', 'mint', '--dir', 'ca', '--spiffe-id', id!, '--audience', 'a');
      expect(jwt.stderr, id).toContain(reason);
      expect(jwt.stderr, id).not.toMatch(/CSR|JWT-SVID subject/);
    }
  });
});
