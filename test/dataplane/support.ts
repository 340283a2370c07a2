/**
 * Shared pieces of the data plane tests: a real trust domain CA (the reconciler's identity authority) issuing
 * X509-SVIDs from CSRs, an intercept CA, upstream TLS certificates made with the openssl CLI, rule tables, and
 * process attestation by /proc/<pid>/comm (what an agent's `process:name` selector would decide).
 */
import { type ChildProcessWithoutNullStreams, execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { LookupFunction } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createInterceptCa } from '../../kernel-module/control/intercept-ca.ts';
import type {
  CredentialRef,
  Destination,
  EgressRule,
  KeyPair,
  ProcessIdentity,
  RuleIdentity,
  RuleTable,
  TlsMode,
} from '../../kernel-module/dataplane/inputs.ts';
import { MemoryInputs } from '../../kernel-module/dataplane/inputs.ts';
import { type Authority, generateKeyAndCsr, initAuthority } from '../../reconciler/identity/authority.ts';

export const run = promisify(execFile);
export const TD = 'example.org';
export const id = (path: string) => `spiffe://${TD}/${path}`;

export function scratch(prefix = 'riptides-dp-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function authority(dir: string, trustDomain = TD, now?: () => Date): Promise<Authority> {
  return initAuthority({ trustDomain, dir, ...(now ? { now } : {}) });
}

export async function svid(ca: Authority, spiffeId: string, ttlSeconds = 3600): Promise<KeyPair> {
  const { keyPem, csrPem } = await generateKeyAndCsr(spiffeId);
  const signed = await ca.signX509Svid({ csrPem, ttlSeconds });
  return { cert: signed.chainPem, key: keyPem };
}

