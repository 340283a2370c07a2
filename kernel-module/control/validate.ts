/**
 * What the kernel side accepts. The writer checks a table before it writes it (so the agent can NACK at once)
 * and the kernel side checks the file again when it loads it (a file can be edited by hand, written by another
 * daemon, or damaged): one validator for both. Shapes are strict (an unknown field is an error), sizes are
 * capped, and the references inside a table must resolve.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseSpiffeId, parseTrustDomain } from '../spiffe-id.ts';
import {
  CONTROL_ABI,
  type ControlConfig,
  type Manifest,
  type ProcessTable,
  type RuleTable,
  svidDirOf,
} from './abi.ts';

/** Caps: a table larger than these is refused, not processed. */
export const Limits = {
  /** Bytes of the `rules` file. */
  rulesBytes: 32 * 1024 * 1024,
  /** Bytes of the `processes` file. */
  processesBytes: 16 * 1024 * 1024,
  /** Bytes of `config`, `rules.enforced`, `health`. */
  smallFileBytes: 64 * 1024,
  /** Bytes of the manifest. */
  manifestBytes: 16 * 1024 * 1024,
  /** Bytes of a PEM file (a bundle with many roots, a chain). */
  pemBytes: 8 * 1024 * 1024,
  identities: 20_000,
  rulesPerIdentity: 1_000,
  destinationsPerList: 10_000,
  credentialsPerIdentity: 1_000,
  allowedIdsPerList: 10_000,
  processes: 1_000_000,
  /** Diagnostics reported per refused file. */
  diagnostics: 20,
} as const;

const hash = z.string().regex(/^[0-9a-f]{16,64}$/, { error: 'must be 16 to 64 lowercase hex digits' });
const version = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._:-]+$/, { error: 'must be 1-128 characters of letters, digits, ".", "_", ":", "-"' });
const generation = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const spiffeId = z.string().superRefine((value, ctx) => {
  const parsed = parseSpiffeId(value);
  if (!parsed.ok) ctx.addIssue({ code: 'custom', message: `invalid SPIFFE ID: ${parsed.message}` });
});
const tlsMode = z.enum(['MUTUAL', 'PERMISSIVE', 'SIMPLE']);
const port = z.number().int().min(1).max(65535);

