import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  parseBundlePem,
  parseX509Svid,
  verifyX509Svid,
  X509SvidError,
} from '../../reconciler/identity/x509-svid.ts';
import { vectorPath } from '../support/shared.ts';

interface Case {
  name: string;
  certs: string;
  key: string;
  valid: boolean;
  expID?: string;
  expNumCerts?: number;
  expErrContains?: string;
}

const dir = (file: string) => vectorPath('x509svid-go-spiffe', file);
const read = (file: string) => readFileSync(dir(file), 'utf8');
const manifest = JSON.parse(read('manifest.json')) as { cases: Case[] };

describe('X509-SVID parsing agrees with go-spiffe TestParse (vectors read in place)', () => {
  it('reads all 17 cases', () => {
    expect(manifest.cases).toHaveLength(17);
  });

  it.each(manifest.cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const run = () => parseX509Svid(read(c.certs), read(c.key));
    if (c.valid) {
      const svid = run();
      expect(svid.spiffeId).toBe(c.expID);
      expect(svid.certificates).toHaveLength(c.expNumCerts!);
    } else {
      expect(run).toThrow(X509SvidError);
      expect(run).toThrow(c.expErrContains!);
    }
  });
});

describe('X509-SVID verification of the go-spiffe fixtures with a fixed clock', () => {
  // good-leaf-and-intermediate.pem: leaf valid 2020-03-24T14:07:30Z..15:07:40Z, signed by the intermediate.
  const [leaf, intermediate] = parseBundlePem(read('good-leaf-and-intermediate.pem'));
  const bundles = new Map([['example.org', [intermediate!]]]);
  const inside = new Date('2020-03-24T14:30:00Z');

  it('verifies inside the validity window against the bundle of the leaf trust domain', () => {
    const result = verifyX509Svid([leaf!], bundles, { now: inside });
    expect(result.spiffeId).toBe('spiffe://example.org/workload-1');
    expect(result.trustDomain).toBe('example.org');
    expect(result.path).toEqual([leaf, intermediate]);
  });

  it('rejects at notAfter + 1s as expired, and before notBefore as not yet valid', () => {
    const after = new Date(leaf!.notAfter.getTime() + 1000);
    expect(() => verifyX509Svid([leaf!], bundles, { now: after })).toThrow(/has expired/);
    const before = new Date(leaf!.notBefore.getTime() - 1000);
    expect(() => verifyX509Svid([leaf!], bundles, { now: before })).toThrow(/not yet valid/);
  });

  it('rejects these fixtures at the real current time: they all expired in 2020 or 2025', () => {
    expect(() => verifyX509Svid([leaf!], bundles)).toThrow(/has expired/);
  });

  it('selects the bundle by the leaf trust domain (C2)', () => {
    const other = new Map([['other.org', [intermediate!]]]);
    expect(() => verifyX509Svid([leaf!], other, { now: inside })).toThrow(
      /no X.509 bundle found for trust domain "example.org"/,
    );
  });

  it('rejects a chain whose bundle holds another CA (signed by unknown authority)', () => {
    const [foreignRoot] = parseBundlePem(read('good-leaf-only.pem'));
    const foreign = new Map([['example.org', [foreignRoot!]]]);
    expect(() => verifyX509Svid([leaf!, intermediate!], foreign, { now: inside })).toThrow(
      /signed by unknown authority/,
    );
  });

  it.each([
    ['wrong-leaf-ca-true.pem', 'leaf_ca'],
    ['wrong-leaf-cert-sign.pem', 'leaf_key_cert_sign'],
    ['wrong-leaf-crl-sign.pem', 'leaf_crl_sign'],
    ['wrong-leaf-no-digital-signature.pem', 'leaf_no_digital_signature'],
    ['wrong-leaf-empty-id.pem', 'no_uri_san'],
  ])('the verifier applies the leaf rules too: %s', (file, code) => {
    const certs = parseBundlePem(read(file));
    try {
      verifyX509Svid(certs, bundles, { now: inside });
      expect.unreachable('verification should fail');
    } catch (err) {
      expect(err).toBeInstanceOf(X509SvidError);
      expect((err as X509SvidError).code).toBe(code);
    }
  });
});
