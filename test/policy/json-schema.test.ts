/**
 * The generated JSON Schema, read by a real JSON Schema validator (Ajv, draft-07) as an editor would: every
 * sample policy passes, one typo gives one precise error, and the rules the schema carries (role ARN, STS
 * lifetime, workload ID path, Secret data, exactly one scope) agree with the validator's own checks.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { decodeSecretData, SECRET_DATA_PATTERN } from '../../reconciler/encoding/base64.ts';
import { validatePath } from '../../reconciler/identity/spiffe-id.ts';
import {
  checkRoleArn,
  STS_LIFETIME_PATTERN,
  STS_MAX_SECONDS,
  STS_MIN_SECONDS,
} from '../../reconciler/policy/field-rules.ts';
import { combinedJsonSchema } from '../../reconciler/policy/json-schema.ts';
import { repoRoot } from '../support/shared.ts';

const ajv = new Ajv({ allErrors: true, strict: false });
const check = ajv.compile(combinedJsonSchema());

/**
 * What an editor shows. Ajv (allErrors) also reports each failing `if` as a wrapper ("must match then
 * schema") next to the real error, and the failures of every branch of a failing `oneOf` next to the `oneOf`
 * error; yaml-language-server reports the real error, and the `oneOf` alone.
 */
function errors(doc: unknown): ErrorObject[] {
  check(doc);
  const all = check.errors ?? [];
  const combinators = all
    .filter((e) => e.keyword === 'oneOf' || e.keyword === 'anyOf')
    .map((e) => `${e.schemaPath}/`);
  return all.filter((e) => e.keyword !== 'if' && !combinators.some((c) => e.schemaPath.startsWith(c)));
}

const H = { apiVersion: 'core.riptides.io/v1alpha1' };
const identity = (spec: Record<string, unknown> = {}) => ({
  ...H,
  kind: 'WorkloadIdentity',
  metadata: { name: 'api' },
  spec: {
    workloadID: 'apps/api',
    scope: { daemonGroup: { id: 'g' } },
    selectors: [{ 'process:name': 'api' }],
    connection: { tls: { mode: 'MUTUAL' } },
    ...spec,
  },
});
const awsSource = (aws: Record<string, unknown>) => ({
  ...H,
  kind: 'CredentialSource',
  metadata: { name: 'aws' },
  spec: { aws: { roleArn: 'arn:aws:iam::123456789012:role/app', ...aws } },
});

