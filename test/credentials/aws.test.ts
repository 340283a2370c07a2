import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DURATION_FORMS } from '../../reconciler/common/duration.ts';
import { refreshPoint, roleSessionNameFor, xmlText } from '../../reconciler/credentials/aws.ts';
import { CredentialManager, fetchOnce } from '../../reconciler/credentials/manager.ts';
import type { AwsSourceSpec } from '../../reconciler/credentials/types.ts';
import {
  type CredEnv,
  OPEN_ROLE_ARN,
  ROLE_ARN,
  SPIFFE_ID,
  seedSources,
  startCredEnv,
  WORKLOAD,
} from '../support/cred-env.ts';
import { failThenRecover, waitFor, waitForSource } from '../support/cred-wait.ts';

let env: CredEnv;
let manager: CredentialManager | undefined;

beforeAll(async () => {
  env = await startCredEnv();
});
afterAll(async () => {
  await env.close();
});
afterEach(async () => {
  await manager?.close();
  manager = undefined;
  env.sts.mode = 'none';
  env.sts.skewMs = 0;
  env.sts.expirationOverrideSec = undefined;
  env.sts.idpCommunicationErrors = 0;
  env.sts.throttled = 0;
  env.sts.sessionTokenSuffix = '';
  env.sts.resetCounters();
});

function start(): CredentialManager {
  manager = new CredentialManager(env.managerOptions());
  return manager;
}

function aws(name: string, fields: Partial<AwsSourceSpec['aws']>): AwsSourceSpec {
  return { name, aws: { roleArn: ROLE_ARN, ...fields } };
}

describe('the text of an STS answer', () => {
  it('decodes XML references and keeps what is not one, whatever the server sends', () => {
    const answer = (m: string) => `<ErrorResponse><Error><Message>${m}</Message></Error></ErrorResponse>`;
    expect(xmlText(answer('a &lt;b&gt; &amp; &#x41;&#66;'), 'Message')).toBe('a <b> & AB');
    // Named like a property every object has, or past Unicode: left as written, never a function or a throw.
    expect(xmlText(answer('&constructor; &__proto__; &toString;'), 'Message')).toBe(
      '&constructor; &__proto__; &toString;',
    );
    expect(xmlText(answer('&#x110000; &#99999999999;'), 'Message')).toBe('&#x110000; &#99999999999;');
    expect(xmlText(answer('x'), 'Code')).toBeUndefined();
  });
});

