/**
 * What `riptides-cli ctl get` and `ctl describe` print, from a status snapshot: kubectl-style tables (default
 * and `-o wide`), `-o name`, `-o json`, and describe pages with conditions and recent events. Pure functions
 * of the status and a clock, so the CLI stays a thin layer and tests read exact output. Every value from git,
 * a server or an agent goes through escapeText; JSON is exact (JSON.stringify is its escaping).
 */

import { escapeText } from '../encoding/escape.ts';
import { findCondition, readyStatus } from './conditions.ts';
import type { StatusEvent } from './events.ts';
import type {
  CredentialBindingStatus,
  CredentialSourceStatus,
  DaemonStatus,
  ResourceKind,
  ResourceStatus,
  ServiceStatus,
  SourceDiagnostic,
  SourceStatusView,
  StatusSnapshot,
  WorkloadIdentityStatus,
} from './model.ts';

export type CtlKind = ResourceKind | 'Daemon' | 'Source';
export const OUTPUT_FORMATS = ['table', 'wide', 'json', 'name'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** Names `ctl` accepts for each kind: singular, plural, the real CLI's short names (`wid`, `svc`, `credsrc`, `cb`, `daemons`). */
const KIND_NAMES: Record<CtlKind, string[]> = {
  Source: ['source', 'sources', 'gitrepository', 'gitrepositories'],
  WorkloadIdentity: ['workloadidentity', 'workloadidentities', 'workloadidentitys', 'wid'],
  Service: ['service', 'services', 'svc'],
  CredentialSource: ['credentialsource', 'credentialsources', 'credsrc'],
  CredentialBinding: ['credentialbinding', 'credentialbindings', 'cb'],
  WorkloadCredential: ['workloadcredential', 'workloadcredentials'],
  Daemon: ['daemon', 'daemons'],
};

export const API_GROUP = 'core.riptides.io';

/** The kind a user typed (`wid`, `WorkloadIdentities`, `workloadidentity.core.riptides.io`), or null. */
export function resolveKind(input: string): CtlKind | null {
  const name = input.toLowerCase().replace(new RegExp(`\\.${API_GROUP.replace(/\./g, '\\.')}$`), '');
  for (const [kind, names] of Object.entries(KIND_NAMES)) if (names.includes(name)) return kind as CtlKind;
  return null;
}

/** Every accepted name, for "did you mean" and help. */
export function kindNames(): string[] {
  return Object.values(KIND_NAMES).flat();
}

// ── small pieces ────────────────────────────────────────────────────────────────────────────────────────

const t = (v: string | number | boolean | null | undefined): string =>
  v === null || v === undefined || v === '' ? '-' : escapeText(String(v));

/** `12s`, `5m`, `3h`, `2d`: the scale kubectl uses for AGE. */
function span(ms: number): string {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

function ago(iso: string | null, now: Date): string {
  if (!iso) return '-';
  const ms = now.getTime() - Date.parse(iso);
  return ms >= 0 ? `${span(ms)} ago` : `in ${span(ms)}`;
}

function until(iso: string | null, now: Date): string {
  if (!iso) return '-';
  const ms = Date.parse(iso) - now.getTime();
  return ms >= 0 ? `in ${span(ms)}` : `expired ${span(ms)} ago`;
}

function shortRev(rev: string | null): string {
  return rev ? rev.slice(0, 12) : '-';
}

function cut(text: string, max = 80): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function readyMessage(r: { conditions: ResourceStatus['conditions'] }): string {
  return findCondition(r.conditions, 'Ready')?.message ?? '';
}

/** Columns aligned with three spaces, as kubectl prints them; every cell is already escaped. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

// ── ctl get ─────────────────────────────────────────────────────────────────────────────────────────────

interface Column<T> {
  header: string;
  wide?: boolean;
  cell: (r: T, now: Date) => string;
}

const NAMESPACE_COLUMN = { header: 'NAMESPACE', cell: (r: { namespace: string }) => t(r.namespace) };

const COLUMNS: { [K in Exclude<CtlKind, 'Source'>]: Column<never>[] } = {
  WorkloadIdentity: [
    { header: 'NAME', cell: (r: WorkloadIdentityStatus) => t(r.name) },
    { header: 'WORKLOAD ID', cell: (r: WorkloadIdentityStatus) => t(r.workloadID) },
    { header: 'SCOPE', cell: (r: WorkloadIdentityStatus) => t(r.scope) },
    { header: 'NODES', cell: (r: WorkloadIdentityStatus) => String(r.scheduledNodes) },
    { header: 'PROCESSES', cell: (r: WorkloadIdentityStatus) => String(r.attestedProcesses) },
    { header: 'SVID EXPIRY', cell: (r: WorkloadIdentityStatus, now) => until(r.svidExpiry, now) },
    { header: 'READY', cell: (r: WorkloadIdentityStatus) => readyStatus(r.conditions) },
    { header: 'SPIFFE ID', wide: true, cell: (r: WorkloadIdentityStatus) => t(r.spiffeId) },
    { header: 'REVISION', wide: true, cell: (r: WorkloadIdentityStatus) => shortRev(r.observedRevision) },
    { header: 'MESSAGE', wide: true, cell: (r: WorkloadIdentityStatus) => t(readyMessage(r)) },
  ] as Column<never>[],
  Service: [
    { header: 'NAME', cell: (r: ServiceStatus) => t(r.name) },
    { header: 'ADDRESSES', cell: (r: ServiceStatus) => t(r.addresses.join(',')) },
    { header: 'EXTERNAL', cell: (r: ServiceStatus) => String(r.external) },
    {
      header: 'LABELS',
      cell: (r: ServiceStatus) =>
        t(
          Object.entries(r.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(','),
        ),
    },
    { header: 'TAGS', wide: true, cell: (r: ServiceStatus) => t(r.tags.join(',')) },
    { header: 'REVISION', wide: true, cell: (r: ServiceStatus) => shortRev(r.observedRevision) },
  ] as Column<never>[],
  CredentialSource: [
    { header: 'NAME', cell: (r: CredentialSourceStatus) => t(r.name) },
    { header: 'TYPE', cell: (r: CredentialSourceStatus) => t(r.type) },
    { header: 'STATE', cell: (r: CredentialSourceStatus) => t(r.state) },
    { header: 'BINDINGS', wide: true, cell: (r: CredentialSourceStatus) => String(r.bindings) },
    { header: 'REVISION', wide: true, cell: (r: CredentialSourceStatus) => shortRev(r.observedRevision) },
    { header: 'MESSAGE', cell: (r: CredentialSourceStatus) => t(cut(r.message ?? '')) },
  ] as Column<never>[],
  CredentialBinding: bindingColumns(),
  WorkloadCredential: bindingColumns(),
  Daemon: [
    { header: 'NAME', cell: (r: DaemonStatus) => t(r.name) },
    { header: 'WORKLOAD ID', cell: (r: DaemonStatus) => t(r.workloadID) },
    { header: 'GROUP', cell: (r: DaemonStatus) => t(r.group) },
    { header: 'HEALTH', cell: (r: DaemonStatus) => t(r.health) },
    { header: 'VERSION', cell: (r: DaemonStatus) => t(r.appliedVersion?.slice(0, 16)) },
    { header: 'LAST CONTACT', cell: (r: DaemonStatus, now) => ago(r.lastContact, now) },
    { header: 'DESIRED', wide: true, cell: (r: DaemonStatus) => t(r.desiredVersion?.slice(0, 16)) },
    { header: 'PROCESSES', wide: true, cell: (r: DaemonStatus) => String(r.processes) },
    { header: 'MESSAGE', wide: true, cell: (r: DaemonStatus) => t(r.healthMessage) },
  ] as Column<never>[],
};

function bindingColumns(): Column<never>[] {
  return [
    { header: 'NAME', cell: (r: CredentialBindingStatus) => t(r.name) },
    { header: 'WORKLOAD ID', cell: (r: CredentialBindingStatus) => t(r.workloadID) },
    { header: 'SOURCE', cell: (r: CredentialBindingStatus) => t(r.credentialSource) },
    { header: 'STATE', cell: (r: CredentialBindingStatus) => t(r.state) },
    { header: 'EXPIRES', cell: (r: CredentialBindingStatus, now) => until(r.expiresAt, now) },
    { header: 'PROPAGATION', wide: true, cell: (r: CredentialBindingStatus) => t(r.propagation) },
    { header: 'FINGERPRINT', wide: true, cell: (r: CredentialBindingStatus) => t(r.fingerprint) },
    { header: 'VERSION', wide: true, cell: (r: CredentialBindingStatus) => t(r.version) },
    { header: 'MESSAGE', wide: true, cell: (r: CredentialBindingStatus) => t(r.message) },
  ] as Column<never>[];
}

type Row = ResourceStatus | DaemonStatus;

/** The objects of `kind` in `snapshot`, filtered by name (and namespace); daemons have no namespace. */
export function select(
  snapshot: StatusSnapshot,
  kind: Exclude<CtlKind, 'Source'>,
  filter: { name?: string; namespace?: string } = {},
): Row[] {
  const rows: Row[] =
    kind === 'Daemon' ? snapshot.daemons : snapshot.resources.filter((r) => r.kind === kind);
  return rows.filter(
    (r) =>
      (filter.name === undefined || r.name === filter.name) &&
      (filter.namespace === undefined || !('namespace' in r) || r.namespace === filter.namespace),
  );
}

function lowerKind(kind: CtlKind): string {
  return kind === 'Source' ? 'gitrepository' : kind.toLowerCase();
}

/** `ctl get KIND [NAME]` output for rows already selected. */
export function formatGet(
  kind: Exclude<CtlKind, 'Source'>,
  rows: Row[],
  format: OutputFormat,
  now: Date,
): string {
  if (format === 'json') {
    const items = rows.map((r) => ({ apiVersion: `${API_GROUP}/v1alpha1`, ...r, kind: kind }));
    return `${JSON.stringify(items.length === 1 ? items[0] : { kind: `${kind}List`, items }, null, 2)}\n`;
  }
  if (format === 'name') return rows.map((r) => `${lowerKind(kind)}.${API_GROUP}/${t(r.name)}\n`).join('');
  if (rows.length === 0) return '';
  const multiNs = kind !== 'Daemon' && new Set(rows.map((r) => (r as ResourceStatus).namespace)).size > 1;
  const cols = [
    ...(multiNs ? [NAMESPACE_COLUMN as Column<never>] : []),
    ...COLUMNS[kind].filter((c) => format === 'wide' || !c.wide),
  ];
  return table(
    cols.map((c) => c.header),
    rows.map((r) => cols.map((c) => (c.cell as (r: Row, now: Date) => string)(r, now))),
  );
}

/** `ctl get source`: the repository row (as `flux get sources git`), then the diagnostics of a bad commit. */
export function formatSource(source: SourceStatusView | null, format: OutputFormat, now: Date): string {
  if (format === 'json') return `${JSON.stringify(source, null, 2)}\n`;
  if (!source) return '';
  if (format === 'name') return `gitrepository/${t(source.name)}\n`;
  const ready = findCondition(source.conditions, 'Ready');
  const header = ['NAME', 'BRANCH', 'FETCHED', 'APPLIED', 'READY', 'MESSAGE'];
  const row = [
    t(source.name),
    t(source.branch),
    source.lastFetchedRevision
      ? `${shortRev(source.lastFetchedRevision)} (${ago(source.lastFetchedAt, now)})`
      : '-',
    source.lastAppliedRevision
      ? `${shortRev(source.lastAppliedRevision)} (${ago(source.lastAppliedAt, now)})`
      : '-',
    ready?.status ?? 'Unknown',
    t(format === 'wide' ? (ready?.message ?? '') : cut(ready?.message ?? '')),
  ];
  if (format === 'wide') {
    header.push('URL', 'PATH');
    row.push(t(source.url), t(source.path));
  }
  let out = table(header, [row]);
  if (source.diagnostics.length) {
    const inForce = source.lastAppliedRevision
      ? `${shortRev(source.lastAppliedRevision)} stays in force`
      : 'no revision was applied yet';
    out += `\nDiagnostics of ${shortRev(source.lastFetchedRevision)} (not applied; ${inForce}):\n`;
    out += formatDiagnostics(source.diagnostics, source.omittedDiagnostics);
  }
  return out;
}

/** Diagnostics as `  file:line:col: severity CODE: message` lines (the shape `validate` prints), escaped. */
export function formatDiagnostics(
  diagnostics: ReadonlyArray<
    Pick<SourceDiagnostic, 'file' | 'line' | 'column' | 'severity' | 'code' | 'message'>
  >,
  omitted = 0,
): string {
  let out = '';
  for (const d of diagnostics)
    out += `  ${t(d.file)}:${d.line}:${d.column}: ${d.severity} ${t(d.code)}: ${t(d.message)}\n`;
  if (omitted) out += `  … and ${omitted} more\n`;
  return out;
}

// ── ctl describe ────────────────────────────────────────────────────────────────────────────────────────

function fields(pairs: Array<[string, string]>): string {
  const width = Math.max(...pairs.map(([k]) => k.length)) + 3;
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}\n`).join('');
}

function conditionsBlock(conditions: ResourceStatus['conditions'], now: Date): string {
  if (!conditions.length) return 'Conditions:  <none>\n';
  const rows = conditions.map((c) => [
    c.type,
    c.status,
    t(c.reason),
    ago(c.lastTransitionTime, now),
    shortRev(c.observedRevision),
    t(c.message),
  ]);
  return `Conditions:\n${indent(table(['Type', 'Status', 'Reason', 'Last Transition', 'Revision', 'Message'], rows))}`;
}

function eventsBlock(events: StatusEvent[], now: Date): string {
  if (!events.length) return 'Events:  <none>\n';
  const rows = events.map((e) => [
    e.type,
    t(e.reason),
    e.count > 1
      ? `${ago(e.lastTimestamp, now)} (x${e.count} since ${ago(e.firstTimestamp, now)})`
      : ago(e.lastTimestamp, now),
    shortRev(e.revision),
    t(e.message),
  ]);
  return `Events:\n${indent(table(['Type', 'Reason', 'Age', 'Revision', 'Message'], rows))}`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => (l ? `  ${l}` : l))
    .join('\n');
}

function specFields(r: Row, now: Date): Array<[string, string]> {
  if (!('kind' in r)) {
    return [
      ['Workload ID', t(r.workloadID)],
      ['Group', t(r.group)],
      ['Health', `${t(r.health)}${r.healthMessage ? ` (${t(r.healthMessage)})` : ''}`],
      ['Applied Version', t(r.appliedVersion)],
      ['Desired Version', t(r.desiredVersion)],
      ['Last Contact', r.lastContact ? `${t(r.lastContact)} (${ago(r.lastContact, now)})` : '-'],
      ['Processes', String(r.processes)],
    ];
  }
  const common: Array<[string, string]> = [
    ['Namespace', t(r.namespace)],
    ['File', t(r.file)],
    ['Revision', t(r.observedRevision)],
  ];
  switch (r.kind) {
    case 'WorkloadIdentity':
      return [
        ...common,
        ['Workload ID', t(r.workloadID)],
        ['SPIFFE ID', t(r.spiffeId)],
        ['Scope', t(r.scope)],
        ['Scheduled Nodes', String(r.scheduledNodes)],
        ['Attested Processes', String(r.attestedProcesses)],
        ['SVID Expiry', r.svidExpiry ? `${t(r.svidExpiry)} (${until(r.svidExpiry, now)})` : '-'],
      ];
    case 'Service':
      return [
        ...common,
        ['Addresses', t(r.addresses.join(', '))],
        ['External', String(r.external)],
        [
          'Labels',
          t(
            Object.entries(r.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(', '),
          ),
        ],
        ['Tags', t(r.tags.join(', '))],
      ];
    case 'CredentialSource':
      return [
        ...common,
        ['Type', t(r.type)],
        ['State', t(r.state)],
        ['Message', t(r.message)],
        ['Bindings', String(r.bindings)],
      ];
    default:
      return [
        ...common,
        ['Workload ID', t(r.workloadID)],
        ['Credential Source', t(r.credentialSource)],
        ['Propagation', t(r.propagation)],
        ['State', t(r.state)],
        ['Message', t(r.message)],
        ['Fingerprint', t(r.fingerprint)],
        ['Version', t(r.version)],
        ['Expires', r.expiresAt ? `${t(r.expiresAt)} (${until(r.expiresAt, now)})` : '-'],
      ];
  }
}

/** `ctl describe KIND NAME` for one object and its recent events. */
export function formatDescribe(
  kind: Exclude<CtlKind, 'Source'>,
  row: Row,
  events: StatusEvent[],
  now: Date,
): string {
  const head: Array<[string, string]> = [
    ['Name', t(row.name)],
    ['Kind', kind],
  ];
  return (
    fields([...head, ...specFields(row, now)]) +
    conditionsBlock(row.conditions, now) +
    eventsBlock(events, now)
  );
}

/** `ctl describe source`. */
export function formatDescribeSource(source: SourceStatusView, events: StatusEvent[], now: Date): string {
  const out = fields([
    ['Name', t(source.name)],
    ['Kind', 'GitRepository'],
    ['URL', t(source.url)],
    ['Branch', t(source.branch)],
    ['Path', t(source.path)],
    [
      'Last Fetched',
      source.lastFetchedRevision
        ? `${t(source.lastFetchedRevision)} (${ago(source.lastFetchedAt, now)})`
        : '-',
    ],
    [
      'Last Applied',
      source.lastAppliedRevision
        ? `${t(source.lastAppliedRevision)} (${ago(source.lastAppliedAt, now)})`
        : '-',
    ],
  ]);
  let diag = '';
  if (source.diagnostics.length) {
    diag = 'Diagnostics:\n';
    diag += formatDiagnostics(source.diagnostics, source.omittedDiagnostics);
  }
  return out + conditionsBlock(source.conditions, now) + diag + eventsBlock(events, now);
}
