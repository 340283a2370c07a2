import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, lstatSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPaths, sidOf } from '../../kernel-module/control/abi.ts';
import { ControlError } from '../../kernel-module/control/errors.ts';
import { ControlReader } from '../../kernel-module/control/reader.ts';
import { loadSystemRoots, pemCertificates } from '../../kernel-module/control/trust-store.ts';
import { ControlWriter } from '../../kernel-module/control/writer.ts';
import { identityRule, type Pki, startPki, TD, table } from '../support/control-fixtures.ts';
import { openssl } from '../support/identity-helpers.ts';
import { tempDir } from '../support/scratch.ts';

let pki: Pki;
beforeAll(async () => {
  pki = await startPki();
});
afterAll(() => pki.close());

const mode = (path: string) => (lstatSync(path).mode & 0o7777).toString(8);
const API = `spiffe://${TD}/app/api`;

async function openTree() {
  const root = join(tempDir('control'), 'riptides');
  const writer = await ControlWriter.open(root);
  return { root, writer, reader: new ControlReader(root) };
}

describe('control tree: layout and modes', () => {
  it('creates the tree with private directories 0700 and a traversable credentials directory', async () => {
    const { root } = await openTree();
    expect(mode(root)).toBe('755');
    expect(mode(join(root, 'certs'))).toBe('755');
    expect(mode(join(root, 'private'))).toBe('700');
    expect(mode(join(root, 'identities'))).toBe('700');
    expect(mode(join(root, 'credentials'))).toBe('711');
  });

  it('writes config as the real module does (trust_domain, daemon_id) and refuses a bad trust domain', async () => {
    const { root, writer, reader } = await openTree();
    await writer.writeConfig({ trustDomain: TD, daemonId: 'riptides/daemon/node-a' });
    expect(JSON.parse(readFileSync(join(root, 'config'), 'utf8'))).toEqual({
      abi: 1,
      trust_domain: TD,
      daemon_id: 'riptides/daemon/node-a',
    });
    expect(await reader.config()).toMatchObject({ trust_domain: TD });
    await expect(writer.writeConfig({ trustDomain: 'Bad Domain', daemonId: 'x' })).rejects.toThrow(
      /trust_domain/,
    );
    expect(JSON.parse(readFileSync(join(root, 'config'), 'utf8')).trust_domain).toBe(TD);
  });

  it('installs an SVID: key 0600, certificate and chain, in identities/<sid>/ (0700), readable back', async () => {
    const { root, writer, reader } = await openTree();
    const svid = await pki.svid(API);
    const written = await writer.writeSvid(API, svid);
    const dir = join(root, 'identities', sidOf(API));
    expect(written.dir).toBe(`identities/${sidOf(API)}`);
    expect(written.serial).toBe(svid.serial.replace(/^0+/, ''));
    expect(mode(dir)).toBe('700');
    expect(mode(join(dir, 'svid.key'))).toBe('600');
    expect(readFileSync(join(dir, 'svid.key'), 'utf8')).toBe(svid.keyPem);
    const back = await reader.svid(API);
    expect(back?.serial).toBe(written.serial);
    expect(new X509Certificate(back!.chain[0]!).subjectAltName).toBe(`URI:${API}`);
    // The chain verifies against the trust bundle with openssl.
    await writer.writeTrustBundle(pki.authority.bundlePem());
    const chain = pemCertificates(svid.certPem);
    const verify = openssl(['verify', '-CAfile', 'bundle.pem', '-untrusted', 'chain.pem', 'leaf.pem'], {
      'bundle.pem': readFileSync(join(root, 'certs/trust-bundle.crt'), 'utf8'),
      'chain.pem': chain.slice(1).join(''),
      'leaf.pem': chain[0]!,
    });
    expect(verify.out).toContain('leaf.pem: OK');
  });

  it('refuses an SVID whose key is not its key, or whose SPIFFE ID is another, and writes nothing', async () => {
    const { root, writer } = await openTree();
    const a = await pki.svid(API);
    const b = await pki.svid(`spiffe://${TD}/app/other`);
    await expect(writer.writeSvid(API, { certPem: a.certPem, keyPem: b.keyPem })).rejects.toMatchObject({
      code: 'svid-mismatch',
    });
    await expect(writer.writeSvid(API, b)).rejects.toThrow(/URI SAN is spiffe:\/\/example.org\/app\/other/);
    expect(() => statSync(join(root, 'identities', sidOf(API), 'svid.key'))).toThrow(/ENOENT/);
  });
});