describe('aws provider', () => {
  it('reads each credential field decoded once: text that looks like an escape stays as the server meant it', async () => {
    // The server escapes '&lt;' as '&amp;lt;': decoded once it is '&lt;' again, never '<'.
    env.sts.sessionTokenSuffix = '&lt;&amp;';
    const m = start();
    const spec = seedSources(env).aws;
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const token = m.get(spec.name, WORKLOAD)!.aws!.sessionToken;
    expect(token.endsWith('&lt;&amp;')).toBe(true);
    expect(env.sts.issuedValues).toContain(token);
  });

  it('exchanges the workload ID token for temporary keys (seed 004)', async () => {
    const m = start();
    const spec = seedSources(env).aws;
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const cred = m.get(spec.name, WORKLOAD)!;
    expect(cred.kind).toBe('aws');
    expect(cred.aws!.accessKeyId).toMatch(/^ASIA[0-9A-F]{16}$/);
    expect(env.sts.issuedValues).toContain(cred.aws!.secretAccessKey);
    expect(env.sts.issuedValues).toContain(cred.aws!.sessionToken);
    // lifetime 900s → DurationSeconds=900
    const left = cred.expiresAt!.getTime() - Date.now();
    expect(left).toBeGreaterThan(880_000);
    expect(left).toBeLessThanOrEqual(900_000);
    expect(env.sts.lastClaims).toMatchObject({
      sub: SPIFFE_ID,
      aud: 'sts.amazonaws.com',
      iss: env.issuer.issuer,
    });
    expect(env.sts.sessionNames.at(-1)).toBe('support-assistant.app.assistant-api');
  });

  it('puts idTokenClaims and idTokenLifetime into the ID token, and a custom audience', async () => {
    const m = start();
    const spec: AwsSourceSpec = {
      name: 'aws-open',
      aws: { roleArn: OPEN_ROLE_ARN, idTokenClaims: { team: 'payments' }, idTokenLifetime: '120s' },
    };
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const claims = env.sts.lastClaims as { team: string; exp: number; iat: number };
    expect(claims.team).toBe('payments');
    expect(claims.exp - claims.iat).toBe(120);
    m.ensure({ name: 'aws-wrong-aud', aws: { roleArn: OPEN_ROLE_ARN, audience: ['not-aws'] } }, WORKLOAD);
    const err = await waitForSource(m, 'aws-wrong-aud', 'ERROR');
    expect(err.message).toContain('InvalidIdentityToken (HTTP 400): Incorrect token audience');
  });

  it('refreshes before Expiration and serves the new keys', async () => {
    env.sts.expirationOverrideSec = 3;
    const m = start();
    const spec = seedSources(env).aws;
    m.ensure(spec, WORKLOAD);
    await waitForSource(m, spec.name, 'AVAILABLE');
    const first = m.get(spec.name, WORKLOAD)!;
    await waitFor('new keys', () => (m.get(spec.name, WORKLOAD)?.version ?? 0) >= 2, 8000);
    const second = m.get(spec.name, WORKLOAD)!;
    expect(second.fingerprint).not.toBe(first.fingerprint);
    // Replaced while the first keys were still valid.
    expect(second.obtainedAt.getTime()).toBeLessThan(first.expiresAt!.getTime());
  });

  it('reports STS rejecting the claim when the role trusts another subject', async () => {
    const m = start();
    const spec = seedSources(env).aws;
    m.ensure(spec, 'other-team/app/intruder');
    const err = await waitForSource(m, spec.name, 'ERROR');
    expect(err.message).toContain(
      `AssumeRoleWithWebIdentity for role ${ROLE_ARN} as spiffe://example.org/other-team/app/intruder`,
    );
    expect(err.message).toContain('IDPRejectedClaim (HTTP 403)');
    expect(err.message).toContain(
      'trust policy must allow sub "spiffe://example.org/other-team/app/intruder"',
    );
  });

  it('reports an expired ID token (STS clock ahead of ours), and presents a new one at each retry', async () => {
    env.sts.skewMs = 3600_000;
    env.sts.tokensPresented.length = 0;
    const m = start();
    const spec = seedSources(env).aws;
    m.ensure(spec, WORKLOAD);
    const err = await waitForSource(m, spec.name, 'ERROR');
    expect(err.message).toContain('ExpiredTokenException (HTTP 400): Token expired: current date/time');
    expect(err.message).toContain("compare this host's clock");
    // A token STS refused as expired is not presented again, even within half its lifetime.
    await waitFor('a retry', () => env.sts.tokensPresented.length >= 2);
    expect(new Set(env.sts.tokensPresented).size).toBe(env.sts.tokensPresented.length);
    env.sts.skewMs = 0;
    await waitForSource(m, spec.name, 'AVAILABLE');
  });

  it('presents the same ID token while STS throttles it, then gets keys', async () => {
    env.sts.throttled = 4;
    env.sts.tokensPresented.length = 0;
    expect(await failThenRecover(start(), seedSources(env).aws, WORKLOAD)).toContain('Throttling (HTTP 400)');
    // Throttled four times, then answered: five presentations of one token, signed once.
    expect(env.sts.tokensPresented).toHaveLength(5);
    expect(new Set(env.sts.tokensPresented).size).toBe(1);
  });

  it('passes STS ValidationError for a lifetime outside 900–43200 s', async () => {
    const m = start();
    m.ensure(aws('aws-short', { lifetime: '100s' }), WORKLOAD);
    const err = await waitForSource(m, 'aws-short', 'ERROR');
    expect(err.message).toContain(
      "ValidationError (HTTP 400): 1 validation error detected: Value '100' at 'durationSeconds' failed to satisfy constraint",
    );
  });

  it('rejects a lifetime that is not a duration before calling STS', async () => {
    const m = start();
    m.ensure(aws('aws-bad-lifetime', { lifetime: 'an hour' }), WORKLOAD);
    const err = await waitForSource(m, 'aws-bad-lifetime', 'ERROR');
    expect(err.message).toBe(
      `CredentialSource aws-bad-lifetime: aws.lifetime "an hour" is not ${DURATION_FORMS}`,
    );
    expect(env.sts.count('assume')).toBe(0);
  });

  it('retries IDPCommunicationError a few times within one fetch, presenting the same ID token', async () => {
    env.sts.idpCommunicationErrors = 2;
    env.sts.tokensPresented.length = 0;
    const r = await fetchOnce(seedSources(env).aws, WORKLOAD, env.managerOptions());
    expect(r.state).toBe('AVAILABLE');
    expect(env.sts.count('assume')).toBe(3);
    // Signed once, not per attempt: well within half of its lifetime.
    expect(env.sts.tokensPresented).toHaveLength(3);
    expect(new Set(env.sts.tokensPresented).size).toBe(1);
    env.sts.idpCommunicationErrors = 5;
    const failed = await fetchOnce(seedSources(env).aws, WORKLOAD, env.managerOptions());
    expect(failed.state).toBe('ERROR');
    expect(failed.message).toContain('IDPCommunicationError');
  });

  it('reports an STS that drops connections, or is not listening', async () => {
    env.sts.mode = 'refuse';
    const refused = await fetchOnce(seedSources(env).aws, WORKLOAD, env.managerOptions());
    expect(refused.message).toMatch(
      /failed: (connection closed by the server before it answered|connection reset by the server)$/,
    );
    await env.sts.down();
    const down = await fetchOnce(seedSources(env).aws, WORKLOAD, env.managerOptions());
    await env.sts.up();
    expect(down.message).toMatch(/failed: connection refused \(is the server running\?\)$/);
  });

  it('times out on a hanging STS and on one that dies mid-answer', async () => {
    env.sts.mode = 'hang';
    const hung = await fetchOnce(seedSources(env).aws, WORKLOAD, env.managerOptions());
    expect(hung.message).toContain('no answer within 1500 ms');
    env.sts.mode = 'die';
    const died = await fetchOnce(seedSources(env).aws, WORKLOAD, env.managerOptions());
    expect(died.state).toBe('ERROR');
    expect(died.message).toMatch(
      /failed: (connection reset by the server|connection closed by the server|aborted)/,
    );
  });
});

