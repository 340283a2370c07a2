/**
 * No secret value, nor its base64 form, reaches any output: generated Secrets in every shape of change (created,
 * deleted, a whole data/stringData map added or removed, a key renamed, data moved to stringData, values
 * changed, nested deeper than the schema allows, a map turned into a scalar or a list), with the
 * last-applied-configuration annotation and SOPS envelopes, through plan's text, Markdown and JSON and through
 * every validate format, with plaintext Secrets allowed and refused.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildPlan, type Plan } from '../../reconciler/plan/plan.ts';
import { planJson, planMarkdown, planText } from '../../reconciler/plan/report.ts';
import { diffResources } from '../../reconciler/plan/resource-diff.ts';
import { OPAQUE_SOURCE_TYPES } from '../../reconciler/policy/kinds/credential-source.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import {
  formatGithub,
  formatJson,
  formatSarif,
  formatText,
} from '../../reconciler/policy/report/diagnostics-report.ts';
import type { ResourceSet } from '../../reconciler/policy/resource-set.ts';
import { BASE, type Files } from './plan-helpers.ts';

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/** Secret values: a marker no fixed text holds, then enough randomness that no digest or name holds them. */
const secretValue = fc.stringMatching(/^[A-Za-z0-9+/_.-]{12,24}$/).map((s) => `Qx${s}`);
const secretKey = fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/);
const valueMap = fc.dictionary(secretKey, secretValue, { minKeys: 1, maxKeys: 4 });

interface SecretShape {
  /** Plain values under data (committed base64-encoded) and stringData. */
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  lastApplied: boolean;
  sops: boolean;
  /** False: data values committed as they are, mostly not base64 (refused, and the refusal must not quote them). */
  encoded: boolean;
}

const shape: fc.Arbitrary<SecretShape> = fc.record(
  {
    data: valueMap,
    stringData: valueMap,
    lastApplied: fc.boolean(),
    sops: fc.boolean(),
    encoded: fc.boolean(),
  },
  { requiredKeys: ['lastApplied', 'sops', 'encoded'] },
);

const b64 = (s: string) => Buffer.from(s).toString('base64');
/** SOPS's encrypted form; the "ciphertext" here is the plain value, so a leak of either shows. */
const enc = (s: string) =>
  `ENC[AES256_GCM,data:${b64(s)},iv:AAAAAAAAAAAAAAAAAAAAAA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]`;

/** The Secret document for a shape: JSON, which is YAML. */
function secretDoc(s: SecretShape): string {
  const mapValues = (m: Record<string, string> | undefined, f: (v: string) => string) =>
    m && Object.fromEntries(Object.entries(m).map(([k, v]) => [k, f(v)]));
  const data = mapValues(s.data, s.sops ? enc : s.encoded ? b64 : (v) => v);
  const stringData = mapValues(s.stringData, s.sops ? enc : (v) => v);
  const doc: Record<string, unknown> = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'api-key', namespace: 'riptides-system' },
    type: 'Opaque',
    ...(data ? { data } : {}),
    ...(stringData ? { stringData } : {}),
  };
  if (s.lastApplied)
    (doc.metadata as Record<string, unknown>).annotations = { [LAST_APPLIED]: JSON.stringify(doc) };
  if (s.sops)
    doc.sops = {
      age: [{ recipient: 'age1examplerecipient', enc: `-----BEGIN AGE ENCRYPTED FILE-----\n${b64('k')}` }],
      lastmodified: '2024-01-01T00:00:00Z',
      mac: enc('mac'),
      version: '3.9.0',
    };
  return JSON.stringify(doc, null, 1);
}

const values = (s: SecretShape | null) => [
  ...Object.values(s?.data ?? {}),
  ...Object.values(s?.stringData ?? {}),
];

/** Head as a change of base: the shapes a reviewer meets, and arbitrary ones. */
function changeOf(base: SecretShape | null): fc.Arbitrary<SecretShape | null> {
  const arbitrary = fc.option(shape, { nil: null });
  if (!base) return arbitrary;
  const renameKey = (m: Record<string, string> | undefined) =>
    m && Object.fromEntries(Object.entries(m).map(([k, v]) => [`${k}-renamed`, v]));
  return fc.oneof(
    arbitrary,
    fc.constant(null), // deleted
    fc.constant({ ...base, data: undefined }), // whole data map removed
    fc.constant({ ...base, stringData: undefined }),
    valueMap.map((data) => ({ ...base, data })), // whole map replaced or added
    fc.constant({ ...base, data: renameKey(base.data), stringData: renameKey(base.stringData) }),
    fc.constant({ ...base, data: undefined, stringData: { ...base.data, ...base.stringData } }), // data → stringData
    fc.constant({ ...base, lastApplied: !base.lastApplied }),
    fc.constant({ ...base, sops: !base.sops }),
  );
}