/** A CA and a server certificate for `names` (DNS names; IPs as IP SANs), made with the openssl CLI. */
export function upstreamTls(names: string[]): { ca: string; cert: string; key: string } {
  const { dir, cleanup } = scratch('riptides-dp-upstream-');
  try {
    const sh = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    sh('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key');
    sh(
      'req',
      '-x509',
      '-new',
      '-key',
      'ca.key',
      '-subj',
      '/CN=upstream test CA',
      '-days',
      '2',
      '-out',
      'ca.pem',
    );
    sh('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 's.key');
    sh('req', '-new', '-key', 's.key', '-subj', `/CN=${names[0]}`, '-out', 's.csr');
    const san = names.map((n) => (/^[\d.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
    writeFileSync(
      join(dir, 'ext.cnf'),
      `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`,
    );
    sh(
      'x509',
      '-req',
      '-in',
      's.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      'ext.cnf',
      '-out',
      's.pem',
    );
    const read = (f: string) => readFileSync(join(dir, f), 'utf8');
    return { ca: read('ca.pem'), cert: read('s.pem'), key: read('s.key') };
  } finally {
    cleanup();
  }
}

export function destination(
  address: string,
  port: number | null,
  service = 'Service/riptides-system/svc',
): Destination {
  return { service, external: false, address, port, aliases: [], networkPrefixes: [] };
}

export function egress(
  destinations: Destination[],
  tls: { mode: TlsMode | null; intercept?: boolean },
  allowedSpiffeIds: string[] = [],
  hash = `rule-${destinations.map((d) => `${d.address}:${d.port}`).join(',')}`,
): EgressRule {
  return {
    hash,
    destinations,
    tls: { mode: tls.mode, intercept: tls.intercept ?? false },
    allowedSpiffeIds,
    credentials: [],
  };
}

export function bearerBinding(hash: string, name: string, destinations: Destination[] | null): CredentialRef {
  return {
    hash,
    binding: `CredentialBinding/riptides-system/${name}`,
    name,
    kind: 'bearer',
    injection: destinations ? { destinations } : null,
    sysfs: null,
  };
}

/** An AWS binding: its temporary credentials re-sign requests toward `destinations` (SigV4). */
export function awsBinding(hash: string, name: string, destinations: Destination[] | null): CredentialRef {
  return { ...bearerBinding(hash, name, destinations), kind: 'aws' };
}

export function identity(
  spiffeId: string,
  options: {
    mode?: TlsMode;
    inbound?: string[];
    outbound?: string[];
    egress?: EgressRule[];
    credentials?: CredentialRef[];
  } = {},
): RuleIdentity {
  return {
    spiffeId,
    workloadID: spiffeId.slice(`spiffe://${TD}/`.length),
    hash: spiffeId,
    inbound: { mode: options.mode ?? 'MUTUAL', intercept: false, allowedSpiffeIds: options.inbound ?? [] },
    outbound: { allowedSpiffeIds: options.outbound ?? [] },
    egress: options.egress ?? [],
    credentials: options.credentials ?? [],
    svid: null,
  };
}

let generation = 0;
export function table(identities: RuleIdentity[], trustDomain = TD): RuleTable {
  generation++;
  return { abi: 1, version: `v${generation}`, generation, trustDomain, identities };
}

/**
 * Inputs whose attestation maps a process's `comm` (its name) to an identity, as a `process:name` selector
 * would; `byName` can be changed while the test runs.
 */
export function inputsByProcessName(byName: Map<string, string>): MemoryInputs {
  return new MemoryInputs(async (pid): Promise<ProcessIdentity | null> => {
    let comm: string;
    try {
      comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      return null;
    }
    const spiffeId = byName.get(comm);
    return spiffeId ? { spiffeId, destinationPorts: null } : null;
  });
}

/** A fresh intercept CA, as the agent's control writer creates it. */
export async function interceptCa(): Promise<KeyPair> {
  const ca = await createInterceptCa({});
  return { cert: ca.certPem, key: ca.keyPem };
}

export async function baseInputs(byName: Map<string, string>, ca: Authority, ids: string[]) {
  const inputs = inputsByProcessName(byName);
  inputs.setTrustBundle(ca.bundlePem());
  inputs.setInterceptCa(await interceptCa());
  for (const i of ids) inputs.setSvid(i, await svid(ca, i));
  return inputs;
}

/** Resolves test host names (`*.test`, `*.amazonaws.com`) to loopback, as /etc/hosts would. */
export const loopbackLookup: LookupFunction = (hostname, options, callback) => {
  const all = typeof options === 'object' && options !== null && (options as { all?: boolean }).all;
  const cb = callback as (err: Error | null, address: unknown, family?: number) => void;
  if (/\.(test|amazonaws\.com)$/i.test(hostname) || hostname === 'localhost' || hostname === '127.0.0.1') {
    if (all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
    else cb(null, '127.0.0.1', 4);
  } else
    cb(
      Object.assign(new Error(`test resolver: ${hostname} is not a test name`), { code: 'ENOTFOUND' }),
      null,
    );
};

/** Polls `cond` every 20 ms until it holds or `ms` pass (a bounded wait, not a timing assertion). */
export async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

/** An application connection made by openssl s_client (see proxiedTlsClient). */
export interface ProxiedTlsClient {
  child: ChildProcessWithoutNullStreams;
  write(text: string): void;
  end(): void;
  /** Everything received so far. */
  out(): string;
  exited(): boolean;
  /** Resolves with the exit code once s_client has exited. */
  done: Promise<number | null>;
}

/**
 * openssl s_client as the application: CONNECT through the data plane's HTTP proxy (`proxyPort`) to
 * `host:port`, then TLS with SNI `host`, verifying the intercepting data plane against `caFile`. Killed after
 * `killAfterMs` (default 20 s) so that a test that fails never leaves it behind.
 */
export function proxiedTlsClient(opts: {
  proxyPort: number;
  host: string;
  port: number;
  caFile: string;
  killAfterMs?: number;
}): ProxiedTlsClient {
  const child = spawn('openssl', [
    's_client',
    '-quiet',
    '-proxy',
    `127.0.0.1:${opts.proxyPort}`,
    '-connect',
    `${opts.host}:${opts.port}`,
    '-servername',
    opts.host,
    '-CAfile',
    opts.caFile,
    '-verify_return_error',
  ]);
  let out = '';
  let exited = false;
  child.stdout.on('data', (d) => {
    out += d;
  });
  child.stderr.on('data', () => {});
  // Written to after the data plane closed the connection.
  child.stdin.on('error', () => {});
  const done = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      exited = true;
      resolve(code);
    }),
  );
  setTimeout(() => child.kill(), opts.killAfterMs ?? 20_000).unref();
  return {
    child,
    write: (text) => child.stdin.write(text),
    end: () => child.stdin.end(),
    out: () => out,
    exited: () => exited,
    done,
  };
}
