/** What a user reads for the Secret rules and YAML merge keys: the field, the reason, and what to do. */
import { describe, expect, it } from 'vitest';
import { renderPolicy } from '../../reconciler/policy/render.ts';

const ENC = (data: string) =>
  `ENC[AES256_GCM,data:${data},iv:AAAAAAAAAAAAAAAAAAAAAA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]`;

function validate(text: string, allowSecrets = false) {
  return renderPolicy([{ path: 'p.yaml', bytes: new TextEncoder().encode(text) }], {
    trustDomain: 'example.com',
    allowSecrets,
  }).diagnostics.map(({ code, line, column, message, hint }) => ({ code, line, column, message, hint }));
}

const secret = (body: string) => `apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-key\n${body}`;

describe('Secret data must be base64 as the API server decodes it', () => {
  it('refuses the issue input at its key, naming Go’s offset and never the value', () => {
    const d = validate(secret('data:\n  token: "placeholder token: not base64!"\n'), true);
    expect(d).toEqual([
      {
        code: 'RT023',
        line: 6,
        column: 3,
        message:
          '"data.token": is not valid base64 (illegal base64 data at input byte 11), and the Kubernetes API server refuses such a Secret',
        hint: 'data values are base64 (standard alphabet, padded with "="); put plain text under stringData instead',
      },
    ]);
  });

  it('says when a value is SOPS ciphertext that lost its envelope', () => {
    expect(validate(secret(`data:\n  token: ${ENC('c2VjcmV0')}\n`), true)[0]?.hint).toBe(
      'the value is SOPS ciphertext but the Secret has no sops envelope: commit the file sops wrote, whole',
    );
  });
});

describe('a sops envelope counts only with encrypted values', () => {
  const envelope = 'sops:\n  lastmodified: "2024-01-01T00:00:00Z"\n  version: 3.9.0\n';

  it('accepts a Secret whose every value is SOPS ciphertext', () => {
    expect(
      validate(secret(`data:\n  a: ${ENC('c2VjcmV0')}\nstringData:\n  b: ${ENC('')}\n${envelope}`)),
    ).toEqual([]);
  });

  it('refuses plaintext next to a sops key, naming the fields', () => {
    const d = validate(
      secret(
        `stringData:\n  token: plain-text-value\n  other: ENC[not really]\n  ok: ${ENC('eA==')}\n${envelope}`,
      ),
    );
    expect(d).toEqual([
      {
        code: 'RT050',
        line: 6,
        column: 3,
        message:
          'Secret "api-key" has a sops envelope, but 2 value(s) are not SOPS-encrypted (stringData.token, stringData.other): their plaintext is committed to git',
        hint: 're-encrypt the file with sops (sops --encrypt --in-place), so every value is ENC[…]; --allow-plaintext-secrets accepts it as it is',
      },
    ]);
    expect(JSON.stringify(d)).not.toContain('plain-text-value');
  });
});

describe("kubectl's last-applied-configuration annotation is a copy of the Secret, values included", () => {
  const envelope = 'sops:\n  lastmodified: "2024-01-01T00:00:00Z"\n  version: 3.9.0\n';
  const withCopy = (copy: object, body: string) =>
    `apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-key\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '${JSON.stringify(copy)}'\n${body}`;
  const applied = (values: object) => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'api-key' },
    ...values,
  });

  it('refuses a SOPS Secret whose annotation still holds the values in clear (sops --encrypted-regex leaves it)', () => {
    const d = validate(
      withCopy(
        applied({ stringData: { token: 'Qx7-plain-token' }, data: { key: 'UXg3LXBsYWluLWtleQ==' } }),
        `stringData:\n  token: ${ENC('c2VjcmV0')}\ndata:\n  key: ${ENC('c2VjcmV0')}\n${envelope}`,
      ),
    );
    expect(d).toEqual([
      {
        code: 'RT050',
        line: 6,
        column: 5,
        message:
          'Secret "api-key" carries a kubectl.kubernetes.io/last-applied-configuration annotation, a copy of the Secret that kubectl apply wrote, with 2 value(s) not SOPS-encrypted (data.key, stringData.token): their plaintext is committed to git',
        hint: 'delete the annotation (a Secret exported with kubectl get keeps it; sops --encrypted-regex "^(data|stringData)$" leaves it in clear), or encrypt the file whole with sops; --allow-plaintext-secrets accepts it',
      },
    ]);
    expect(JSON.stringify(d)).not.toMatch(/Qx7-plain|UXg3LXBsYWlu/);
  });

  it('refuses a copy left behind when the values themselves were removed', () => {
    expect(
      validate(withCopy(applied({ stringData: { token: 'Qx7-plain-token' } }), 'type: Opaque\n')),
    ).toMatchObject([{ code: 'RT050', line: 6 }]);
  });

  it('refuses a copy that is not the JSON kubectl writes (cut short, or data as a string), never quoting it', () => {
    const encrypted = `stringData:\n  token: ${ENC('c2VjcmV0')}\n${envelope}`;
    const cut = JSON.stringify(applied({ stringData: { token: 'Qx7-plain-token' } })).slice(0, -2);
    const d = validate(
      `apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-key\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '${cut}'\n${encrypted}`,
    );
    expect(d).toEqual([
      {
        code: 'RT050',
        line: 6,
        column: 5,
        message:
          'Secret "api-key" carries a kubectl.kubernetes.io/last-applied-configuration annotation that is not the JSON object kubectl writes: a copy of the Secret cut short or edited may hold its values in clear, and this one cannot be checked',
        hint: 'delete the annotation, or encrypt the file whole with sops; --allow-plaintext-secrets accepts it',
      },
    ]);
    expect(JSON.stringify(d)).not.toContain('Qx7-plain');
    expect(
      validate(withCopy(applied({ stringData: 'token=Qx7-plain-token' }), encrypted)).map((x) => x.message),
    ).toEqual([expect.stringContaining('with 1 value(s) not SOPS-encrypted (stringData)')]);
  });

  it('accepts a copy whose values SOPS encrypted, one without values, and --allow-plaintext-secrets', () => {
    expect(
      validate(
        withCopy(
          applied({ stringData: { token: ENC('c2VjcmV0') } }),
          `stringData:\n  token: ${ENC('c2VjcmV0')}\n${envelope}`,
        ),
      ),
    ).toEqual([]);
    expect(validate(withCopy(applied({ type: 'Opaque' }), 'type: Opaque\n'))).toEqual([]);
    expect(
      validate(withCopy(applied({ stringData: { token: 'Qx7-plain-token' } }), 'type: Opaque\n'), true),
    ).toEqual([]);
  });
});

describe('YAML merge keys', () => {
  it('are reported once where they stand, with a hint that says they are not supported', () => {
    const d = validate(
      'apiVersion: core.riptides.io/v1alpha1\nkind: Service\nmetadata:\n  name: api\n  x: &a\n    address: api.internal\nspec:\n  addresses:\n    - <<: *a\n      port: 80\n',
    );
    expect(d.find((x) => x.message.includes('merge key'))).toEqual({
      code: 'RT020',
      line: 9,
      column: 7,
      message: 'YAML merge key "<<" in "spec.addresses[0]" is not supported',
      hint: 'YAML merge keys (<<: *anchor) are not supported in policy files; write the merged fields out in full',
    });
    expect(d.filter((x) => x.message.includes('<<'))).toHaveLength(1);
  });
});
