import { resolve } from 'node:path';
import { openAuthority } from '../../identity/authority.ts';
import { type Command, EXIT_OK, oneOf, parseFlags, requireFlag, subcommand } from '../command.ts';

const help = `Usage:
  riptides-cli bundle show --dir DIR [--format pem|jwks]

Prints the trust bundle of the CA in DIR: every root and signing CA currently trusted (including the next
one, once prepared, and the previous one until it expires).

  pem    the CA certificates (default), for openssl, curl, node:tls \`ca\`
  jwks   the SPIFFE bundle format: one "x509-svid" key per CA certificate (x5c, no kid) and the
         "jwt-svid" signing keys (with kid)
`;

export const command: Command = {
  name: 'bundle',
  summary: 'print the trust bundle (PEM or SPIFFE JWKS)',
  help,
  async run(argv, io) {
    const [, rest] = subcommand(argv, ['show'] as const);
    const { values } = parseFlags(rest, { dir: { type: 'string' }, format: { type: 'string' } });
    const dir = resolve(io.cwd, requireFlag(values.dir, 'dir'));
    const format = oneOf(values.format, ['pem', 'jwks'] as const, 'format', 'pem');
    const authority = await openAuthority(dir);
    io.stdout(
      format === 'pem' ? authority.bundlePem() : `${JSON.stringify(await authority.bundleJwks(), null, 2)}\n`,
    );
    return EXIT_OK;
  },
};
