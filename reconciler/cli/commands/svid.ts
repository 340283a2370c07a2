import { join, resolve } from 'node:path';
import { writeFileAtomic } from '../../common/atomic-file.ts';
import { DEFAULT_X509_SVID_TTL_SECONDS, generateKeyAndCsr, openAuthority } from '../../identity/authority.ts';
import { KEY_TYPES } from '../../identity/x509.ts';
import { type Command, EXIT_OK, oneOf, parseFlags, requireFlag, subcommand } from '../command.ts';
import { cappedNote, durationFlag, spiffeIdFlag } from '../identity-flags.ts';

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
  --ttl D            lifetime (default 1h), e.g. 30m, 1h30m, 3600s. An SVID never outlives the signing CA
                     that signs it: a longer --ttl is capped, and the command says so.
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
    const requestedId = requireFlag(values['spiffe-id'], 'spiffe-id');
    const outDir = resolve(io.cwd, requireFlag(values.out, 'out'));
    const ttlSeconds = durationFlag(values.ttl, 'ttl', DEFAULT_X509_SVID_TTL_SECONDS);
    const authority = await openAuthority(dir);
    const spiffeId = spiffeIdFlag(requestedId, authority.trustDomain);
    const keyType = oneOf(values['key-type'], KEY_TYPES, 'key-type', authority.status().keyType);
    const { keyPem, csrPem } = await generateKeyAndCsr(spiffeId, keyType);
    const issuedAt = Date.now();
    const svid = await authority.signX509Svid({ csrPem, ttlSeconds, dnsNames: values.dns ?? [] });
    await writeFileAtomic(join(outDir, 'key.pem'), keyPem, { mode: 0o600 });
    await writeFileAtomic(join(outDir, 'svid.pem'), svid.chainPem, { mode: 0o644 });
    await writeFileAtomic(join(outDir, 'bundle.pem'), authority.bundlePem(), { mode: 0o644 });
    const capped = cappedNote(
      'warning',
      values.ttl,
      ttlSeconds,
      issuedAt,
      svid.notAfter,
      'an X509-SVID never outlives the signing CA that signs it (`riptides-cli ca show` shows its validity; `ca init --ca-ttl` sets it)',
    );
    if (capped) io.stderr(`${capped}\n`);
    io.stdout(
      `minted ${svid.spiffeId}\n  serial    ${svid.serial}\n  notAfter  ${svid.notAfter.toISOString()}${capped ? ' (capped: see the warning)' : ''}\n` +
        `  wrote     ${join(outDir, 'svid.pem')}, ${join(outDir, 'key.pem')} (0600), ${join(outDir, 'bundle.pem')}\n`,
    );
    return EXIT_OK;
  },
};
