import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  type AuthorityStatus,
  DEFAULT_ISSUER,
  initAuthority,
  openAuthority,
} from '../../identity/authority.ts';
import { parseDurationSeconds } from '../../identity/duration.ts';
import { KEY_TYPES } from '../../identity/x509.ts';
import { type Command, EXIT_OK, oneOf, parseFlags, requireFlag, subcommand, UsageError } from '../command.ts';

const help = `Usage:
  riptides-cli ca init --trust-domain TD --dir DIR [--key-type ec-p256|rsa-2048]
                       [--upstream-cert FILE --upstream-key FILE] [--issuer URL] [--ca-ttl 24h] [--json]
  riptides-cli ca rotate --dir DIR [--json]
  riptides-cli ca show --dir DIR [--json]

Manages the certificate authority of one SPIFFE trust domain, kept in DIR (private keys 0600).

  init     creates the CA: a 10-year self-signed root (or the imported upstream CA), a signing CA
           (default lifetime 24h) and an ES256 JWT signing key.
  rotate   runs one rotation step: prepares the next signing CA and JWT key at half their life
           (at most 30 days before expiry), switches to them at five sixths (at most 7 days before),
           and drops expired ones from the bundle. Safe to run often (e.g. from cron).
  show     prints the roots, signing CAs and JWT keys with their state and validity.

Flags:
  --trust-domain TD    trust domain name, e.g. example.org
  --dir DIR            CA directory (created by init)
  --key-type T         ec-p256 (default) or rsa-2048, for the root and signing CAs
  --upstream-cert F    PEM certificate of an existing CA to sign under (with its chain after it)
  --upstream-key F     PEM private key of that CA
  --issuer URL         OIDC issuer for JWT-SVIDs (default ${DEFAULT_ISSUER})
  --ca-ttl D           signing CA and JWT key lifetime (default 24h; e.g. 12h, 7d)
  --json               machine-readable output
`;

function describe(status: AuthorityStatus, dir: string): string {
  const lines = [
    `trust domain ${status.trustDomain} (${status.keyType}) in ${dir}`,
    `OIDC issuer  ${status.issuer}`,
  ];
  const row = (kind: string, id: string, s: { state: string; notBefore: Date; notAfter: Date }) =>
    `  ${kind.padEnd(11)} ${id.padEnd(44)} ${s.state.padEnd(9)} ${s.notBefore.toISOString()} → ${s.notAfter.toISOString()}`;
  for (const r of status.roots) lines.push(row(r.upstream ? 'upstream' : 'root', r.id, r));
  for (const s of status.signingCas) lines.push(row('signing CA', s.id, s));
  for (const k of status.jwtKeys) lines.push(row('JWT key', k.kid, k));
  return `${lines.join('\n')}\n`;
}

async function readInput(path: string, flag: string, cwd: string): Promise<string> {
  try {
    return await readFile(resolve(cwd, path), 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read --${flag} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

export const command: Command = {
  name: 'ca',
  summary: 'create and rotate the trust domain certificate authority',
  help,
  async run(argv, io) {
    const [sub, rest] = subcommand(argv, ['init', 'rotate', 'show'] as const);
    const out = (status: AuthorityStatus, dir: string, json: boolean) =>
      io.stdout(json ? `${JSON.stringify(status, null, 2)}\n` : describe(status, dir));
    if (sub === 'init') {
      const { values } = parseFlags(rest, {
        'trust-domain': { type: 'string' },
        dir: { type: 'string' },
        'key-type': { type: 'string' },
        'upstream-cert': { type: 'string' },
        'upstream-key': { type: 'string' },
        issuer: { type: 'string' },
        'ca-ttl': { type: 'string' },
        json: { type: 'boolean' },
      });
      const trustDomain = requireFlag(values['trust-domain'], 'trust-domain');
      const dir = resolve(io.cwd, requireFlag(values.dir, 'dir'));
      if ((values['upstream-cert'] === undefined) !== (values['upstream-key'] === undefined))
        throw new UsageError('--upstream-cert and --upstream-key go together: pass both or neither');
      let caTtlSeconds: number | undefined;
      if (values['ca-ttl'] !== undefined) {
        caTtlSeconds = parseDurationSeconds(values['ca-ttl']) ?? undefined;
        if (caTtlSeconds === undefined)
          throw new UsageError(`--ca-ttl must be a duration such as 24h or 7d (got "${values['ca-ttl']}")`);
      }
      const authority = await initAuthority({
        trustDomain,
        dir,
        keyType: oneOf(values['key-type'], KEY_TYPES, 'key-type', 'ec-p256'),
        upstreamCertPem:
          values['upstream-cert'] && (await readInput(values['upstream-cert'], 'upstream-cert', io.cwd)),
        upstreamKeyPem:
          values['upstream-key'] && (await readInput(values['upstream-key'], 'upstream-key', io.cwd)),
        issuer: values.issuer,
        caTtlSeconds,
      });
      out(authority.status(), dir, values.json === true);
      if (!values.json)
        io.stdout(
          `\nNext: riptides-cli bundle show --dir ${dir} > bundle.pem, then\n` +
            `      riptides-cli svid mint --dir ${dir} --spiffe-id spiffe://${authority.trustDomain}/<workload> --out <dir>\n` +
            `Run \`riptides-cli ca rotate --dir ${dir}\` regularly (e.g. every 10 minutes) to rotate ahead of expiry.\n`,
        );
      return EXIT_OK;
    }
    const { values } = parseFlags(rest, { dir: { type: 'string' }, json: { type: 'boolean' } });
    const dir = resolve(io.cwd, requireFlag(values.dir, 'dir'));
    const authority = await openAuthority(dir);
    if (sub === 'rotate') await authority.rotate();
    out(authority.status(), dir, values.json === true);
    return EXIT_OK;
  },
};
