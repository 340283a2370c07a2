/** Checks of one resource's own fields that schemas cannot express: workload IDs, source and Service fields. */
import {
  parseSpiffeId,
  reservedWorkloadPath,
  validatePath,
  workloadSpiffeId,
} from '../identity/spiffe-id.ts';
import type { NodePath } from './diagnostics.ts';
import {
  checkAddress,
  checkCidr,
  checkHttpUrl,
  checkRoleArn,
  STS_MAX_SECONDS,
  STS_MIN_SECONDS,
  seconds,
} from './field-rules.ts';
import {
  type CredentialSource,
  isSopsEncrypted,
  type Secret,
  type Service,
  sourceType,
  UNSUPPORTED_SOURCE_TYPES,
} from './kinds/index.ts';
import type { Reporter } from './reporter.ts';
import type { Located } from './resources.ts';
import { LAST_APPLIED_ANNOTATION } from './secret-fields.ts';

export function checkWorkloadId(
  rep: Reporter,
  r: Located<unknown>,
  path: NodePath,
  workloadID: string,
  trustDomain: string,
): boolean {
  if (workloadID === '') {
    rep.at('RT031', 'workloadID must not be empty', r, path);
    return false;
  }
  if (workloadID.startsWith('/')) {
    rep.at('RT031', `workloadID "${workloadID}" must not start with "/"`, r, path, {
      hint: `write "${workloadID.replace(/^\/+/, '')}"`,
    });
    return false;
  }
  const reason = validatePath(`/${workloadID}`);
  if (reason) {
    const parsed = parseSpiffeId(`spiffe://x/${workloadID}`);
    rep.at(
      'RT031',
      `workloadID "${workloadID}" is not a valid SPIFFE ID path: ${parsed.ok ? reason : parsed.message}`,
      r,
      path,
      {
        hint: 'use "/"-separated segments of letters, digits, ".", "-" and "_"',
      },
    );
    return false;
  }
  const full = workloadSpiffeId(trustDomain, workloadID);
  if (!full.ok) {
    rep.at('RT031', `spiffe://${trustDomain}/${workloadID} ${full.message}`, r, path);
    return false;
  }
  const reserved = reservedWorkloadPath(workloadID);
  if (reserved) {
    rep.at('RT031', `workloadID "${workloadID}" ${reserved}`, r, path, {
      hint: 'choose a workloadID outside riptides/daemon/ and riptides/reconciler: a workload holding one could act as that agent or as the reconciler',
    });
    return false;
  }
  return true;
}

export function checkSource(rep: Reporter, r: Located<CredentialSource>) {
  const spec = r.value.spec;
  const type = sourceType(spec);
  if ((UNSUPPORTED_SOURCE_TYPES as readonly string[]).includes(type)) {
    rep.at(
      'RT051',
      `${type} credential sources are not yet supported: nothing will be fetched for "${r.value.metadata.name}"`,
      r,
      ['spec', type],
      { at: 'key', hint: 'use a kubernetes, vault or aws source, or expect the bindings to report FAILED' },
    );
  }
  if (spec.aws) {
    const problem = checkRoleArn(spec.aws.roleArn);
    if (problem) rep.at('RT033', problem, r, ['spec', 'aws', 'roleArn']);
    if (spec.aws.lifetime) {
      const s = seconds(spec.aws.lifetime);
      if (s < STS_MIN_SECONDS || s > STS_MAX_SECONDS) {
        rep.at(
          'RT032',
          `lifetime ${spec.aws.lifetime} is outside what STS grants (${STS_MIN_SECONDS}s..${STS_MAX_SECONDS}s)`,
          r,
          ['spec', 'aws', 'lifetime'],
          { hint: "the role's MaxSessionDuration may lower the upper bound further" },
        );
      }
    }
    if (spec.aws.idTokenLifetime && seconds(spec.aws.idTokenLifetime) < 1) {
      rep.at('RT032', 'idTokenLifetime must be at least 1s', r, ['spec', 'aws', 'idTokenLifetime']);
    }
  }
  if (spec.vault) {
    const { error, plaintext } = checkHttpUrl(spec.vault.address);
    if (error) rep.at('RT034', `vault.address: ${error}`, r, ['spec', 'vault', 'address']);
    else if (plaintext)
      rep.at(
        'RT054',
        'vault.address uses plain http: Vault tokens and secrets would cross the network unencrypted',
        r,
        ['spec', 'vault', 'address'],
        { hint: 'use https' },
      );
  }
}

export function checkService(rep: Reporter, r: Located<Service>) {
  r.value.spec.addresses?.forEach((a, i) => {
    const problem = checkAddress(a.address);
    if (problem) rep.at('RT035', problem, r, ['spec', 'addresses', i, 'address']);
    a.networkPrefixes?.forEach((p, j) => {
      const bad = checkCidr(p);
      if (bad) rep.at('RT035', bad, r, ['spec', 'addresses', i, 'networkPrefixes', j]);
    });
  });
}