describe('aws helpers', () => {
  it('derives a valid RoleSessionName from any workload ID', () => {
    expect(roleSessionNameFor('streamlit')).toBe('streamlit');
    expect(roleSessionNameFor('a')).toBe('riptides-a');
    expect(roleSessionNameFor('ns/app:v1 (x)')).toBe('ns.app-v1--x-');
    const long = roleSessionNameFor(`team/${'x'.repeat(100)}`);
    expect(long).toHaveLength(64);
    expect(long).toMatch(/^[\w+=,.@-]{2,64}$/);
    expect(roleSessionNameFor(`team/${'x'.repeat(100)}`)).toBe(long);
    expect(roleSessionNameFor(`team/${'x'.repeat(99)}y`)).not.toBe(long);
  });

  it('refreshes when 20% of the lifetime is left, clamped to 1–5 min, plus up to 10% jitter', () => {
    const t0 = 1_000_000;
    const at = (lifetimeSec: number, r: number) =>
      (t0 + lifetimeSec * 1000 - refreshPoint(t0, t0 + lifetimeSec * 1000, () => r)) / 1000;
    expect(at(3600, 0)).toBe(300);
    expect(at(3600, 1)).toBeCloseTo(330);
    expect(at(900, 0)).toBe(180);
    expect(at(200, 0)).toBe(60);
    expect(at(10, 0)).toBe(5);
  });
});