const withSecret = (s: SecretShape | null): Files => (s ? { ...BASE, 'secret.yaml': secretDoc(s) } : BASE);

function render(files: Files, allowSecrets: boolean) {
  return renderPolicy(
    Object.entries(files).map(([path, text]) => ({ path, bytes: new TextEncoder().encode(text) })),
    { trustDomain: 'example.com', allowSecrets },
  );
}

function planOutputs(plan: Plan): string[] {
  return [planText(plan), planMarkdown(plan), planJson(plan)];
}

function expectNoneOf(secrets: string[], outputs: string[], context: string) {
  for (const v of secrets) {
    for (const form of [v, b64(v)]) {
      for (const out of outputs) expect(out.includes(form), `${context}: ${form} in\n${out}`).toBe(false);
    }
  }
}

/** Any YAML-like shape with secret values at its leaves: maps, lists, scalars, nested at any depth. */
const anyShape: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    secretValue,
    fc.array(tie('node'), { maxLength: 3 }),
    fc.dictionary(secretKey, tie('node'), { maxKeys: 3 }),
  ),
})).node;

/** Every string in `v`, at any depth. */
const leaves = (v: unknown): string[] =>
  typeof v === 'string' ? [v] : v && typeof v === 'object' ? Object.values(v).flatMap(leaves) : [];

/** A plan holding only these resource changes. */
const planOf = (resources: Plan['resources']): Plan => ({
  base: { ref: 'main', commit: 'a'.repeat(40), valid: true },
  head: { ref: 'feature', commit: 'b'.repeat(40), valid: true },
  path: '',
  diagnostics: [],
  resources,
  programs: [],
  access: { added: [], removed: [], changed: [] },
  risks: [],
  accessLost: { workloads: [], destinations: [] },
  notes: [],
});