function isCidr(value: string): boolean {
  const slash = value.indexOf('/');
  if (slash < 0) return false;
  const family = isIP(value.slice(0, slash));
  const bits = value.slice(slash + 1);
  if (family === 0 || !/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

/** A host name (RFC 1123, optionally a `*.` wildcard, as Service addresses allow) or an IP address. */
const HOSTNAME =
  /^(\*\.)?(?=.{1,253}$)[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?)*\.?$/i;
const host = z
  .string()
  .refine((v) => isIP(v) !== 0 || HOSTNAME.test(v), { error: 'must be a host name or an IP address' });

const destination = z.strictObject({
  service: z.string().min(1).max(512),
  external: z.boolean(),
  address: host,
  port: port.nullable(),
  aliases: z.array(host).max(Limits.destinationsPerList),
  networkPrefixes: z
    .array(z.string().refine(isCidr, { error: 'must be a CIDR such as 10.0.0.0/8' }))
    .max(Limits.destinationsPerList),
});
const destinations = z.array(destination).max(Limits.destinationsPerList);
const allowedIds = z.array(spiffeId).max(Limits.allowedIdsPerList);

/** `<binding-hash>/<binding-name>`: exactly two components, nothing that could leave `credentials/`. */
const sysfsDir = z
  .string()
  .max(300)
  .regex(/^[0-9a-f]{16,64}\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, {
    error: 'must be "<binding-hash>/<binding-name>" (hex / DNS-1123 name)',
  })
  .refine((v) => !v.split('/').some((part) => part === '.' || part === '..'), {
    error: 'must not contain dot segments',
  });

const credentialRule = z.strictObject({
  hash,
  binding: z.string().min(1).max(512),
  name: z.string().min(1).max(253),
  kind: z.enum(['bearer', 'aws', 'unsupported']),
  injection: z.strictObject({ destinations }).nullable(),
  sysfs: z.strictObject({ dir: sysfsDir }).nullable(),
});

const egressRule = z.strictObject({
  hash,
  destinations,
  tls: z.strictObject({ mode: tlsMode.nullable(), intercept: z.boolean() }),
  allowedSpiffeIds: allowedIds,
  credentials: z.array(hash).max(Limits.credentialsPerIdentity),
});

const identityRule = z.strictObject({
  spiffeId,
  workloadID: z.string().min(1).max(2048),
  hash,
  inbound: z.strictObject({ mode: tlsMode, intercept: z.boolean(), allowedSpiffeIds: allowedIds }),
  outbound: z.strictObject({ allowedSpiffeIds: allowedIds }),
  egress: z.array(egressRule).max(Limits.rulesPerIdentity),
  credentials: z.array(credentialRule).max(Limits.credentialsPerIdentity),
  svid: z
    .strictObject({
      dir: z.string().max(64),
      serial: z.string().regex(/^[0-9A-Fa-f]{1,64}$/, { error: 'must be the certificate serial in hex' }),
      notAfter: z.iso.datetime({ offset: true }),
    })
    .nullable(),
});

const trustDomain = z.string().superRefine((value, ctx) => {
  const parsed = parseTrustDomain(value);
  if (!parsed.ok || value.includes(':/'))
    ctx.addIssue({
      code: 'custom',
      message: `invalid trust domain: ${parsed.ok ? 'a SPIFFE ID, not a name' : parsed.message}`,
    });
});

const ruleTable = z.strictObject({
  abi: z.literal(CONTROL_ABI),
  version,
  generation,
  trustDomain,
  identities: z.array(identityRule).max(Limits.identities),
});

const processRecord = z.strictObject({
  pid: z
    .number()
    .int()
    .min(1)
    .max(2 ** 22),
  startTime: z.number().int().min(0),
  spiffeId: spiffeId.nullable(),
  conflict: z.array(spiffeId).min(2).nullable(),
  destinationPorts: z.array(port).nullable(),
  routes: z.array(z.strictObject({ spiffeId, destinationPorts: z.array(port).min(1) })).optional(),
});

const processTable = z.strictObject({
  abi: z.literal(CONTROL_ABI),
  generation: z.number().int().min(0),
  processes: z.array(processRecord).max(Limits.processes),
});

const config = z.strictObject({
  abi: z.literal(CONTROL_ABI),
  trust_domain: trustDomain,
  daemon_id: z.string().min(1).max(2048),
});

const manifest = z.strictObject({
  abi: z.literal(CONTROL_ABI),
  generation: z.number().int().min(0),
  files: z.record(
    z.string().max(1024),
    z.strictObject({ sha256: z.string().regex(/^[0-9a-f]{64}$/), mode: z.number().int().min(0).max(0o7777) }),
  ),
});

export interface Diagnostic {
  /** Where in the document, e.g. `identities[2].egress[0].tls.mode`; empty for the document itself. */
  path: string;
  message: string;
}

export type Checked<T> = { ok: true; value: T } | { ok: false; diagnostics: Diagnostic[] };

function pathText(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

function check<T>(schema: z.ZodType<T>, input: unknown): Checked<T> {
  const result = schema.safeParse(input);
  if (result.success) return { ok: true, value: result.data };
  return {
    ok: false,
    diagnostics: result.error.issues
      .slice(0, Limits.diagnostics)
      .map((i) => ({ path: pathText(i.path), message: i.message })),
  };
}

/** One line for a reason field: the first diagnostics, `path: message; …`. */
export function describeDiagnostics(diagnostics: readonly Diagnostic[]): string {
  const shown = diagnostics.slice(0, 5).map((d) => (d.path ? `${d.path}: ${d.message}` : d.message));
  const more = diagnostics.length > 5 ? `; and ${diagnostics.length - 5} more` : '';
  return shown.join('; ') + more;
}

/**
 * Validates a rule table: the shape, then what must hold between its parts: identities in the table's trust
 * domain and listed once each, credential hashes unique per identity and every egress rule's credential
 * reference resolving to one of them, `svid.dir` being the identity's own directory.
 */
export function validateRuleTable(input: unknown): Checked<RuleTable> {
  const shaped = check(ruleTable, input);
  if (!shaped.ok) return shaped;
  const table = shaped.value as RuleTable;
  const diagnostics: Diagnostic[] = [];
  const add = (path: string, message: string) => {
    if (diagnostics.length < Limits.diagnostics) diagnostics.push({ path, message });
  };
  const seen = new Set<string>();
  table.identities.forEach((identity, i) => {
    const at = `identities[${i}]`;
    const parsed = parseSpiffeId(identity.spiffeId);
    if (parsed.ok && parsed.id.trustDomain !== table.trustDomain)
      add(`${at}.spiffeId`, `is outside the table's trust domain "${table.trustDomain}"`);
    if (seen.has(identity.spiffeId)) add(`${at}.spiffeId`, 'appears twice in the table');
    seen.add(identity.spiffeId);
    const credentialHashes = new Set<string>();
    identity.credentials.forEach((c, j) => {
      if (credentialHashes.has(c.hash)) add(`${at}.credentials[${j}].hash`, 'appears twice in this identity');
      credentialHashes.add(c.hash);
    });
    identity.egress.forEach((rule, j) => {
      rule.credentials.forEach((h, k) => {
        if (!credentialHashes.has(h))
          add(
            `${at}.egress[${j}].credentials[${k}]`,
            `names credential ${h}, which this identity does not have`,
          );
      });
    });
    if (identity.svid && identity.svid.dir !== svidDirOf(identity.spiffeId))
      add(`${at}.svid.dir`, `must be "${svidDirOf(identity.spiffeId)}" for ${identity.spiffeId}`);
  });
  return diagnostics.length ? { ok: false, diagnostics } : { ok: true, value: table };
}

export function validateProcessTable(input: unknown): Checked<ProcessTable> {
  return check(processTable, input) as Checked<ProcessTable>;
}

export function validateConfig(input: unknown): Checked<ControlConfig> {
  return check(config, input) as Checked<ControlConfig>;
}

export function validateManifest(input: unknown): Checked<Manifest> {
  return check(manifest, input) as Checked<Manifest>;
}
