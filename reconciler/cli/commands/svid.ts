import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DEFAULT_X509_SVID_TTL_SECONDS, generateKeyAndCsr, openAuthority } from '../../identity/authority.ts';
import { parseDurationSeconds } from '../../identity/duration.ts';
import { writeFileAtomic } from '../../identity/files.ts';
import { KEY_TYPES } from '../../identity/x509.ts';
import { type Command, EXIT_OK, oneOf, parseFlags, requireFlag, subcommand, UsageError } from '../command.ts';

const help = `Usage:
  riptides-cli svid mint --dir DIR --spiffe-id ID [--ttl 1h] [--dns NAME]... [--key-type T] --out OUTDIR

Mints an X509-SVID the way an agent gets one: generates a key, makes a CSR for ID, and has the CA in DIR
sign it. Writes to OUTDIR:
  svid.pem     the SVID followed by its chain (signing CA and any upstream intermediates)
  key.pem      its private key (mode 0600)
  bundle.pem   the trust bundle of the trust domain, to verify peers with

Flags:
  --dir DIR          CA directory (see \`riptides-cli ca init\`)
  --spiffe-id ID     spiffe://<trust domain>/<path>
  --ttl D            lifetime (default 1h; never beyond the signing CA's own expiry)
  --dns NAME         a DNS SAN; repeat for several
  --key-type T       ec-p256 or rsa-2048 (default: the CA's key type)
  --out OUTDIR       where to write the files (created if missing)

Check the result with: openssl verify -CAfile OUTDIR/bundle.pem -untrusted OUTDIR/svid.pem OUTDIR/svid.pem
`;

export const command: Command = {
  name: 'svid',
  summary: 'mint an X509-SVID (key, certificate chain and bundle) from the CA',
  help,
  async run(argv, io) {
    const [, rest] = subcommand(argv, ['mint'] as const);
    const { values } = parseFlags(rest, {
      dir: { type: 'string' },
      'spiffe-id': { type: 'string' },
      ttl: { type: 'string' },
      dns: { type: 'string', multiple: true },
      'key-type': { type: 'string' },
      out: { type: 'string' },
    });
    const dir = resolve(io.cwd, requireFlag(values.dir, 'dir'));
    const spiffeId = requireFlag(values['spiffe-id'], 'spiffe-id');
    const outDir = resolve(io.cwd, requireFlag(values.out, 'out'));
    const ttlSeconds =
      values.ttl === undefined ? DEFAULT_X509_SVID_TTL_SECONDS : parseDurationSeconds(values.ttl);
    if (ttlSeconds === null)
      throw new UsageError(`--ttl must be a duration such as 1h or 30m (got "${values.ttl}")`);
    const authority = await openAuthority(dir);
    const keyType = oneOf(values['key-type'], KEY_TYPES, 'key-type', authority.status().keyType);
    const { keyPem, csrPem } = await generateKeyAndCsr(spiffeId, keyType);
    const svid = await authority.signX509Svid({ csrPem, ttlSeconds, dnsNames: values.dns ?? [] });
    await mkdir(outDir, { recursive: true });
    await writeFileAtomic(join(outDir, 'key.pem'), keyPem, 0o600);
    await writeFileAtomic(join(outDir, 'svid.pem'), svid.chainPem, 0o644);
    await writeFileAtomic(join(outDir, 'bundle.pem'), authority.bundlePem(), 0o644);
    io.stdout(
      `minted ${svid.spiffeId}\n  serial    ${svid.serial}\n  notAfter  ${svid.notAfter.toISOString()}\n` +
        `  wrote     ${join(outDir, 'svid.pem')}, ${join(outDir, 'key.pem')} (0600), ${join(outDir, 'bundle.pem')}\n`,
    );
    return EXIT_OK;
  },
};