describe('control tree: trust bundles and the intercept CA', () => {
  it('creates the intercept CA once (0600 key, CA:TRUE pathlen 0) and keeps it across writer restarts', async () => {
    const { root, writer } = await openTree();
    const first = await writer.ensureInterceptCa({ commonName: 'riptides TLS intercept CA node-a' });
    expect(first.created).toBe(true);
    expect(mode(join(root, 'private/intercept-ca.key'))).toBe('600');
    expect(mode(join(root, 'private'))).toBe('700');
    const text = openssl(['x509', '-noout', '-text', '-in', 'ca.pem'], { 'ca.pem': first.certPem }).out;
    expect(text).toMatch(/CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Certificate Sign, CRL Sign/);
    expect(text).toMatch(/ASN1 OID: prime256v1/);
    const again = await (await ControlWriter.open(root)).ensureInterceptCa();
    expect(again).toEqual({ certPem: first.certPem, created: false });
  });

  it('replaces an intercept CA swapped in by hand, even a valid one', async () => {
    const { root, writer } = await openTree();
    const original = await writer.ensureInterceptCa();
    // A valid CA and key, made elsewhere, copied over the node's.
    const dir = tempDir('planted');
    const made = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-subj',
        '/CN=evil',
        '-days',
        '3650',
      ].concat([
        '-keyout',
        join(dir, 'k.pem'),
        '-out',
        join(dir, 'c.pem'),
        '-addext',
        'basicConstraints=critical,CA:TRUE',
      ]),
      { stdio: 'pipe' },
    );
    expect(made.status).toBe(0);
    writeFileSync(join(root, 'certs/intercept-ca.crt'), readFileSync(join(dir, 'c.pem')));
    writeFileSync(join(root, 'private/intercept-ca.key'), readFileSync(join(dir, 'k.pem')));
    const next = await (await ControlWriter.open(root)).ensureInterceptCa();
    expect(next.created).toBe(true);
    expect(next.reason).toMatch(/changed outside the writer/);
    expect(next.certPem).not.toBe(original.certPem);
    expect(new X509Certificate(next.certPem).subject).not.toMatch(/evil/);
  });

  it('ca-certificates.crt = system roots + intercept CA + trust bundle; curl-style verification with openssl works', async () => {
    const { root, writer } = await openTree();
    const ca = await writer.ensureInterceptCa();
    await writer.writeTrustBundle(pki.authority.bundlePem());
    const bundle = readFileSync(join(root, 'certs/ca-certificates.crt'), 'utf8');
    expect(mode(join(root, 'certs/ca-certificates.crt'))).toBe('644');
    const system = await loadSystemRoots();
    expect(system.source).toBe('/etc/ssl/certs/ca-certificates.crt');
    const blocks = pemCertificates(bundle);
    const systemBlocks = pemCertificates(system.pem);
    expect(blocks.slice(0, systemBlocks.length)).toEqual(systemBlocks);
    expect(blocks).toContain(pemCertificates(ca.certPem)[0]);
    for (const authority of pemCertificates(pki.authority.bundlePem())) expect(blocks).toContain(authority);
    // An SVID verifies against what applications are given.
    const svid = pemCertificates((await pki.svid(API)).certPem);
    const verify = openssl(['verify', '-CAfile', 'bundle.pem', '-untrusted', 'chain.pem', 'leaf.pem'], {
      'bundle.pem': bundle,
      'chain.pem': svid.slice(1).join(''),
      'leaf.pem': svid[0]!,
    });
    expect(verify.out).toContain('leaf.pem: OK');
  });

  it('refuses a trust bundle that holds no certificate, keeping the one there', async () => {
    const { root, writer } = await openTree();
    await writer.writeTrustBundle(pki.authority.bundlePem());
    const before = readFileSync(join(root, 'certs/trust-bundle.crt'), 'utf8');
    await expect(writer.writeTrustBundle('not a pem')).rejects.toThrow(/holds no PEM certificate/);
    expect(readFileSync(join(root, 'certs/trust-bundle.crt'), 'utf8')).toBe(before);
  });
});

