/**
 * AWS temporary credentials: STS AssumeRoleWithWebIdentity, an unsigned form POST carrying an ID token
 * minted for the workload (sub = its SPIFFE ID, aud from `audience`, extra `idTokenClaims`, lifetime
 * `idTokenLifetime`). Plain node:https rather than an AWS SDK: the call is one unsigned POST, and the endpoint
 * and its CA must be configurable for regional endpoints and test servers. Refreshed before Expiration by
 * tokenex's rule.
 */
import { createHash } from 'node:crypto';
import type { Agent } from 'node:https';
import { displayUrl, Redactor } from '../common/redact.ts';
import { retry } from '../common/retry.ts';
import { boundedRequest, checkEndpoint } from './http.ts';
import { type Obtained, type PolledSession, type ProviderContext, SessionJwt } from './session.ts';
import { type AwsSourceSpec, CredentialError } from './types.ts';
import { describeTransportError, durationSeconds } from './util.ts';

export const DEFAULT_STS_ENDPOINT = 'https://sts.amazonaws.com/';
export const DEFAULT_AWS_AUDIENCE = 'sts.amazonaws.com';
const DEFAULT_ID_TOKEN_LIFETIME_SEC = 300;
/** IDPCommunicationError means STS could not reach our issuer; botocore's advice is to retry a few times. */
const IDP_RETRIES = 3;
/** An STS answer is 2–3 KB (the session token is the largest part). */
export const MAX_STS_ANSWER_BYTES = 256 * 1024;

export interface AwsProviderOptions {
  endpoint: string;
  httpsAgent: Agent;
}

