import { resolve } from 'node:path';
import { openAuthority } from '../../identity/authority.ts';
import { parseDurationSeconds } from '../../identity/duration.ts';
import { DEFAULT_JWT_TTL_SECONDS } from '../../identity/jwt-svid.ts';
import { type Command, EXIT_OK, parseFlags, requireFlag, subcommand, UsageError } from '../command.ts';

const help = `Usage:
  riptides-cli jwt mint --dir DIR --spiffe-id ID --audience AUD [--audience AUD]... [--ttl 5m]

Mints a JWT-SVID (ES256, with kid) for ID from the CA in DIR and prints it. Relying parties verify it with
the JWKS of \`riptides-cli bundle show --format jwks\` or the issuer's OIDC discovery document.

Flags:
  --dir DIR          CA directory (see \`riptides-cli ca init\`)
  --spiffe-id ID     the subject, spiffe://<trust domain>/<path>
  --audience AUD     required; repeat for several
  --ttl D            lifetime (default 5m)
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
    const spiffeId = requireFlag(values['spiffe-id'], 'spiffe-id');
    const audience = values.audience ?? [];
    if (audience.length === 0) throw new UsageError('missing required flag --audience');
    const ttlSeconds = values.ttl === undefined ? DEFAULT_JWT_TTL_SECONDS : parseDurationSeconds(values.ttl);
    if (ttlSeconds === null)
      throw new UsageError(`--ttl must be a duration such as 5m or 300s (got "${values.ttl}")`);
    const authority = await openAuthority(dir);
    io.stdout(`${await authority.jwt.mint({ spiffeId, audience, ttlSeconds })}\n`);
    return EXIT_OK;
  },
};
