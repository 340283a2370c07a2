import { buildPlan } from '../../reconciler/plan/plan.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';

export const H = 'apiVersion: core.riptides.io/v1alpha1\n';

/** A small valid policy set; tests mutate its text to make a head. */
export const BASE = {
  'services.yaml': `${H}kind: Service
metadata:
  name: api
spec:
  addresses:
    - address: api.internal
      port: 8443
  labels:
    app: api
---
${H}kind: Service
metadata:
  name: partner
spec:
  addresses:
    - address: partner.example.net
      port: 443
  external: true
  labels:
    app: partner
---
${H}kind: Service
metadata:
  name: billing
spec:
  addresses:
    - address: billing.internal
      port: 9000
  labels:
    app: billing
`,
  'identities.yaml': `${H}kind: WorkloadIdentity
metadata:
  name: server
spec:
  workloadID: apps/server
  scope:
    daemonGroup:
      id: g
  selectors:
    - process:name: server
      k8s:pod:namespace: apps
  connection:
    tls:
      mode: MUTUAL
  allowedSPIFFEIDs:
    inbound:
      - spiffe://example.com/apps/client
---
${H}kind: WorkloadIdentity
metadata:
  name: client
spec:
  workloadID: apps/client
  scope:
    daemonGroup:
      id: g
  selectors:
    - process:name: client
      k8s:pod:namespace: apps
  connection:
    tls:
      intercept: true
  egress:
    - selectors:
        - app: api
      connection:
        tls:
          mode: MUTUAL
      allowedSPIFFEIDs:
        - spiffe://example.com/apps/server
`,
  'credentials.yaml': `${H}kind: CredentialSource
metadata:
  name: token
spec:
  kubernetes:
    secretRef:
      name: token
      key: token
    type: BearerToken
---
${H}kind: CredentialBinding
metadata:
  name: client-token
spec:
  workloadID: apps/client
  credentialSource: token
  propagation:
    injection:
      selectors:
        - app: billing
`,
};

export type Files = Record<string, string>;

export function render(files: Files) {
  return renderPolicy(
    Object.entries(files).map(([path, text]) => ({ path, bytes: new TextEncoder().encode(text) })),
    { trustDomain: 'example.com', allowSecrets: true },
  );
}

export function plan(base: Files, head: Files) {
  return buildPlan({
    base: { ref: 'main', commit: 'a'.repeat(40) },
    head: { ref: 'feature', commit: 'b'.repeat(40) },
    path: '',
    baseResult: render(base),
    headResult: render(head),
  });
}

export function edit(files: Files, file: string, from: string, to: string): Files {
  const text = files[file]!;
  if (!text.includes(from)) throw new Error(`${file} does not contain ${from}`);
  return { ...files, [file]: text.replace(from, to) };
}