describe('no secret value reaches any output (property)', () => {
  it('through validate and plan, in every format, for every shape of change', () => {
    fc.assert(
      fc.property(
        fc.option(shape, { nil: null }).chain((base) => fc.tuple(fc.constant(base), changeOf(base))),
        fc.boolean(),
        ([base, head], allowSecrets) => {
          const headResult = render(withSecret(head), allowSecrets);
          const plan = buildPlan({
            base: { ref: 'main', commit: 'a'.repeat(40) },
            head: { ref: 'feature', commit: 'b'.repeat(40) },
            path: '',
            baseResult: render(withSecret(base), allowSecrets),
            headResult,
          });
          const outputs = [
            ...planOutputs(plan),
            formatText(headResult.diagnostics),
            formatJson(headResult.diagnostics),
            formatGithub(headResult.diagnostics),
            formatSarif(headResult.diagnostics, '0.0.0'),
          ];
          expectNoneOf([...values(base), ...values(head)], outputs, JSON.stringify({ base, head }));
          // The property is not vacuous: a Secret that changed shows up, masked.
          if (allowSecrets && head && JSON.stringify(base) !== JSON.stringify(head))
            expect(planText(plan)).toContain('Secret/riptides-system/api-key');
        },
      ),
      { numRuns: 300 },
    );
  });

  it('in diffs of shapes no schema allows: nested maps, lists, scalars in place of maps, at any depth', () => {
    const secret = fc.record(
      {
        data: anyShape,
        stringData: anyShape,
        annotations: fc.record({ [LAST_APPLIED]: anyShape }),
      },
      { requiredKeys: [] },
    );
    const set = (s: Record<string, unknown> | null): ResourceSet => ({
      identities: [],
      services: [],
      sources: [],
      bindings: [],
      workloadCredentials: [],
      secrets: s
        ? [
            {
              value: {
                apiVersion: 'v1',
                kind: 'Secret',
                metadata: {
                  name: 'api-key',
                  ...(s.annotations ? { annotations: s.annotations as Record<string, string> } : {}),
                },
                ...(s.data !== undefined ? { data: s.data as Record<string, string> } : {}),
                ...(s.stringData !== undefined ? { stringData: s.stringData as Record<string, string> } : {}),
              },
              file: 'secret.yaml',
              doc: 0,
              key: 'Secret/riptides-system/api-key',
            },
          ]
        : [],
    });
    fc.assert(
      fc.property(fc.option(secret, { nil: null }), fc.option(secret, { nil: null }), (base, head) => {
        const plan = planOf(diffResources(set(base), set(head)));
        const secrets = [...leaves(base), ...leaves(head)];
        expectNoneOf(secrets, planOutputs(plan), JSON.stringify({ base, head }));
        // Not vacuous: a created Secret with values shows them, masked.
        if (!base && head && leaves(head).length)
          expect(plan.resources[0]!.fields.some((f) => f.secret)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe('no value of a provider whose fields are not known reaches any output (property)', () => {
  it('every value under spec.<azure|oauth2|oci|rfc7523|rfc8693> of a CredentialSource, in every shape of change', () => {
    const source = fc.record({
      provider: fc.constantFrom(...OPAQUE_SOURCE_TYPES),
      fields: fc.dictionary(secretKey, anyShape, { minKeys: 1, maxKeys: 4 }),
    });
    const set = (s: { provider: string; fields: Record<string, unknown> } | null): ResourceSet => ({
      identities: [],
      services: [],
      sources: s
        ? [
            {
              value: {
                apiVersion: 'core.riptides.io/v1alpha1',
                kind: 'CredentialSource',
                metadata: { name: 'partner-api', namespace: 'riptides-system' },
                spec: { [s.provider]: s.fields },
              } as never,
              file: 'sources.yaml',
              doc: 0,
              key: 'CredentialSource/riptides-system/partner-api',
            },
          ]
        : [],
      bindings: [],
      workloadCredentials: [],
      secrets: [],
    });
    fc.assert(
      fc.property(fc.option(source, { nil: null }), fc.option(source, { nil: null }), (base, head) => {
        const plan = planOf(diffResources(set(base), set(head)));
        const secrets = [...leaves(base?.fields), ...leaves(head?.fields)];
        expectNoneOf(secrets, planOutputs(plan), JSON.stringify({ base, head }));
        // Not vacuous: a created source with values shows where they are, masked.
        if (!base && head && leaves(head.fields).length)
          expect(plan.resources[0]!.fields.some((f) => f.secret)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe('a Secret value that YAML reads as a tag or an alias', () => {
  // Unquoted, `!…` is a YAML tag and `*…` an alias: the parser fails on the value itself, and its message
  // must not carry it into any format.
  const TAG = /^(unknown|invalid) YAML tag: a value that starts with "!" is read as a tag; quote the value/;
  const ALIAS = /^unknown YAML alias: a value that starts with "\*" is read as an alias; quote the value/;
  const cases: Array<[string, RegExp]> = [
    ['!Qx7hunter2Secret', TAG],
    ['!!Qx7hunter2Secret', TAG],
    ['!<Qx7hunter2Secret>', TAG],
    ['!Qx7hunter2Secret%zz', TAG],
    ['*Qx7hunter2Secret', ALIAS],
    ['!Qx7hunter2Secret{2}', /^tag suffix cannot contain flow indicator characters$/],
  ];
  for (const [value, said] of cases)
    it(`${value}: the diagnostic says where and why, never the value`, () => {
      const head = render(
        {
          ...BASE,
          'secret.yaml': `apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-key\nstringData:\n  password: ${value}\n`,
        },
        false,
      );
      const plan = buildPlan({
        base: { ref: 'main', commit: 'a'.repeat(40) },
        head: { ref: 'feature', commit: 'b'.repeat(40) },
        path: '',
        baseResult: render(BASE, false),
        headResult: head,
      });
      const outputs = [
        ...planOutputs(plan),
        formatText(head.diagnostics),
        formatJson(head.diagnostics),
        formatGithub(head.diagnostics),
        formatSarif(head.diagnostics, '0.0.0'),
      ];
      for (const out of outputs) expect(out).not.toContain('Qx7hunter2');
      expect(head.diagnostics).toHaveLength(1);
      const [d] = head.diagnostics;
      expect(d).toMatchObject({ code: 'RT003', file: 'secret.yaml', line: 6, severity: 'error' });
      expect(d!.message).toMatch(said);
    });
});
