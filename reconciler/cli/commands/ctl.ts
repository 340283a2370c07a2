import { readFile, stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { escapeText } from '../../encoding/escape.ts';
import { ApiClient, ApiClientError, locateApi } from '../../http/client.ts';
import type { StatusEvent } from '../../status/events.ts';
import {
  API_GROUP,
  type CtlKind,
  formatDescribe,
  formatDescribeSource,
  formatDiagnostics,
  formatGet,
  formatSource,
  kindNames,
  OUTPUT_FORMATS,
  type OutputFormat,
  resolveKind,
} from '../../status/format.ts';
import type { DaemonStatus, ResourceStatus, SourceStatusView } from '../../status/model.ts';
import { defaultStateDir } from '../../store/state-dir.ts';
import type { EditChange, EditResult } from '../../working-copy/editor.ts';
import {
  type Command,
  type CommandIO,
  EXIT_FINDINGS,
  EXIT_OK,
  EXIT_USAGE,
  oneOf,
  parseFlags,
  subcommand,
  UsageError,
} from '../command.ts';
import { timeoutFlag } from '../identity-flags.ts';

const help = `Usage:
  riptides-cli ctl get source [-o wide|json|name]
  riptides-cli ctl get KIND [NAME] [-n NAMESPACE] [-o wide|json|name]
  riptides-cli ctl describe KIND NAME [-n NAMESPACE]
  riptides-cli ctl apply -f FILE|-
  riptides-cli ctl delete -f FILE|- [--ignore-not-found]
  riptides-cli ctl delete KIND NAME [-n NAMESPACE] [--ignore-not-found]

Talks to a running reconciler (riptides-cli up, or riptides-cli reconciler).

KIND: wid (workloadidentity), svc (service), credsrc (credentialsource), cb (credentialbinding),
workloadcredential, daemons, source; plurals and <kind>.${API_GROUP} work too.

get       STATE of CredentialSources (AVAILABLE, PENDING, ERROR) and CredentialBindings (OK, FAILED,
          PENDING); WorkloadIdentities with scheduled nodes, attested processes and SVID expiry; daemons
          with health, applied program version and last contact; \`get source\` shows the last fetched and
          the last applied revision, and the diagnostics (file:line) of a commit that does not validate.
describe  one object with its conditions (Ready, Reconciling, Stalled) and recent events.
apply     validates the manifests and commits them into the policy working copy the reconciler tracks
          (git stays the source of truth); refused, with the reason, when anything would not validate.
          Against a remote repository it says what to do instead (commit in a clone and push).
delete    removes the named resources from the working copy the same way.

Finding the reconciler:
  --state-dir DIR            its state directory (default: $RIPTIDES_STATE_DIR, else $XDG_STATE_HOME/riptides,
                             else ~/.local/state/riptides): the API address and admin credential are in DIR/api/
  --server URL               its API, with --credential-file FILE (a copy of DIR/api/admin.token, mode 0600)
                             or --cert FILE --key FILE (an admin X.509-SVID); --ca-file FILE for https
  --timeout DURATION         deadline of each request (default 10s; seconds or a duration, at most 1h)

Exit status: 0 done; 1 not found, or the edit was refused (reasons on stderr); 2 could not run.
`;

const FLAGS = {
  'state-dir': { type: 'string' },
  server: { type: 'string' },
  'credential-file': { type: 'string' },
  'ca-file': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  timeout: { type: 'string' },
  output: { type: 'string', short: 'o' },
  namespace: { type: 'string', short: 'n' },
  filename: { type: 'string', short: 'f' },
  'ignore-not-found': { type: 'boolean' },
} as const;

/** Manifests are capped like a policy file on the server side. */
const MAX_MANIFEST_BYTES = 1024 * 1024;

type Values = ReturnType<typeof parseFlags<typeof FLAGS>>['values'];

async function client(values: Values, io: CommandIO): Promise<ApiClient> {
  const at = (p: string | undefined) => (p === undefined ? undefined : resolve(io.cwd, p));
  const timeoutMs = timeoutFlag(values.timeout, 'timeout', 10) * 1000;
  const target = await locateApi({
    stateDir: resolve(io.cwd, values['state-dir'] ?? defaultStateDir(io.env)),
    server: values.server,
    credentialFile: at(values['credential-file']),
    caFile: at(values['ca-file']),
    certFile: at(values.cert),
    keyFile: at(values.key),
  });
  return new ApiClient(target, { timeoutMs });
}

function kindOf(input: string | undefined): CtlKind {
  if (input === undefined) throw new UsageError(`missing KIND: one of ${kindNames().join(', ')}`);
  const kind = resolveKind(input);
  if (!kind)
    throw new UsageError(`unknown kind "${escapeText(input)}": use one of ${kindNames().join(', ')}`);
  return kind;
}

async function readManifests(file: string, io: CommandIO): Promise<{ text: string; name: string }> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of process.stdin) {
      size += (chunk as Buffer).length;
      if (size > MAX_MANIFEST_BYTES) throw new UsageError(`stdin is over ${MAX_MANIFEST_BYTES} bytes`);
      chunks.push(chunk as Buffer);
    }
    return { text: Buffer.concat(chunks).toString('utf8'), name: 'ctl-applied.yaml' };
  }
  const path = resolve(io.cwd, file);
  const st = await stat(path).catch(() => null);
  if (!st?.isFile()) throw new UsageError(`-f ${escapeText(file)}: no such file`);
  if (st.size > MAX_MANIFEST_BYTES)
    throw new UsageError(`-f ${escapeText(file)} is over ${MAX_MANIFEST_BYTES} bytes`);
  return { text: await readFile(path, 'utf8'), name: basename(path) };
}

