import { resolve } from 'node:path';
import { decodeJwt } from 'jose';
import { openAuthority } from '../../identity/authority.ts';
import { DEFAULT_JWT_TTL_SECONDS } from '../../identity/jwt-svid.ts';
import { type Command, EXIT_OK, parseFlags, requireFlag, subcommand, UsageError } from '../command.ts';
import { cappedNote, durationFlag, spiffeIdFlag } from '../identity-flags.ts';

const help = `Usage:
  riptides-cli jwt mint --dir DIR --spiffe-id ID --audience AUD [--audience AUD]... [--ttl 5m]

Mints a JWT-SVID (ES256, with kid) for ID from the CA in DIR and prints it.

Relying parties (AWS STS, Vault's JWT auth, any OIDC library such as jose) verify it with the issuer's keys:
  riptides-cli bundle show --dir DIR --format oidc-jwks     the JWKS, to configure by hand
  riptides-cli oidc serve --dir DIR --listen :8443 ...       the OIDC discovery document and JWKS, served
                                                             under the issuer URL, for those that fetch them
(\`bundle show --format spiffe\` is the SPIFFE bundle, for SPIFFE peers; OIDC libraries do not accept it.)

Flags:
  --dir DIR          CA directory (see \`riptides-cli ca init\`)
  --spiffe-id ID     the subject, spiffe://<trust domain>/<path>
  --audience AUD     required; repeat for several
  --ttl D            lifetime (default 5m), e.g. 90s, 15m. A token never outlives the key that signs it: a
                     longer --ttl is capped, and the command says so.
`;

export const command: Command = {
  name: 'jwt',
  summary: 'mint a JWT-SVID from the CA',
  help,
  async run(argv, io) {
    const [, rest] = subcommand(argv, ['mint'] as const);
    const { values } = parseFlags(rest, {
      dir: { type: 'string' },
      'spiffe-id': { type: 'string' },
      audience: { type: 'string', multiple: true },
      ttl: { type: 'string' },
    });
    const dir = resolve(io.cwd, requireFlag(values.dir, 'dir'));
    const requestedId = requireFlag(values['spiffe-id'], 'spiffe-id');
    const audience = values.audience ?? [];
    if (audience.length === 0) throw new UsageError('missing required flag --audience');
    const ttlSeconds = durationFlag(values.ttl, 'ttl', DEFAULT_JWT_TTL_SECONDS);
    const authority = await openAuthority(dir);
    const spiffeId = spiffeIdFlag(requestedId, authority.trustDomain);
    const token = await authority.jwt.mint({ spiffeId, audience, ttlSeconds });
    const { iat, exp } = decodeJwt(token);
    const capped = cappedNote(
      'warning',
      values.ttl,
      ttlSeconds,
      (iat ?? 0) * 1000,
      new Date((exp ?? 0) * 1000),
      'a JWT-SVID never outlives the key that signs it (`riptides-cli ca show` shows its validity)',
    );
    if (capped) io.stderr(`${capped}\n`);
    io.stdout(`${token}\n`);
    return EXIT_OK;
  },
};
