/** The test servers answer as the real APIs document, so the providers are tested against the right thing. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CredEnv, KUBE_TOKEN, OPEN_ROLE_ARN, SPIFFE_ID, startCredEnv } from '../support/cred-env.ts';
import { call } from '../support/cred-http.ts';

let env: CredEnv;

beforeAll(async () => {
  env = await startCredEnv();
});
afterAll(async () => {
  await env.close();
});

async function jwt(audience = ['example-audience'], ttlSeconds = 300): Promise<string> {
  return env.authority.jwt.mint({ spiffeId: SPIFFE_ID, audience, ttlSeconds });
}

describe('kubernetes test server', () => {
  it('answers 401, 403 and 404 with kind: Status bodies', async () => {
    const url = `${env.kube.url}/api/v1/namespaces/riptides-system/secrets/missing`;
    const unauth = await call(url, env.ca);
    expect(unauth.status).toBe(401);
    expect(JSON.parse(unauth.body)).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'Unauthorized',
      reason: 'Unauthorized',
      code: 401,
    });
    const notFound = await call(url, env.ca, { headers: { authorization: `Bearer ${KUBE_TOKEN}` } });
    expect(notFound.status).toBe(404);
    expect(JSON.parse(notFound.body)).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'secrets "missing" not found',
      reason: 'NotFound',
      details: { name: 'missing', kind: 'secrets' },
      code: 404,
    });
    const forbidden = await call(`${env.kube.url}/api/v1/namespaces/default/secrets/x`, env.ca, {
      headers: { authorization: 'Bearer other-token' },
    });
    expect(forbidden.status).toBe(403);
    expect(JSON.parse(forbidden.body).message).toBe(
      'secrets "x" is forbidden: User "system:serviceaccount:default:nobody" cannot get resource "secrets" in API group "" in the namespace "default"',
    );
  });

  it('streams watch events from a resourceVersion', async () => {
    env.kube.putSecret('apps', 'w', { k: 'v1' });
    const rv = JSON.parse(
      (
        await call(`${env.kube.url}/api/v1/namespaces/apps/secrets/w`, env.ca, {
          headers: { authorization: `Bearer ${KUBE_TOKEN}` },
        })
      ).body,
    ).metadata.resourceVersion as string;
    env.kube.putSecret('apps', 'w', { k: 'v2' });
    env.kube.deleteSecret('apps', 'w');
    const watch = await call(
      `${env.kube.url}/api/v1/namespaces/apps/secrets?watch=true&fieldSelector=metadata.name%3Dw&resourceVersion=${rv}&timeoutSeconds=1`,
      env.ca,
      { headers: { authorization: `Bearer ${KUBE_TOKEN}` } },
    );
    const events = watch.body
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(events.map((e) => e.type)).toEqual(['MODIFIED', 'DELETED']);
    expect(Buffer.from(events[0].object.data.k, 'base64').toString()).toBe('v2');
    expect(Number(events[1].object.metadata.resourceVersion)).toBeGreaterThan(
      Number(events[0].object.metadata.resourceVersion),
    );
  });
});

describe('vault test server', () => {
  const login = async (body: unknown, mount = 'jwt') =>
    call(`${env.vault.url}/v1/auth/${mount}/login`, env.ca, { method: 'POST', body: JSON.stringify(body) });

  it('verifies the JWT against the issuer and the role, with Vault’s error bodies', async () => {
    expect(JSON.parse((await login({ role: 'nope', jwt: await jwt() })).body)).toEqual({
      errors: ['role "nope" could not be found'],
    });
    const wrongAud = await login({ role: 'openai-apikeys', jwt: await jwt(['other']) });
    expect(wrongAud.status).toBe(400);
    expect(JSON.parse(wrongAud.body).errors[0]).toBe(
      'error validating claims: aud claim does not match any bound audience',
    );
    const forged = (await jwt()).replace(/.{4}$/, 'AAAA');
    expect(JSON.parse((await login({ role: 'openai-apikeys', jwt: forged })).body).errors[0]).toMatch(
      /^error validating token/,
    );
    const ok = JSON.parse((await login({ role: 'openai-apikeys', jwt: await jwt() })).body);
    expect(ok.auth).toMatchObject({ lease_duration: 3600, renewable: true });
    expect(ok.auth.client_token).toMatch(/^hvs\./);
  });

  it('accepts a token expired less than 150 s + 60 s ago, and refuses one expired longer', async () => {
    const token = await jwt(['example-audience'], 10);
    env.vault.skewMs = 200_000;
    expect((await login({ role: 'openai-apikeys', jwt: token })).status).toBe(200);
    env.vault.skewMs = 230_000;
    const late = await login({ role: 'openai-apikeys', jwt: token });
    env.vault.skewMs = 0;
    expect(late.status).toBe(400);
    expect(JSON.parse(late.body).errors[0]).toMatch(/exp/);
  });

  it('checks X-Vault-Token, grants leases, caps renewals at the max TTL, revokes', async () => {
    env.vaultSecrets['srv/capped'] = {
      leaseDuration: 60,
      maxTtl: 90,
      renewable: true,
      generate: () => ({ k: 'v' }),
    };
    const token = JSON.parse((await login({ role: 'any-workload', jwt: await jwt() })).body).auth
      .client_token as string;
    const denied = await call(`${env.vault.url}/v1/srv/capped`, env.ca);
    expect([denied.status, JSON.parse(denied.body)]).toEqual([403, { errors: ['permission denied'] }]);
    const read = JSON.parse(
      (await call(`${env.vault.url}/v1/srv/capped`, env.ca, { headers: { 'X-Vault-Token': token } })).body,
    );
    expect(read).toMatchObject({ lease_duration: 60, renewable: true, data: { k: 'v' } });
    const renew = async () =>
      JSON.parse(
        (
          await call(`${env.vault.url}/v1/sys/leases/renew`, env.ca, {
            method: 'PUT',
            headers: { 'X-Vault-Token': token },
            body: JSON.stringify({ lease_id: read.lease_id, increment: 60 }),
          })
        ).body,
      );
    expect((await renew()).lease_duration).toBe(60);
    env.vault.skewMs = 50_000;
    const capped = await renew();
    env.vault.skewMs = 0;
    // 90 s max TTL, 50 s (plus the test's own milliseconds) gone: about 40 s left, not the 60 asked for.
    expect(capped.lease_duration).toBeGreaterThanOrEqual(39);
    expect(capped.lease_duration).toBeLessThanOrEqual(40);
    expect(capped.warnings[0]).toContain('capped');
    const revoke = await call(`${env.vault.url}/v1/sys/leases/revoke`, env.ca, {
      method: 'PUT',
      headers: { 'X-Vault-Token': token },
      body: JSON.stringify({ lease_id: read.lease_id }),
    });
    expect(revoke.status).toBe(204);
    expect(JSON.parse(JSON.stringify(await renew()))).toEqual({ errors: ['lease not found'] });
    expect(
      (await call(`${env.vault.url}/v1/srv/nothing`, env.ca, { headers: { 'X-Vault-Token': token } })).status,
    ).toBe(404);
  });
});

describe('sts test server', () => {
  const assume = async (fields: Record<string, string>) =>
    call(`${env.sts.url}/`, env.ca, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        Action: 'AssumeRoleWithWebIdentity',
        Version: '2011-06-15',
        ...fields,
      }).toString(),
    });

  it('returns the documented XML, and ValidationError for a bad RoleSessionName or DurationSeconds', async () => {
    const token = await jwt(['sts.amazonaws.com']);
    const ok = await assume({ RoleArn: OPEN_ROLE_ARN, RoleSessionName: 'app1', WebIdentityToken: token });
    expect(ok.status).toBe(200);
    expect(ok.type).toBe('text/xml');
    expect(ok.body).toMatch(
      /<AssumeRoleWithWebIdentityResponse xmlns="https:\/\/sts.amazonaws.com\/doc\/2011-06-15\/">[\s\S]*<Credentials>[\s\S]*<SessionToken>[\s\S]*<SecretAccessKey>[\s\S]*<Expiration>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ<\/Expiration>[\s\S]*<AccessKeyId>ASIA/,
    );
    const badName = await assume({
      RoleArn: OPEN_ROLE_ARN,
      RoleSessionName: 'has space',
      WebIdentityToken: token,
    });
    expect(badName.status).toBe(400);
    expect(badName.body).toContain('<Code>ValidationError</Code>');
    expect(badName.body).toContain("at 'roleSessionName' failed to satisfy constraint");
    const badDuration = await assume({
      RoleArn: OPEN_ROLE_ARN,
      RoleSessionName: 'app1',
      WebIdentityToken: token,
      DurationSeconds: '50000',
    });
    expect(badDuration.body).toContain('Member must have value less than or equal to 43200');
    const overRole = await assume({
      RoleArn: OPEN_ROLE_ARN,
      RoleSessionName: 'app1',
      WebIdentityToken: token,
      DurationSeconds: '7200',
    });
    expect(overRole.body).toContain('exceeds the MaxSessionDuration set for this role (3600)');
  });

  it('refuses a token from an unknown issuer or with a bad signature as InvalidIdentityToken', async () => {
    const token = await jwt(['sts.amazonaws.com']);
    const forged = token.replace(/.{4}$/, 'AAAA');
    const r = await assume({ RoleArn: OPEN_ROLE_ARN, RoleSessionName: 'app1', WebIdentityToken: forged });
    expect(r.status).toBe(400);
    expect(r.body).toContain('<Code>InvalidIdentityToken</Code>');
    const header = Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url');
    const payload = Buffer.from(JSON.stringify({ iss: 'https://elsewhere.example' })).toString('base64url');
    const foreign = await assume({
      RoleArn: OPEN_ROLE_ARN,
      RoleSessionName: 'app1',
      WebIdentityToken: `${header}.${payload}.x`,
    });
    expect(foreign.body).toContain(
      'No OpenIDConnect provider found in your account for https://elsewhere.example',
    );
  });
});