function lowerKind(resource: string): string {
  return resource.split('/')[0]!.toLowerCase();
}

function printEdit(
  verb: 'apply' | 'delete',
  answer: { status: number; body: unknown },
  io: CommandIO,
): number {
  const result = answer.body as EditResult;
  if (typeof result !== 'object' || result === null || typeof result.ok !== 'boolean') {
    // Not an edit's answer: the call itself was refused (credential, server error).
    const err = (answer.body as { error?: { reason?: string; hint?: string } } | null)?.error;
    io.stderr(
      `riptides-cli ctl ${verb}: ${escapeText(err ? `${err.reason} (${err.hint})` : `HTTP ${answer.status}`)}\n`,
    );
    return EXIT_USAGE;
  }
  if (!result.ok) {
    io.stderr(
      `riptides-cli ctl ${verb}: ${escapeText(result.error.reason)}\n  hint: ${escapeText(result.error.hint)}\n`,
    );
    if (result.diagnostics?.length) io.stderr(formatDiagnostics(result.diagnostics));
    return EXIT_FINDINGS;
  }
  for (const c of result.changes as EditChange[]) {
    const name = c.resource.split('/').slice(2).join('/');
    io.stdout(`${lowerKind(c.resource)}.${API_GROUP}/${escapeText(name)} ${c.action}\n`);
  }
  io.stderr(
    result.commit
      ? `committed ${result.commit.slice(0, 12)}; the reconciler applies it on its next pass (ctl get source)\n`
      : 'nothing to commit\n',
  );
  return EXIT_OK;
}

