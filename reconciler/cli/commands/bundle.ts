import { resolve } from 'node:path';
import { openAuthority } from '../../identity/authority.ts';
import { type Command, EXIT_OK, parseFlags, requireFlag, subcommand, UsageError } from '../command.ts';

const FORMATS = ['pem', 'spiffe', 'oidc-jwks'] as const;

const help = `Usage:
  riptides-cli bundle show --dir DIR [--format pem|spiffe|oidc-jwks]

Prints the trust bundle of the CA in DIR: every root and signing CA currently trusted (including the next
one, once prepared, and the previous one until it expires), or the keys that verify its JWT-SVIDs.

  pem        the CA certificates (default), for openssl, curl, node:tls \`ca\`
  spiffe     the SPIFFE bundle format, for SPIFFE peers (go-spiffe, SPIRE federation): one "x509-svid" key
             per CA certificate (x5c) and the "jwt-svid" signing keys (with kid)
  oidc-jwks  a standard JWKS (RFC 7517) of the JWT-SVID signing keys, "use": "sig", "alg": "ES256", with kid:
             what the issuer serves at <issuer>/keys (\`riptides-cli oidc serve\`), and what AWS STS, Vault
             and OIDC libraries such as jose accept
`;

export const command: Command = {
  name: 'bundle',
  summary: 'print the trust bundle (PEM, SPIFFE bundle) or the JWT keys (JWKS)',
  help,
  async run(argv, io) {
    const [, rest] = subcommand(argv, ['show'] as const);
    const { values } = parseFlags(rest, { dir: { type: 'string' }, format: { type: 'string' } });
    const dir = resolve(io.cwd, requireFlag(values.dir, 'dir'));
    const format = values.format ?? 'pem';
    if (!(FORMATS as readonly string[]).includes(format))
      throw new UsageError(
        `--format must be one of ${FORMATS.join(', ')} (got "${format}")${
          format === 'jwks'
            ? ': "spiffe" is the SPIFFE bundle (JWKS-shaped), "oidc-jwks" the JWKS that OIDC relying parties accept'
            : ''
        }`,
      );
    const authority = await openAuthority(dir);
    const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;
    if (format === 'pem') io.stdout(authority.bundlePem());
    else if (format === 'spiffe') io.stdout(json(await authority.bundleJwks()));
    else io.stdout(json(await authority.jwt.jwks()));
    return EXIT_OK;
  },
};