describe('control tree: sysfs credential files', () => {
  it('writes a bearer token 0600 in a 0700 directory under credentials/<binding-hash>/<binding-name>', async () => {
    const { root, writer, reader } = await openTree();
    await writer.writeSysfsCredential('00112233445566ff/github-token', {
      kind: 'bearer',
      token: 'ghp_secret1',
    });
    const dir = join(root, 'credentials/00112233445566ff/github-token');
    expect(mode(dir)).toBe('700');
    expect(mode(join(root, 'credentials/00112233445566ff'))).toBe('711');
    expect(mode(join(dir, 'token'))).toBe('600');
    expect(readFileSync(join(dir, 'token'), 'utf8')).toBe('ghp_secret1');
    expect(await reader.sysfsCredential('00112233445566ff/github-token')).toEqual({ token: 'ghp_secret1' });
  });

  it('removes files it did not write from a credential directory, whatever they are named', async () => {
    const { root, writer, reader } = await openTree();
    const rel = '00112233445566ff/github-token';
    await writer.writeSysfsCredential(rel, { kind: 'bearer', token: 'one' });
    for (const name of ['constructor', 'toString', 'valueOf', 'stray'])
      writeFileSync(join(root, 'credentials', rel, name), 'x');
    await writer.writeSysfsCredential(rel, { kind: 'bearer', token: 'two' });
    expect(await reader.sysfsCredential(rel)).toEqual({ token: 'two' });
    expect(await reader.drift()).toMatchObject({ changed: [], added: [], removed: [] });
  });

  it('writes AWS keys in the shared-credentials format that botocore reads', async () => {
    const { root, writer } = await openTree();
    await writer.writeSysfsCredential('00112233445566ff/bedrock', {
      kind: 'aws',
      accessKeyId: 'ASIAEXAMPLE',
      secretAccessKey: 'wJalrXUtnFEMI/K7MDENG',
      sessionToken: 'FwoGZXIvYXdzEJr//////////wEaD',
      expiresAt: new Date(Date.now() + 3600_000),
    });
    const file = join(root, 'credentials/00112233445566ff/bedrock/credentials');
    const py = spawnSync(
      '/usr/bin/python3',
      [
        '-c',
        'import configparser,sys; c=configparser.ConfigParser(); c.read(sys.argv[1]); d=c["default"]; print(d["aws_access_key_id"], d["aws_secret_access_key"], d["aws_session_token"])',
        file,
      ],
      { encoding: 'utf8' },
    );
    expect(py.stdout.trim()).toBe('ASIAEXAMPLE wJalrXUtnFEMI/K7MDENG FwoGZXIvYXdzEJr//////////wEaD');
  });

  it('with an owner, the workload uid can read its file and another uid cannot', async () => {
    const { root, writer } = await openTree();
    // The tree lives in a private temp dir; open the path to it as a node's /sys/module would be.
    for (let dir = root; dir !== '/' && dir.startsWith('/tmp/'); dir = join(dir, '..')) chmodSync(dir, 0o755);
    await writer.writeSysfsCredential(
      '00112233445566ff/github-token',
      { kind: 'bearer', token: 'tok-for-65534' },
      { uid: 65534, gid: 65534 },
    );
    const file = join(root, 'credentials/00112233445566ff/github-token/token');
    const asOwner = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', file], {
      encoding: 'utf8',
    });
    expect(asOwner.stdout).toBe('tok-for-65534');
    const asOther = spawnSync('setpriv', ['--reuid=65533', '--regid=65533', '--clear-groups', 'cat', file], {
      encoding: 'utf8',
    });
    expect(asOther.status).not.toBe(0);
    expect(asOther.stderr).toMatch(/Permission denied/);
  });

  it('refuses a sysfs directory that could leave credentials/', async () => {
    const { writer } = await openTree();
    for (const dir of ['../../etc/x', '00112233445566ff/../x', '/abs/x', '00112233445566ff/a/b'])
      await expect(writer.writeSysfsCredential(dir, { kind: 'bearer', token: 't' })).rejects.toBeInstanceOf(
        ControlError,
      );
  });

  it('never writes through a symlink planted in the tree', async () => {
    const { root, writer } = await openTree();
    const outside = tempDir('outside');
    symlinkSync(outside, join(root, 'credentials/00112233445566ff'));
    await expect(
      writer.writeSysfsCredential('00112233445566ff/github-token', { kind: 'bearer', token: 'x' }),
    ).rejects.toMatchObject({ code: 'unsafe-path' });
    expect(spawnSync('ls', ['-A', outside], { encoding: 'utf8' }).stdout).toBe('');
  });
});

