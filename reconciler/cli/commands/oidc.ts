import { readFile, stat } from 'node:fs/promises';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { type Authority, openAuthority } from '../../identity/authority.ts';
import { STATE_FILE } from '../../identity/ca-store.ts';
import { createOidcDiscoveryHandler } from '../../identity/oidc-discovery.ts';
import { normaliseIssuer } from '../../identity/settings.ts';
import { type Command, EXIT_OK, parseFlags, requireFlag, subcommand, UsageError } from '../command.ts';

const help = `Usage:
  riptides-cli oidc serve --dir DIR --listen ADDR [--issuer URL] [--cert-file F --key-file F]

Serves the OIDC discovery document and the JWKS of the CA in DIR, as SPIRE's oidc-discovery-provider does,
for the relying parties that fetch them: AWS STS (an IAM OIDC identity provider), Vault's JWT auth
(oidc_discovery_url), any OIDC library. Under the issuer URL, whose path is honoured:

  <issuer>/.well-known/openid-configuration   the discovery document (issuer, jwks_uri, ES256)
  <issuer>/keys                               the JWKS (the same as \`bundle show --format oidc-jwks\`)

With --issuer https://oidc.example.com/riptides, a request for /riptides/keys gets the keys and anything
else gets 404. Keys follow rotation: a key prepared by \`ca rotate\` (from another process, e.g. cron) is
published within a second, hours before it signs. Runs until interrupted (Ctrl-C, SIGTERM).

Flags:
  --dir DIR          CA directory (see \`riptides-cli ca init\`)
  --listen ADDR      HOST:PORT, [IPv6]:PORT or :PORT (all interfaces); port 0 picks a free one
  --issuer URL       the issuer to serve; it must be the one the CA signs tokens with (\`ca show\`), since
                     relying parties compare it with each token's "iss" (default: that one)
  --cert-file F      PEM certificate (and chain) to serve HTTPS with; AWS STS fetches only over https, so
  --key-file F       either pass these, or put the server behind a TLS-terminating proxy

Flags for a relying party: the issuer URL, and audience as minted with \`riptides-cli jwt mint --audience\`.
`;

/** `HOST:PORT`, `[v6]:PORT` or `:PORT` → what server.listen takes. */
function parseListen(addr: string): { host?: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65_535)
    throw new UsageError(`--listen must be HOST:PORT, [IPv6]:PORT or :PORT (got "${addr}")`);
  const host = m[1] ?? m[2];
  return host ? { host, port } : { port };
}

/** The authority in `dir`, opened again whenever its state file changes (checked at most once a second). */
function followAuthority(dir: string, first: Authority): () => Promise<Authority> {
  let current = first;
  let seenMtime = 0;
  let checkedAt = 0;
  let reopening: Promise<Authority> | undefined;
  return async () => {
    const now = Date.now();
    if (now - checkedAt < 1000) return current;
    checkedAt = now;
    const mtime = (await stat(join(dir, STATE_FILE))).mtimeMs;
    if (seenMtime === 0) seenMtime = mtime;
    if (mtime === seenMtime) return current;
    reopening ??= openAuthority(dir).finally(() => {
      reopening = undefined;
    });
    current = await reopening;
    seenMtime = mtime;
    return current;
  };
}

export const command: Command = {
  name: 'oidc',
  summary: 'serve the OIDC discovery document and JWKS of the CA (for AWS STS, Vault)',
  help,
  async run(argv, io) {
    const [, rest] = subcommand(argv, ['serve'] as const);
    const { values } = parseFlags(rest, {
      dir: { type: 'string' },
      listen: { type: 'string' },
      issuer: { type: 'string' },
      'cert-file': { type: 'string' },
      'key-file': { type: 'string' },
    });
    const dir = resolve(io.cwd, requireFlag(values.dir, 'dir'));
    const listen = parseListen(requireFlag(values.listen, 'listen'));
    if ((values['cert-file'] === undefined) !== (values['key-file'] === undefined))
      throw new UsageError('--cert-file and --key-file go together: pass both or neither');
    const authority = await openAuthority(dir);
    const issuer = authority.jwt.issuer;
    if (values.issuer !== undefined) {
      let wanted: string;
      try {
        wanted = normaliseIssuer(values.issuer);
      } catch (err) {
        throw new UsageError(`--issuer: ${(err as Error).message}`);
      }
      if (wanted !== issuer)
        throw new UsageError(
          `--issuer ${wanted} is not the issuer this CA signs JWT-SVIDs with (${issuer}): relying parties would refuse every token; pass --issuer ${issuer}, or create the CA with \`ca init --issuer ${wanted}\``,
        );
    }
    const current = followAuthority(dir, authority);
    const handle = async (req: IncomingMessage, res: ServerResponse) => {
      try {
        const served = await createOidcDiscoveryHandler((await current()).jwt)(req, res);
        if (!served) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end(
            `not found: this server answers ${new URL(issuer).pathname.replace(/\/$/, '')}/.well-known/openid-configuration and .../keys\n`,
          );
        }
      } catch {
        // A CA directory caught mid-rotation, or unreadable: say so without details; the next request retries.
        if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1' });
        res.end('keys unavailable, retry\n');
      }
    };
    const tls =
      values['cert-file'] && values['key-file']
        ? {
            cert: await readFile(resolve(io.cwd, values['cert-file'])),
            key: await readFile(resolve(io.cwd, values['key-file'])),
          }
        : undefined;
    const server: Server = tls ? createHttpsServer(tls, handle) : createHttpServer(handle);
    // Relying parties ask for two small documents: a slow or idle client gets little of our time.
    server.headersTimeout = 10_000;
    server.requestTimeout = 10_000;
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(listen.port, listen.host, () => {
        server.off('error', fail);
        ok();
      });
    });
    // Whatever happens from here on, the server does not outlive the command.
    try {
      const address = server.address() as AddressInfo;
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      const base = new URL(issuer).pathname.replace(/\/$/, '');
      io.stdout(
        `serving OIDC discovery for issuer ${issuer} on ${tls ? 'https' : 'http'}://${host}:${address.port}\n` +
          `  ${base}/.well-known/openid-configuration\n  ${base}/keys\n`,
      );
      await (io.untilStopped?.() ?? new Promise<void>(() => undefined));
    } finally {
      await new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      });
    }
    return EXIT_OK;
  },
};