describe('the root JSON Schema', () => {
  it('accepts every document of the sample policies', () => {
    const dir = join(repoRoot, 'policies');
    let documents = 0;
    for (const file of readdirSync(dir, { recursive: true }) as string[]) {
      if (!/\.ya?ml$/.test(file) || file.endsWith('riptides.config.yaml')) continue;
      for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
        documents++;
        expect(errors(doc.toJS()), file).toEqual([]);
      }
    }
    expect(documents).toBeGreaterThan(20);
  });

  it('gives one precise error for one typo, checking the document against its own kind only', () => {
    const { connection, ...spec } = identity().spec;
    const typo = { ...identity(), spec: { ...spec, conection: connection } };
    expect(errors(typo)).toEqual([
      expect.objectContaining({
        instancePath: '/spec',
        keyword: 'additionalProperties',
        params: { additionalProperty: 'conection' },
      }),
    ]);
    expect(errors({ ...identity(), kind: 'WorkloadIdentty' })).toEqual([
      expect.objectContaining({ instancePath: '/kind', keyword: 'enum' }),
    ]);
    // Kinds that validation ignores with a warning are not errors here either.
    expect(errors({ ...H, kind: 'Daemon', metadata: { name: 'd' } })).toEqual([]);
  });

  it('says exactly one scope and exactly one credential provider', () => {
    const two = identity({ scope: { daemonGroup: { id: 'g' }, agent: { id: 'a' } } });
    expect(errors(two)).toEqual([expect.objectContaining({ instancePath: '/spec/scope', keyword: 'oneOf' })]);
    expect(errors(identity({ scope: { daemon: { id: 'd' } } }))).toEqual([]);
    const both = awsSource({});
    (both.spec as Record<string, unknown>).vault = {
      address: 'https://v',
      path: 'p',
      role: 'r',
      type: { token: { source: 'k' } },
    };
    expect(errors(both)).toEqual([expect.objectContaining({ instancePath: '/spec', keyword: 'oneOf' })]);
  });

  it('carries the role ARN pattern', () => {
    expect(errors(awsSource({}))).toEqual([]);
    expect(errors(awsSource({ roleArn: 'arn:aws:iam::12345:role/app' }))).toEqual([
      expect.objectContaining({ instancePath: '/spec/aws/roleArn', keyword: 'pattern' }),
    ]);
    for (const arn of [
      'arn:aws:iam::123456789012:role/app',
      'arn:aws-us-gov:iam::123456789012:role/path/app',
      'arn:aws:iam::123456789012:user/app',
      'arn:aws:iam:us-east-1:123456789012:role/app',
      'arn:aws:iam::123456789012:role/',
    ])
      expect(errors(awsSource({ roleArn: arn })).length === 0, arn).toBe(checkRoleArn(arn) === null);
  });

  it('carries the STS lifetime range, agreeing with validation on every number of seconds', () => {
    expect(errors(awsSource({ lifetime: '899s' }))).toEqual([
      expect.objectContaining({ instancePath: '/spec/aws/lifetime', keyword: 'pattern' }),
    ]);
    expect(errors(awsSource({ lifetime: '43200s' }))).toEqual([]);
    const pattern = new RegExp(STS_LIFETIME_PATTERN);
    for (let s = 0; s <= 50_000; s++)
      if (pattern.test(`${s}s`) !== (s >= STS_MIN_SECONDS && s <= STS_MAX_SECONDS)) throw new Error(`${s}s`);
    expect(pattern.test('0900s')).toBe(true);
    expect(pattern.test('900')).toBe(false);
  });

  it('carries the workload ID path rule', () => {
    const pattern = new RegExp(
      (
        combinedJsonSchema().definitions as Record<
          string,
          { properties: { spec: { properties: { workloadID: { pattern: string } } } } }
        >
      ).WorkloadIdentity!.properties.spec.properties.workloadID.pattern,
    );
    for (const id of [
      'apps/api',
      'a',
      'a.b/c_d-e',
      '.x',
      '..x',
      'a/./b',
      'a/../b',
      '.',
      '..',
      '/a',
      'a/',
      'a//b',
      'a b',
      'é',
      '',
    ])
      expect(pattern.test(id), id).toBe(id !== '' && validatePath(`/${id}`) === null);
    expect(errors(identity({ workloadID: 'apps/../api' }))).toEqual([
      expect.objectContaining({ instancePath: '/spec/workloadID', keyword: 'pattern' }),
    ]);
  });

  it('says Secret data is base64 or SOPS ciphertext, agreeing with the API server decoder', () => {
    const secret = (token: string, sops = false) => ({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 's' },
      data: { token },
      ...(sops ? { sops: { version: '3.9.0' } } : {}),
    });
    expect(errors(secret('c2VjcmV0'))).toEqual([]);
    expect(errors(secret('placeholder token: not base64!')).map((e) => e.instancePath)).toContain(
      '/data/token',
    );
    expect(
      errors(
        secret(
          'ENC[AES256_GCM,data:3q2+7w==,iv:AAAAAAAAAAAAAAAAAAAAAA==,tag:AAAAAAAAAAAAAAAAAAAAAA==,type:str]',
          true,
        ),
      ),
    ).toEqual([]);
    // Every string of up to 7 characters over an alphabet that exercises quanta, padding and line breaks.
    const pattern = new RegExp(SECRET_DATA_PATTERN);
    const alphabet = ['A', 'b', '=', '\n', '-'];
    const all = (n: number): string[] =>
      n === 0 ? [''] : all(n - 1).flatMap((s) => alphabet.map((c) => s + c));
    let checked = 0;
    for (let n = 0; n <= 7; n++)
      for (const s of all(n)) {
        checked++;
        if (pattern.test(s) !== decodeSecretData(s).ok) throw new Error(JSON.stringify(s));
      }
    expect(checked).toBe(97_656);
  });
});
