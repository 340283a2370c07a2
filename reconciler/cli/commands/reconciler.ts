import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { desiredStateOf } from '../../agents/desired.ts';
import { AgentServer } from '../../agents/server.ts';
import { bundlePin } from '../../agents/serving-identity.ts';
import { writeFileAtomic } from '../../common/atomic-file.ts';
import { resolveFingerprintKey } from '../../credentials/fingerprint.ts';
import { CredentialManager } from '../../credentials/manager.ts';
import { type Authority, initAuthority, openAuthority } from '../../identity/authority.ts';
import { formatText } from '../../policy/report/diagnostics-report.ts';
import {
  type Command,
  type CommandIO,
  EXIT_OK,
  EXIT_USAGE,
  parseFlags,
  requireFlag,
  UsageError,
} from '../command.ts';
import {
  CREDENTIAL_PROVIDER_FLAGS,
  CREDENTIAL_PROVIDER_HELP,
  credentialProviderOptions,
} from '../credential-flags.ts';
import { durationFlag } from '../identity-flags.ts';
import { commandLogger, type Logger } from '../logger.ts';
import { openPolicyDir, POLICY_DIR_FLAGS } from '../policy-input.ts';
import { parseHostPort, stateDirOf } from '../state-dir.ts';

const help = `Usage: riptides-cli reconciler --repo DIR [--path SUBDIR] --listen HOST:PORT [--state-dir DIR]
                                [credential provider flags] [--agent-svid-ttl 1h]

Serves node agents: compiles the policy repository at start and again on SIGHUP, pushes each agent the
program of its scopes (its daemon group and its own daemon ID) over mutual TLS, signs the CSRs of the
identities in its program, and sends it the credentials its program binds. A repository that does not
validate is reported (file, line) and changes nothing: agents keep the last good program. SIGTERM or
SIGINT stops it; agents keep enforcing what they hold until it is back.

The state directory holds the trust domain's CA (created on first start, trust domain from the policy),
join tokens (\`riptides-cli token create\`), the registered daemons, and reconciler.json (address, pid,
trust domain, the bundle pin). Logs are JSON lines on standard error; they never carry a credential value.

Flags:
  --repo DIR, --path SUBDIR   the policy repository (a directory) and the policy path inside it
                              (--trust-domain, --max-file-size, --allow-plaintext-secrets as for validate)
  --listen HOST:PORT          where agents connect (port 0: any free port, printed in the log)
  --state-dir DIR             default $XDG_STATE_HOME/riptides/reconciler
  --agent-svid-ttl DURATION   lifetime of agent SVIDs (default 1h; agents renew at half of it)
${CREDENTIAL_PROVIDER_HELP}

Exit status: 0 stopped by a signal, 2 could not start.
`;

async function openOrInitCa(dir: string, trustDomain: string, log: Logger): Promise<Authority> {
  if (existsSync(join(dir, 'authority.json'))) {
    const authority = await openAuthority(dir);
    if (authority.trustDomain !== trustDomain)
      throw new UsageError(
        `the CA in ${dir} is for trust domain ${authority.trustDomain}, the policy for ${trustDomain}: use another --state-dir`,
      );
    return authority;
  }
  const authority = await initAuthority({ trustDomain, dir });
  log.info('created the trust domain CA', { trustDomain, dir });
  return authority;
}

/** Renders the policy; null (diagnostics printed) when it does not compile. */
async function render(values: Parameters<typeof openPolicyDir>[0], io: CommandIO) {
  const opened = await openPolicyDir(values, io);
  if (!opened) return null;
  const { result, summary } = opened;
  if (result.diagnostics.length) io.stderr(formatText(result.diagnostics, { summary }));
  return { desired: desiredStateOf(result), trustDomain: opened.trustDomain, summary };
}

export const command: Command = {
  name: 'reconciler',
  summary: 'serve node agents: compile the policy, push programs, sign CSRs, serve credentials',
  help,
  async run(argv, io) {
    const { values } = parseFlags(argv, {
      ...POLICY_DIR_FLAGS,
      ...CREDENTIAL_PROVIDER_FLAGS,
      listen: { type: 'string' },
      'state-dir': { type: 'string' },
      'agent-svid-ttl': { type: 'string' },
    });
    const listen = parseHostPort(requireFlag(values.listen, 'listen'));
    if (!listen) throw new UsageError(`--listen must be HOST:PORT (got "${values.listen}")`);
    const agentTtl = durationFlag(values['agent-svid-ttl'], 'agent-svid-ttl', 3600);
    const stateDir = stateDirOf(values['state-dir'], io, 'reconciler');
    const log = commandLogger(io, 'reconciler');
    const policyFlags = { ...values, repo: values.repo ? resolve(io.cwd, values.repo) : undefined };
    // Provider flags that cannot work stop the start before the state directory is touched.
    const providers = credentialProviderOptions(values, io, (warning) => log.warn(warning));

    const first = await render(policyFlags, io);
    if (!first) return EXIT_USAGE;
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    const authority = await openOrInitCa(join(stateDir, 'ca'), first.trustDomain, log);
    const credentials = new CredentialManager({
      ...providers,
      minter: authority.jwt,
      trustDomain: first.trustDomain,
      fingerprintKey: resolveFingerprintKey({ env: io.env, stateDir }),
      logger: log,
    });
    const server = await AgentServer.start({
      host: listen.host,
      port: listen.port,
      stateDir,
      authority,
      credentials,
      logger: log,
      agentSvidTtlSeconds: agentTtl,
    });
    const address = `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${server.port}`;
    const pin = bundlePin(authority.x509Authorities());
    await writeFileAtomic(
      join(stateDir, 'reconciler.json'),
      `${JSON.stringify({ listen: address, pid: process.pid, trustDomain: authority.trustDomain, bundlePin: pin, startedAt: new Date().toISOString() }, null, 2)}\n`,
      { mode: 0o644 },
    );
    log.info('serving agents', {
      listen: address,
      trustDomain: authority.trustDomain,
      bundlePin: pin,
      stateDir,
    });

    const publish = (r: NonNullable<Awaited<ReturnType<typeof render>>>, why: string) => {
      if (!r.desired) {
        log.warn('policy does not validate: nothing applied, agents keep the last good program', { why });
        return;
      }
      if (r.trustDomain !== authority.trustDomain) {
        log.warn('policy trust domain differs from the CA: nothing applied', {
          policy: r.trustDomain,
          ca: authority.trustDomain,
        });
        return;
      }
      const s = server.publish(r.desired);
      log.info('published', { why, policy: r.summary, scopes: s.scopes, agentsToUpdate: s.agentsToUpdate });
    };
    publish(first, 'start');

    let reloading = Promise.resolve();
    const onHup = () => {
      reloading = reloading.then(async () => {
        const r = await render(policyFlags, io).catch((err: unknown) => {
          log.warn('could not read the policy: nothing applied', { error: (err as Error).message });
          return null;
        });
        if (r) publish(r, 'SIGHUP');
      });
    };
    process.on('SIGHUP', onHup);
    const signal = await new Promise<string>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    process.off('SIGHUP', onHup);
    log.info('stopping', { signal });
    await reloading;
    await server.close();
    await credentials.close();
    return EXIT_OK;
  },
};