export const command: Command = {
  name: 'ctl',
  summary: 'status and edits through a running reconciler (get, describe, apply, delete)',
  help,
  async run(argv: string[], io: CommandIO) {
    const [sub, rest] = subcommand(argv, ['get', 'describe', 'apply', 'delete'] as const, FLAGS);
    const { values, positionals } = parseFlags(rest, FLAGS, true);
    const now = new Date();
    try {
      if (sub === 'get' || sub === 'describe') {
        const format: OutputFormat =
          values.output === undefined
            ? 'table'
            : oneOf(
                values.output,
                OUTPUT_FORMATS.filter((f) => f !== 'table'),
                'output',
                'wide',
              );
        if (sub === 'describe' && values.output !== undefined)
          throw new UsageError('describe has no -o; use get -o json');
        const kind = kindOf(positionals[0]);
        const name = positionals[1];
        if (positionals.length > 2)
          throw new UsageError(`unexpected argument "${escapeText(positionals[2]!)}"`);
        const api = await client(values, io);
        if (kind === 'Source') {
          const { source, events } = await api.get<{
            source: SourceStatusView | null;
            events: StatusEvent[];
          }>('/api/v1/source');
          if (!source) {
            io.stderr('the reconciler has not fetched its source yet\n');
            return EXIT_FINDINGS;
          }
          io.stdout(
            sub === 'get' ? formatSource(source, format, now) : formatDescribeSource(source, events, now),
          );
          return EXIT_OK;
        }
        const ns = values.namespace !== undefined ? `namespace=${encodeURIComponent(values.namespace)}` : '';
        if (sub === 'describe') {
          if (name === undefined) throw new UsageError('describe needs KIND NAME');
          const { item, events } = await api.get<{
            item: ResourceStatus | DaemonStatus;
            events: StatusEvent[];
          }>(`/api/v1/kinds/${kind}/${encodeURIComponent(name)}${ns ? `?${ns}` : ''}`);
          io.stdout(formatDescribe(kind, item, events, now));
          return EXIT_OK;
        }
        const query = [ns, name !== undefined ? `name=${encodeURIComponent(name)}` : '']
          .filter(Boolean)
          .join('&');
        const { items } = await api.get<{ items: Array<ResourceStatus | DaemonStatus> }>(
          `/api/v1/kinds/${kind}${query ? `?${query}` : ''}`,
        );
        if (name !== undefined && items.length === 0) {
          io.stderr(`${kind.toLowerCase()} "${escapeText(name)}" not found\n`);
          return EXIT_FINDINGS;
        }
        if (items.length === 0 && format !== 'json') {
          io.stderr('No resources found.\n');
          return EXIT_OK;
        }
        io.stdout(formatGet(kind, items, format, now));
        return EXIT_OK;
      }

      if (sub === 'apply') {
        if (values.filename === undefined) throw new UsageError('apply needs -f FILE (or -f - for stdin)');
        if (positionals.length) throw new UsageError('apply takes no KIND or NAME; put them in the file');
        const { text, name } = await readManifests(values.filename, io);
        const api = await client(values, io);
        return printEdit(
          'apply',
          await api.postResult('/api/v1/apply', { manifests: text, filename: name }),
          io,
        );
      }

      // delete
      let body: Record<string, unknown>;
      if (values.filename !== undefined) {
        if (positionals.length) throw new UsageError('delete takes -f FILE or KIND NAME, not both');
        body = { manifests: (await readManifests(values.filename, io)).text };
      } else {
        const kind = kindOf(positionals[0]);
        const name = positionals[1];
        if (name === undefined) throw new UsageError('delete needs KIND NAME, or -f FILE');
        body = { targets: [{ kind, name, ...(values.namespace ? { namespace: values.namespace } : {}) }] };
      }
      const api = await client(values, io);
      const answer = await api.postResult('/api/v1/delete', {
        ...body,
        ignoreNotFound: values['ignore-not-found'] === true,
      });
      return printEdit('delete', answer, io);
    } catch (err) {
      if (err instanceof ApiClientError) {
        if (err.status === 404) {
          io.stderr(`${escapeText(err.message)}\n`);
          return EXIT_FINDINGS;
        }
        io.stderr(`riptides-cli ctl: ${escapeText(err.message)}\n`);
        return EXIT_USAGE;
      }
      throw err;
    }
  },
};
