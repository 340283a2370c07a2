import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { writeFileAtomic } from '../../common/atomic-file.ts';
import { checkWebhookUrl, postReport } from '../../drift/notify.ts';
import { renderJson, renderMarkdown } from '../../drift/render.ts';
import { type DriftReport, driftExitCode } from '../../drift/report.ts';
import { escapeText } from '../../encoding/escape.ts';
import { ApiClient, ApiClientError, locateApi } from '../../http/client.ts';
import { defaultStateDir } from '../../store/state-dir.ts';
import { type Command, EXIT_USAGE, oneOf, parseFlags, UsageError } from '../command.ts';

const help = `Usage: riptides-cli drift [--state-dir DIR | --server URL --credential-file FILE] [--heal]
                           [--format markdown|json] [--out FILE] [--webhook URL [--webhook-secret-file FILE]]

Asks the running reconciler (riptides-cli up, or riptides-cli reconciler) for a drift report now: what git says
(the last good revision's node programs) against what every node reports, per node:

  missing       desired but absent on the node: the program, an identity, an SVID for attested processes,
                a credential the reconciler holds
  extra         on the node but not desired: an identity, a credential
  changed       another program version (and the NACK keeping it), identity hash, enforced version, or
                credential version
  stale         an SVID or a credential expiring within the threshold (3 min by default) and not renewed
  unreachable   no stream from the agent, or silent for over 90 s: its live state is unknown
  out-of-band   a control-interface file changed, added, removed or re-moded by hand

The first line says whether anything drifted. The report is also kept in the reconciler's reports directory
(STATE_DIR/reports, newest 50) and its history. It never holds a secret value: hashes, versions, serials,
keyed fingerprints and expiry only.

Report-only by default. --heal re-applies: the whole desired program to nodes whose program or identities
differ, credential values to nodes that lack them or hold an older version, and a repair request to nodes
whose control interface was edited (the agent writes its files again and takes new SVIDs for edited ones);
it then waits for those nodes to report again and the report says what remains. Stale and unreachable items
are reported, not healed.

Flags:
  --state-dir DIR               the reconciler's state directory (default: $RIPTIDES_STATE_DIR, else
                                $XDG_STATE_HOME/riptides, else ~/.local/state/riptides)
  --server URL                  its API instead, with --credential-file FILE (or --credential FILE: a copy of
                                DIR/api/admin.token, mode 0600) or --cert FILE --key FILE (an admin SVID);
                                --ca-file FILE for https
  --format markdown|json        default markdown
  --out FILE                    write the report there (a one-line summary goes to stderr)
  --heal                        re-apply what drifted (see above)
  --webhook URL                 also POST the JSON report there (https, or http to loopback; no redirects,
                                10 s); --webhook-secret-file FILE signs it (X-Riptides-Signature-256)
  --timeout SECONDS             deadline of the request (default 60; a heal waits up to 15 s for nodes)

Exit status: 0 no drift, 1 drift (also when --heal fixed it: the report says so), 2 could not run (or the
webhook did not take the report).
`;

const FLAGS = {
  'state-dir': { type: 'string' },
  server: { type: 'string' },
  'credential-file': { type: 'string' },
  credential: { type: 'string' },
  'ca-file': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  format: { type: 'string' },
  out: { type: 'string' },
  heal: { type: 'boolean' },
  webhook: { type: 'string' },
  'webhook-secret-file': { type: 'string' },
  timeout: { type: 'string' },
} as const;

function summaryLine(report: DriftReport): string {
  const c = report.summary.counts;
  const counts = Object.entries(c)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  const healed = report.heal
    ? report.heal.after.drifted
      ? '; after the heal some drift remains'
      : '; healed, no drift remains'
    : '';
  return report.drifted
    ? `drift: ${counts} on ${report.summary.nodesDrifted} of ${report.summary.nodes} node(s)${healed}`
    : `no drift: ${report.summary.nodes} node(s) as git says`;
}

export const command: Command = {
  name: 'drift',
  summary: 'a drift report now from the running reconciler: git against what the nodes run (--heal)',
  help,
  async run(argv, io) {
    const { values } = parseFlags(argv, FLAGS);
    const format = oneOf(values.format, ['markdown', 'json'] as const, 'format', 'markdown');
    if (values['credential-file'] && values.credential)
      throw new UsageError('--credential and --credential-file are the same flag: give one');
    let timeoutMs = 60_000;
    if (values.timeout !== undefined) {
      const s = Number(values.timeout);
      if (!(Number.isInteger(s) && s > 0 && s <= 3600))
        throw new UsageError(`--timeout must be whole seconds between 1 and 3600 (got "${values.timeout}")`);
      timeoutMs = s * 1000;
    }
    if (values['webhook-secret-file'] && !values.webhook)
      throw new UsageError('--webhook-secret-file goes with --webhook URL');
    if (values.webhook) {
      try {
        checkWebhookUrl(values.webhook);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    }
    const at = (p: string | undefined) => (p === undefined ? undefined : resolve(io.cwd, p));
    let secret: string | undefined;
    if (values['webhook-secret-file']) {
      secret = (
        await readFile(at(values['webhook-secret-file'])!, 'utf8').catch(() => {
          throw new UsageError(`cannot read --webhook-secret-file ${values['webhook-secret-file']}`);
        })
      ).trim();
      if (!secret) throw new UsageError('--webhook-secret-file is empty');
    }

    let report: DriftReport;
    try {
      const target = await locateApi({
        stateDir: resolve(io.cwd, values['state-dir'] ?? defaultStateDir(io.env)),
        server: values.server,
        credentialFile: at(values['credential-file'] ?? values.credential),
        caFile: at(values['ca-file']),
        certFile: at(values.cert),
        keyFile: at(values.key),
      });
      const api = new ApiClient(target, { timeoutMs });
      ({ report } = await api.post<{ report: DriftReport }>('/api/v1/drift', { heal: values.heal === true }));
      if (typeof report?.drifted !== 'boolean') throw new ApiClientError('the API answered no drift report');
    } catch (err) {
      if (err instanceof ApiClientError) {
        io.stderr(`riptides-cli drift: ${escapeText(err.message)}\n`);
        return EXIT_USAGE;
      }
      throw err;
    }

    const text = format === 'json' ? renderJson(report) : renderMarkdown(report);
    if (values.out) {
      await writeFileAtomic(at(values.out)!, text, { mode: 0o644 });
      io.stderr(`${summaryLine(report)}; report written to ${escapeText(values.out)}\n`);
    } else io.stdout(text);
    if (values.webhook) {
      const sent = await postReport(values.webhook, report, secret ? { secret } : {});
      if (!sent.ok) {
        io.stderr(`riptides-cli drift: the webhook did not take the report: ${escapeText(sent.reason)}\n`);
        return EXIT_USAGE;
      }
    }
    return driftExitCode(report);
  },
};