/**
 * The `data`/`stringData` fields whose values kubectl's last-applied-configuration annotation (JSON: the
 * whole object as applied) holds other than as SOPS ciphertext. Empty when there is no such annotation or when
 * SOPS encrypted the annotation itself; 'unreadable' when it is not the JSON object kubectl writes (a copy cut
 * short or edited by hand may still hold the values in clear, and cannot be shown not to).
 */
function lastAppliedPlaintext(secret: Secret): string[] | 'unreadable' {
  const annotations = secret.metadata.annotations as Record<string, unknown> | undefined;
  if (!annotations || !Object.hasOwn(annotations, LAST_APPLIED_ANNOTATION)) return [];
  const copy = annotations[LAST_APPLIED_ANNOTATION];
  if (typeof copy === 'string' && isSopsEncrypted(copy)) return [];
  if (typeof copy !== 'string') return 'unreadable';
  let parsed: unknown;
  try {
    parsed = JSON.parse(copy);
  } catch {
    return 'unreadable';
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return 'unreadable';
  const out: string[] = [];
  for (const field of ['data', 'stringData'] as const) {
    const values = (parsed as Record<string, unknown>)[field];
    if (values === undefined || values === null) continue;
    if (typeof values !== 'object' || Array.isArray(values)) {
      out.push(field);
      continue;
    }
    for (const [key, value] of Object.entries(values))
      if (!isSopsEncrypted(value)) out.push(`${field}.${key}`);
  }
  return out;
}

/**
 * A Secret committed to git holds plaintext unless SOPS encrypted it: a `sops` envelope alone proves nothing
 * (it stays when a value is edited by hand, and `unencrypted_suffix` / `encrypted_regex` leave values out), so
 * every `data` and `stringData` value must have SOPS's encrypted form. Messages name fields, never values.
 */
export function checkSecret(rep: Reporter, r: Located<Secret>, allowPlaintext: boolean) {
  if (allowPlaintext) return;
  const plaintext: NodePath[] = [];
  for (const field of ['data', 'stringData'] as const)
    for (const [key, value] of Object.entries(r.value[field] ?? {}))
      if (!r.value.sops || !isSopsEncrypted(value)) plaintext.push([field, key]);
  const copied = lastAppliedPlaintext(r.value);
  if (copied === 'unreadable')
    rep.at(
      'RT050',
      `Secret "${r.value.metadata.name}" carries a ${LAST_APPLIED_ANNOTATION} annotation that is not the JSON object kubectl writes: a copy of the Secret cut short or edited may hold its values in clear, and this one cannot be checked`,
      r,
      ['metadata', 'annotations', LAST_APPLIED_ANNOTATION],
      {
        at: 'key',
        hint: 'delete the annotation, or encrypt the file whole with sops; --allow-plaintext-secrets accepts it',
      },
    );
  else if (copied.length) {
    const shownCopy =
      copied.length > 3
        ? `${copied.slice(0, 3).join(', ')} and ${copied.length - 3} more`
        : copied.join(', ');
    rep.at(
      'RT050',
      `Secret "${r.value.metadata.name}" carries a ${LAST_APPLIED_ANNOTATION} annotation, a copy of the Secret that kubectl apply wrote, with ${copied.length} value(s) not SOPS-encrypted (${shownCopy}): their plaintext is committed to git`,
      r,
      ['metadata', 'annotations', LAST_APPLIED_ANNOTATION],
      {
        at: 'key',
        hint: 'delete the annotation (a Secret exported with kubectl get keeps it; sops --encrypted-regex "^(data|stringData)$" leaves it in clear), or encrypt the file whole with sops; --allow-plaintext-secrets accepts it',
      },
    );
  }
  const first = plaintext[0];
  if (!first) return;
  const fields = plaintext.map((p) => p.join('.'));
  const shown =
    fields.length > 3 ? `${fields.slice(0, 3).join(', ')} and ${fields.length - 3} more` : fields.join(', ');
  rep.at(
    'RT050',
    r.value.sops
      ? `Secret "${r.value.metadata.name}" has a sops envelope, but ${plaintext.length} value(s) are not SOPS-encrypted (${shown}): their plaintext is committed to git`
      : `Secret "${r.value.metadata.name}" holds ${plaintext.length} plaintext value(s) committed to git (${shown})`,
    r,
    first,
    {
      at: 'key',
      hint: r.value.sops
        ? 're-encrypt the file with sops (sops --encrypt --in-place), so every value is ENC[…]; --allow-plaintext-secrets accepts it as it is'
        : 'create the Secret in the cluster (kubectl create secret) or in --secrets-dir, or encrypt it with SOPS; --allow-plaintext-secrets accepts it',
    },
  );
}
