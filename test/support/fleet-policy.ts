/**
 * Policy repositories for agent tests and the agents benchmark: identities in several daemon groups, each
 * matched by a process name, optionally with a Bearer-token binding resolved from a local secrets directory.
 * `tweak` changes one identity's allowed peers, which changes that identity's hash and nothing else.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { desiredStateOf } from '../../reconciler/agents/desired.ts';
import type { DesiredState } from '../../reconciler/agents/server.ts';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';

export const FLEET_TD = 'fleet.example.org';

export interface FleetSpec {
  /** Daemon group id → number of identities in it. */
  groups: Record<string, number>;
  /** Identities (by workload ID) whose allowed inbound peers get this extra value. */
  tweak?: Record<string, string>;
  /** Workload IDs given a Bearer-token binding from the Secret `<secret>` (key `token`). */
  credentials?: Record<string, string>;
  /** Identities scoped to one daemon (`riptides/daemon/<id>`) → process name. */
  daemonScoped?: Record<string, { workloadID: string; processName: string }>;
  /** Override a workload's selector (process:name value or a full selector map). */
  selectors?: Record<string, Record<string, unknown>>;
}

/** The workload ID of identity `j` of group index `g`. */
export function workloadOf(g: number, j: number): string {
  return `g${g}/app/w${j}`;
}

export function processNameOf(g: number, j: number): string {
  return `app-g${g}-w${j}`;
}

export function spiffeOf(workloadID: string): string {
  return `spiffe://${FLEET_TD}/${workloadID}`;
}

export function writeFleetPolicy(dir: string, spec: FleetSpec): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'riptides.config.yaml'), `trustDomain: ${FLEET_TD}\n`);
  const docs: string[] = [];
  const groups = Object.entries(spec.groups);
  groups.forEach(([group, n], g) => {
    for (let j = 0; j < n; j++) {
      const wid = workloadOf(g, j);
      const selector = spec.selectors?.[wid] ?? { 'process:name': processNameOf(g, j) };
      const extra = spec.tweak?.[wid];
      docs.push(
        [
          'apiVersion: core.riptides.io/v1alpha1',
          'kind: WorkloadIdentity',
          `metadata: { name: ${wid.replaceAll('/', '-')}, namespace: riptides-system }`,
          'spec:',
          `  workloadID: ${wid}`,
          `  scope: { daemonGroup: { id: ${JSON.stringify(group)} } }`,
          `  selectors: [${JSON.stringify(selector)}]`,
          '  connection: { tls: { mode: MUTUAL } }',
          `  allowedSPIFFEIDs: { inbound: [${JSON.stringify(spiffeOf(workloadOf(g, (j + 1) % n)))}${extra ? `, ${JSON.stringify(extra)}` : ''}] }`,
        ].join('\n'),
      );
    }
  });
  for (const [daemonId, d] of Object.entries(spec.daemonScoped ?? {})) {
    docs.push(
      [
        'apiVersion: core.riptides.io/v1alpha1',
        'kind: WorkloadIdentity',
        `metadata: { name: ${d.workloadID.replaceAll('/', '-')}, namespace: riptides-system }`,
        'spec:',
        `  workloadID: ${d.workloadID}`,
        `  scope: { daemon: { id: ${JSON.stringify(`riptides/daemon/${daemonId}`)} } }`,
        `  selectors: [{ "process:name": ${JSON.stringify(d.processName)} }]`,
      ].join('\n'),
    );
  }
  for (const [wid, secret] of Object.entries(spec.credentials ?? {})) {
    const name = `${wid.replaceAll('/', '-')}-token`;
    docs.push(
      [
        'apiVersion: core.riptides.io/v1alpha1',
        'kind: CredentialSource',
        `metadata: { name: ${name}, namespace: riptides-system }`,
        `spec: { kubernetes: { type: BearerToken, secretRef: { name: ${secret}, key: token } } }`,
      ].join('\n'),
      [
        'apiVersion: core.riptides.io/v1alpha1',
        'kind: CredentialBinding',
        `metadata: { name: ${name}, namespace: riptides-system }`,
        `spec: { workloadID: ${wid}, credentialSource: ${name}, propagation: { sysfs: {} } }`,
      ].join('\n'),
    );
  }
  writeFileSync(join(dir, 'identities.yaml'), `${docs.join('\n---\n')}\n`);
}

/** A local Secret manifest holding `token` (for --secrets-dir). */
export function writeSecret(dir: string, name: string, token: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, `${name}.yaml`),
    `apiVersion: v1\nkind: Secret\nmetadata: { name: ${name}, namespace: riptides-system }\nstringData: { token: ${JSON.stringify(token)} }\n`,
  );
}

/** Loads, validates and compiles a policy directory; throws with the diagnostics when it does not compile. */
export function renderFleet(dir: string): DesiredState {
  const tree = loadPolicyDir({ repo: dir });
  const result = renderPolicy(tree.files, { trustDomain: FLEET_TD }, tree.diagnostics);
  const desired = desiredStateOf(result);
  if (!desired)
    throw new Error(
      `policy does not compile: ${result.diagnostics.map((d) => `${d.code} ${d.message}`).join('; ')}`,
    );
  return desired;
}
