import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  type AuthorityStatus,
  DEFAULT_ISSUER,
  initAuthority,
  openAuthority,
} from '../../identity/authority.ts';
import { KEY_TYPES } from '../../identity/x509.ts';
import { type Command, EXIT_OK, oneOf, parseFlags, requireFlag, subcommand, UsageError } from '../command.ts';
import { durationFlag } from '../identity-flags.ts';

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
           and drops expired ones from the bundle. Safe to run often (e.g. from cron). Prints what it
           did ("nothing due" when nothing was) and when the next step is due.
  show     prints the roots, signing CAs and JWT keys with their state and validity.

Flags:
  --trust-domain TD    trust domain name, e.g. example.org
  --dir DIR            CA directory (created by init)
  --key-type T         ec-p256 (default) or rsa-2048, for the root and signing CAs
  --upstream-cert F    PEM certificate of an existing CA to sign under (with its chain after it)
  --upstream-key F     PEM private key of that CA
  --issuer URL         OIDC issuer for JWT-SVIDs (default ${DEFAULT_ISSUER})
  --ca-ttl D           signing CA and JWT key lifetime (default 24h; e.g. 12h, 7d, 86400s)
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
  lines.push(nextLine(status));
  return `${lines.join('\n')}\n`;
}

function nextLine(status: AuthorityStatus): string {
  return status.nextRotation
    ? `next rotation step due ${status.nextRotation.at.toISOString()}: ${status.nextRotation.what}`
    : 'no rotation step is planned';
}

type Slot = { id: string; state: string; notAfter: Date };

/** What one `ca rotate` changed, from the status before and after: one line per slot created, switched or dropped. */
function rotationSteps(before: AuthorityStatus, after: AuthorityStatus): string[] {
  const steps: string[] = [];
  const compare = (kind: string, a: Slot[], b: Slot[]) => {
    const was = new Map(a.map((s) => [s.id, s]));
    const now = new Map(b.map((s) => [s.id, s]));
    for (const s of b) {
      const old = was.get(s.id);
      if (!old)
        steps.push(
          s.state === 'active'
            ? `created ${kind} ${s.id}, signing now (until ${s.notAfter.toISOString()})`
            : `prepared the next ${kind} ${s.id}, published in the bundle before it signs`,
        );
      else if (old.state !== s.state && s.state === 'active')
        steps.push(`activated ${kind} ${s.id}: it signs from now on`);
      else if (old.state !== s.state && s.state === 'old')
        steps.push(
          `retired ${kind} ${s.id}: it no longer signs, and stays in the bundle until ${s.notAfter.toISOString()}`,
        );
    }
    for (const s of a) if (!now.has(s.id)) steps.push(`dropped expired ${kind} ${s.id} from the bundle`);
  };
  compare('root', before.roots, after.roots);
  compare('signing CA', before.signingCas, after.signingCas);
  compare(
    'JWT key',
    before.jwtKeys.map((k) => ({ ...k, id: k.kid })),
    after.jwtKeys.map((k) => ({ ...k, id: k.kid })),
  );
  return steps;
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
      const caTtlSeconds =
        values['ca-ttl'] === undefined ? undefined : durationFlag(values['ca-ttl'], 'ca-ttl', 0);
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
    if (sub === 'show') {
      out(authority.status(), dir, values.json === true);
      return EXIT_OK;
    }
    const before = authority.status();
    await authority.rotate();
    const after = authority.status();
    const steps = rotationSteps(before, after);
    if (values.json) {
      io.stdout(`${JSON.stringify({ steps, ...after }, null, 2)}\n`);
      return EXIT_OK;
    }
    io.stdout(
      `${steps.length ? steps.map((s) => `rotated: ${s}`).join('\n') : 'rotated: nothing due'}\n${nextLine(after)}\n`,
    );
    return EXIT_OK;
  },
};