/** A RoleSessionName STS accepts ([\w+=,.@-], 2–64 chars) that still reads as the workload. */
export function roleSessionNameFor(workloadID: string): string {
  let name = workloadID.replace(/\//g, '.').replace(/[^\w+=,.@-]/g, '-');
  if (name.length < 2) name = `riptides-${name}`;
  if (name.length > 64) {
    const hash = createHash('sha256').update(workloadID).digest('hex').slice(0, 8);
    name = `${name.slice(0, 55)}-${hash}`;
  }
  return name;
}

/**
 * tokenex's refresh point: when 20% of the lifetime is left, that margin clamped to 1–5 minutes, plus up to
 * 10% jitter. The margin never exceeds half the lifetime, so very short lifetimes (tests) still get used.
 */
export function refreshPoint(obtainedAt: number, expiresAt: number, random: () => number): number {
  const lifetime = expiresAt - obtainedAt;
  const margin = Math.min(Math.min(Math.max(lifetime * 0.2, 60_000), 300_000), lifetime / 2);
  return expiresAt - margin * (1 + 0.1 * random());
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/**
 * The text of the first `<tag>` element of an STS answer, with XML's five named entities and numeric character
 * references decoded (anything else, such as `&constructor;` or a reference past U+10FFFF, stays as written);
 * undefined when there is no such element. STS answers are flat and attribute-free (AWS STS API reference).
 */
export function xmlText(xml: string, tag: string): string | undefined {
  return xmlElement(xml, tag)
    ?.trim()
    .replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (all, e: string) => {
      if (!e.startsWith('#')) return Object.hasOwn(ENTITIES, e) ? ENTITIES[e]! : all;
      const code = e.startsWith('#x') ? Number.parseInt(e.slice(2), 16) : Number(e.slice(1));
      // A reference past Unicode (a server's garbage) stays as it was rather than throwing a RangeError.
      return code <= 0x10ffff ? String.fromCodePoint(code) : all;
    });
}

/** The first `<tag>` element's content as written (not decoded: for an element that holds others). */
function xmlElement(xml: string, tag: string): string | undefined {
  return new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(xml)?.[1];
}

interface HttpAnswer {
  status: number;
  body: string;
}

/** STS error codes that judge the web identity token itself. */
const TOKEN_REFUSALS = new Set(['ExpiredTokenException', 'InvalidIdentityToken', 'IDPRejectedClaim']);

/** A refused STS answer, kept apart so the retry policy can tell IDPCommunicationError from the rest. */
class StsRefusal extends CredentialError {
  constructor(
    message: string,
    /** STS's own error code (`IDPCommunicationError`, `AccessDenied`, …). */
    readonly stsCode: string,
  ) {
    super(message);
  }
}

export class AwsSession implements PolledSession {
  readonly kind = 'polled';
  private readonly spiffeId: string;
  private readonly sessionName: string;
  private readonly durationSec: number | undefined;
  private readonly idTokenTtlSec: number;
  private readonly endpoint: URL;
  private readonly jwt: SessionJwt;
  private readonly redactor = new Redactor();

  constructor(
    private readonly spec: AwsSourceSpec,
    workloadID: string,
    private readonly ctx: ProviderContext,
    private readonly opts: AwsProviderOptions,
  ) {
    this.spiffeId = `spiffe://${ctx.trustDomain}/${workloadID}`;
    this.sessionName = roleSessionNameFor(workloadID);
    this.durationSec =
      spec.aws.lifetime !== undefined ? durationSeconds(spec.aws.lifetime, 'aws.lifetime') : undefined;
    this.idTokenTtlSec =
      spec.aws.idTokenLifetime !== undefined
        ? durationSeconds(spec.aws.idTokenLifetime, 'aws.idTokenLifetime')
        : DEFAULT_ID_TOKEN_LIFETIME_SEC;
    this.endpoint = checkEndpoint(opts.endpoint, 'the STS endpoint').url;
    this.jwt = new SessionJwt(ctx, {
      spiffeId: this.spiffeId,
      audience: spec.aws.audience?.length ? spec.aws.audience : [DEFAULT_AWS_AUDIENCE],
      ttlSeconds: this.idTokenTtlSec,
      ...(spec.aws.idTokenClaims ? { claims: spec.aws.idTokenClaims } : {}),
    });
  }

  private async post(form: URLSearchParams): Promise<HttpAnswer> {
    const res = await boundedRequest({
      url: this.endpoint,
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
        accept: 'text/xml',
      },
      body: form.toString(),
      agent: this.opts.httpsAgent,
      deadlineMs: this.ctx.timeoutMs,
      maxBodyBytes: MAX_STS_ANSWER_BYTES,
      what: 'AWS STS',
      carries: "the workload's ID token",
    });
    return { status: res.status, body: res.body.toString('utf8') };
  }

  async obtain(): Promise<Obtained> {
    const what = `AWS STS ${displayUrl(this.endpoint)}: AssumeRoleWithWebIdentity for role ${this.spec.aws.roleArn} as ${this.spiffeId}`;
    return retry(() => this.attempt(what), {
      attempts: IDP_RETRIES,
      policy: this.ctx.backoff,
      random: this.ctx.random,
      retryable: (err) => err instanceof StsRefusal && err.stsCode === 'IDPCommunicationError',
    });
  }

  private async attempt(what: string): Promise<Obtained> {
    const jwt = await this.jwt.get();
    this.redactor.set('jwt', jwt);
    const form = new URLSearchParams({
      Action: 'AssumeRoleWithWebIdentity',
      Version: '2011-06-15',
      RoleArn: this.spec.aws.roleArn,
      RoleSessionName: this.sessionName,
      WebIdentityToken: jwt,
    });
    if (this.durationSec !== undefined) form.set('DurationSeconds', String(this.durationSec));
    let answer: HttpAnswer;
    try {
      answer = await this.post(form);
    } catch (err) {
      throw new CredentialError(this.redactor.redact(`${what} failed: ${describeTransportError(err)}`));
    }
    if (answer.status === 200) return this.parse(answer.body, what);
    const code = (xmlText(answer.body, 'Code') ?? `HTTP ${answer.status}`).slice(0, 100);
    // STS judged the token itself (expired, invalid, a claim it rejects; AWS documents IDPRejectedClaim for an
    // expired or revoked one too): a fresh one may pass. Anything else (Throttling, AccessDenied, a 5xx, …) a
    // fresh token would not change, and signing one per attempt is what reuse saves.
    if (TOKEN_REFUSALS.has(code)) this.jwt.invalidate(jwt);
    // STS text may quote the token it was sent: scrubbed before it is shown anywhere.
    const message = this.redactor.redact(xmlText(answer.body, 'Message') ?? '').slice(0, 300);
    throw new StsRefusal(
      this.redactor.redact(
        `${what} failed: ${code} (HTTP ${answer.status})${message ? `: ${message}` : ''}; ${this.hint(code)}`,
      ),
      code,
    );
  }

  refresh(): Promise<Obtained> {
    return this.obtain();
  }

  async release(): Promise<void> {
    // STS credentials cannot be revoked individually; they lapse at Expiration.
  }

  private hint(code: string): string {
    switch (code) {
      case 'IDPRejectedClaim':
      case 'AccessDenied':
        return `the role's trust policy must allow sub "${this.spiffeId}" from our OIDC provider`;
      case 'InvalidIdentityToken':
        return 'check that the role trusts our issuer (an IAM OIDC provider for it) and that its client IDs include our audience';
      case 'ExpiredTokenException':
        return "the ID token expired before STS checked it: compare this host's clock with AWS, or raise idTokenLifetime";
      case 'IDPCommunicationError':
        return 'STS could not fetch our OIDC discovery document or JWKS; check that the issuer URL is reachable from AWS';
      case 'ValidationError':
        return 'fix the CredentialSource fields named in the message';
      default:
        return 'will retry';
    }
  }

  private parse(xml: string, what: string): Obtained {
    // Decoded once, field by field: decoding the block first would turn a value's &amp;lt; into <.
    const creds = xmlElement(xml, 'Credentials');
    const accessKeyId = creds && xmlText(creds, 'AccessKeyId');
    const secretAccessKey = creds && xmlText(creds, 'SecretAccessKey');
    const sessionToken = creds && xmlText(creds, 'SessionToken');
    const expiration = creds && xmlText(creds, 'Expiration');
    const expiresAt = expiration ? Date.parse(expiration) : Number.NaN;
    if (!accessKeyId || !secretAccessKey || !sessionToken || Number.isNaN(expiresAt))
      throw new CredentialError(
        `${what}: the answer lacks Credentials (AccessKeyId, SecretAccessKey, SessionToken, Expiration)`,
      );
    const now = this.ctx.now();
    return {
      value: { kind: 'aws', aws: { accessKeyId, secretAccessKey, sessionToken } },
      expiresAt,
      refreshAt: refreshPoint(now, expiresAt, this.ctx.random),
    };
  }
}