describe('control tree: rule tables', () => {
  it('numbers every write with the next generation, continued by a restarted writer', async () => {
    const { root, writer, reader } = await openTree();
    const one = await writer.writeRules(table('v1', [identityRule('app/api')]));
    const two = await writer.writeRules(table('v2', [identityRule('app/api')]));
    expect([one.generation, two.generation]).toEqual([1, 2]);
    expect(mode(join(root, 'rules'))).toBe('600');
    const reopened = await ControlWriter.open(root);
    const three = await reopened.writeRules(table('v3', []));
    expect(three.generation).toBe(3);
    expect((await reader.rules())?.version).toBe('v3');
  });

  it('refuses an invalid table naming the field, and leaves the table on disk untouched', async () => {
    const { root, writer } = await openTree();
    await writer.writeRules(table('good', [identityRule('app/api')]));
    const before = readFileSync(join(root, 'rules'), 'utf8');
    const bad = identityRule('app/api');
    (bad.inbound as { mode: string }).mode = 'STRICT';
    bad.egress[0]!.credentials = ['ffffffffffffffff'];
    const err = await writer.writeRules(table('bad', [bad])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControlError);
    expect((err as ControlError).message).toMatch(/identities\[0\]\.inbound\.mode/);
    // References are checked once the shape is right.
    const dangling = identityRule('app/api');
    dangling.egress[0]!.credentials = ['ffffffffffffffff'];
    await expect(writer.writeRules(table('bad', [dangling]))).rejects.toThrow(
      /identities\[0\]\.egress\[0\]\.credentials\[0\]: names credential ffffffffffffffff/,
    );
    const foreign = identityRule('app/api', { trustDomain: 'other.org' });
    await expect(writer.writeRules(table('bad', [foreign]))).rejects.toThrow(
      /outside the table's trust domain/,
    );
    const leaving = identityRule('app/api');
    leaving.credentials[0]!.sysfs = { dir: '../../../etc' };
    await expect(writer.writeRules(table('bad', [leaving]))).rejects.toThrow(/sysfs\.dir/);
    expect(readFileSync(join(root, 'rules'), 'utf8')).toBe(before);
    expect(JSON.parse(before).generation).toBe(1);
  });

  it('replaces files atomically: a reader in another process never sees a partial table', async () => {
    const { root, writer } = await openTree();
    await writer.writeRules(table('v0', []));
    // A separate process reads `rules` as fast as it can and counts reads that do not parse.
    const reader = spawn(
      process.execPath,
      [
        '-e',
        `const fs=require('fs');let ok=0,bad=0;const end=Date.now()+60000;
         process.stdin.on('data',()=>{console.log(JSON.stringify({ok,bad}));process.exit(0)});
         (function loop(){for(let i=0;i<50;i++){try{const t=JSON.parse(fs.readFileSync(process.argv[1],'utf8'));if(typeof t.generation==='number')ok++;else bad++;}catch{bad++}}
         if(Date.now()<end)setImmediate(loop)})();`,
        join(root, 'rules'),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    let out = '';
    reader.stdout.on('data', (d) => {
      out += d;
    });
    // Tables of very different sizes, so a torn read would be a truncated document.
    for (let i = 1; i <= 60; i++) {
      const identities = Array.from({ length: (i % 7) * 40 }, (_, k) => identityRule(`app/w${k}`));
      await writer.writeRules(table(`v${i}`, identities));
    }
    reader.stdin.write('stop\n');
    await new Promise((resolve) => reader.on('exit', resolve));
    const counts = JSON.parse(out) as { ok: number; bad: number };
    expect(counts.ok).toBeGreaterThan(0);
    expect(counts.bad).toBe(0);
    // And no temp file is left behind.
    expect(spawnSync('ls', ['-A', root], { encoding: 'utf8' }).stdout).not.toMatch(/\.tmp/);
  });
});

describe('control tree: drift', () => {
  it('reports nothing after the writer alone wrote, then each hand edit: changed, added, removed, re-moded', async () => {
    const { root, writer, reader } = await openTree();
    await writer.writeConfig({ trustDomain: TD, daemonId: 'node-a' });
    await writer.ensureInterceptCa();
    await writer.writeTrustBundle(pki.authority.bundlePem());
    const svid = await writer.writeSvid(API, await pki.svid(API));
    await writer.writeSysfsCredential('00112233445566ff/github-token', { kind: 'bearer', token: 't1' });
    await writer.writeRules(table('v1', [identityRule('app/api', { svid })]));
    // Files of the kernel side and the data plane are not the writer's: never drift.
    writeFileSync(join(root, ControlPaths.health), 'OK\n');
    writeFileSync(join(root, ControlPaths.connections), '{}\n');
    expect(await reader.drift()).toEqual({
      changed: [],
      added: [],
      removed: [],
      modes: [],
      truncated: false,
    });

    writeFileSync(join(root, 'credentials/00112233445566ff/github-token/token'), 'edited');
    chmodSync(join(root, 'identities', sidOf(API), 'svid.key'), 0o644);
    writeFileSync(join(root, 'certs/extra.crt'), 'x');
    rmSync(join(root, 'config'));
    const drift = await reader.drift();
    expect(drift.changed).toEqual(['credentials/00112233445566ff/github-token/token']);
    expect(drift.added).toEqual(['certs/extra.crt']);
    expect(drift.removed).toEqual(['config']);
    expect(drift.modes).toEqual([
      { path: `identities/${sidOf(API)}/svid.key`, expected: '0600', actual: '0644' },
    ]);
    // The values themselves are never in a drift report.
    expect(JSON.stringify(drift)).not.toMatch(/edited|t1/);
  });

  it('reports a foreign file named like a property every object has as added', async () => {
    const { root, writer, reader } = await openTree();
    await writer.writeConfig({ trustDomain: TD, daemonId: 'node-a' });
    for (const name of ['constructor', 'toString', '__proto__']) writeFileSync(join(root, name), 'x');
    expect(await reader.drift()).toEqual({
      changed: [],
      added: ['__proto__', 'constructor', 'toString'],
      removed: [],
      modes: [],
      truncated: false,
    });
  });

  it('prune removes identities and credentials that left the program, and drift stays clean', async () => {
    const { root, writer, reader } = await openTree();
    const other = `spiffe://${TD}/app/gone`;
    await writer.writeSvid(API, await pki.svid(API));
    await writer.writeSvid(other, await pki.svid(other));
    await writer.writeSysfsCredential('00112233445566ff/keep', { kind: 'bearer', token: 'a' });
    await writer.writeSysfsCredential('aabbccddeeff0011/gone', { kind: 'bearer', token: 'b' });
    const removed = await writer.prune({ spiffeIds: [API], sysfsDirs: ['00112233445566ff/keep'] });
    expect(removed).toEqual(['credentials/aabbccddeeff0011/gone', `identities/${sidOf(other)}`]);
    expect(() => statSync(join(root, 'credentials/aabbccddeeff0011'))).toThrow(/ENOENT/);
    expect(await reader.svid(API)).not.toBeNull();
    expect(await reader.drift()).toMatchObject({ changed: [], added: [], removed: [] });
  });
});
