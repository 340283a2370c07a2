/**
 * An AWS STS endpoint for tests, following the AssumeRoleWithWebIdentity API reference: POST / with a
 * form body (unsigned), the WebIdentityToken verified against the issuer's OIDC discovery document + JWKS,
 * `aud` checked against the provider's client IDs and `sub` against the role's trust condition; the
 * documented XML response, and ErrorResponse XML with the documented codes and statuses.
 *
 * Where this differs from AWS on purpose: a `sub` that the role's condition rejects answers IDPRejectedClaim
 * (403) as our issue specifies (AWS itself answers AccessDenied 403 there); the client handles both.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errors as joseErrors } from 'jose';
import { type Routed, TestHttpsServer } from './base.ts';
import { OidcFetchError, OidcVerifier } from './oidc-verifier.ts';

export interface StsRole {
  /** The `<provider>:sub` StringEquals condition of the trust policy; undefined accepts any subject. */
  sub?: string | string[];
  /** Seconds; the role's MaxSessionDuration (default 3600). */
  maxSessionDuration?: number;
}

export interface StsProvider {
  issuer: string;
  /** CA to fetch the discovery document with (AWS uses the public trust store). */
  ca: string;
  /** The OIDC provider's client IDs: the accepted `aud` values. */
  clientIds: string[];
}

export interface StsServerOptions {
  providers: StsProvider[];
  roles: Record<string, StsRole>;
  now?: () => number;
  /** Serve plain http, as a local STS emulator does. */
  plain?: boolean;
}

const NS = 'https://sts.amazonaws.com/doc/2011-06-15/';

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export class StsTestServer extends TestHttpsServer {
  private readonly verifiers = new Map<string, OidcVerifier>();
  readonly issuedValues: string[] = [];
  /** Appended to every session token issued (escaped in the XML as any text): tests of the answer's decoding. */
  sessionTokenSuffix = '';
  /** When set, credentials expire this many seconds after issue instead of DurationSeconds (short-TTL tests). */
  expirationOverrideSec: number | undefined;
  /** The next n requests are throttled (HTTP 400, code Throttling, as STS answers past its request rate). */
  throttled = 0;
  /** The next n requests fail with IDPCommunicationError, as when AWS cannot reach the issuer. */
  idpCommunicationErrors = 0;
  /** Added to the server's clock: moves it ahead of (or behind) its clients. */
  skewMs = 0;
  private readonly clock: () => number;
  /** RoleSessionName of every successful call, to check what the client derived. */
  readonly sessionNames: string[] = [];
  /** Every well-formed request's web identity token, in order (kept in memory only). */
  readonly tokensPresented: string[] = [];
  /** Claims of the last verified web identity token. */
  lastClaims: Record<string, unknown> | undefined;

  now(): number {
    return this.clock() + this.skewMs;
  }

  constructor(private readonly opts: StsServerOptions) {
    super({ plain: opts.plain === true });
    this.clock = opts.now ?? Date.now;
  }

  protected unavailable(res: ServerResponse): void {
    this.error(res, 503, 'Receiver', 'ServiceUnavailable', 'Service is unable to handle request.');
  }

  protected route(req: IncomingMessage, res: ServerResponse, body: Buffer): Routed {
    if (req.method !== 'POST' || new URL(req.url ?? '/', 'https://sts').pathname !== '/')
      return {
        key: 'other',
        handle: () => this.error(res, 404, 'Sender', 'UnknownOperation', 'Unknown operation'),
      };
    const form = new URLSearchParams(body.toString('utf8'));
    return { key: 'assume', handle: () => this.assume(form, res) };
  }

  private error(res: ServerResponse, status: number, type: string, code: string, message: string): void {
    const xml =
      `<ErrorResponse xmlns="${NS}">\n  <Error>\n    <Type>${type}</Type>\n    <Code>${code}</Code>\n` +
      `    <Message>${xmlEscape(message)}</Message>\n  </Error>\n  <RequestId>${randomUUID()}</RequestId>\n</ErrorResponse>\n`;
    res.writeHead(status, { 'content-type': 'text/xml', 'content-length': Buffer.byteLength(xml) });
    res.end(xml);
  }

  private validation(res: ServerResponse, value: string, field: string, constraint: string): void {
    this.error(
      res,
      400,
      'Sender',
      'ValidationError',
      `1 validation error detected: Value '${value}' at '${field}' failed to satisfy constraint: ${constraint}`,
    );
  }

  private async assume(form: URLSearchParams, res: ServerResponse): Promise<void> {
    if (form.get('Action') !== 'AssumeRoleWithWebIdentity')
      return this.error(
        res,
        400,
        'Sender',
        'InvalidAction',
        `Could not find operation ${form.get('Action')}`,
      );
    const roleArn = form.get('RoleArn') ?? '';
    const sessionName = form.get('RoleSessionName') ?? '';
    const token = form.get('WebIdentityToken') ?? '';
    const durationText = form.get('DurationSeconds');
    if (roleArn.length < 20) return this.validation(res, roleArn, 'roleArn', 'Member must have length >= 20');
    if (sessionName.length < 2 || sessionName.length > 64)
      return this.validation(res, sessionName, 'roleSessionName', 'Member must have length between 2 and 64');
    if (!/^[\w+=,.@-]*$/.test(sessionName))
      return this.validation(
        res,
        sessionName,
        'roleSessionName',
        'Member must satisfy regular expression pattern: [\\w+=,.@-]*',
      );
    if (token.length < 4 || token.length > 20000)
      return this.validation(res, '***', 'webIdentityToken', 'Member must have length between 4 and 20000');
    const role = this.opts.roles[roleArn];
    const maxSession = role?.maxSessionDuration ?? 3600;
    let duration = 3600;
    if (durationText !== null) {
      duration = Number(durationText);
      if (!Number.isInteger(duration) || duration < 900)
        return this.validation(
          res,
          durationText,
          'durationSeconds',
          'Member must have value greater than or equal to 900',
        );
      if (duration > 43200)
        return this.validation(
          res,
          durationText,
          'durationSeconds',
          'Member must have value less than or equal to 43200',
        );
    }
    this.tokensPresented.push(token);
    if (this.throttled > 0) {
      this.throttled--;
      return this.error(res, 400, 'Sender', 'Throttling', 'Rate exceeded');
    }
    if (this.idpCommunicationErrors > 0) {
      this.idpCommunicationErrors--;
      return this.error(
        res,
        400,
        'Sender',
        'IDPCommunicationError',
        'Communication error with the identity provider.',
      );
    }
    let iss = '';
    try {
      const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
        iss?: string;
      };
      iss = String(payload.iss ?? '');
    } catch {
      return this.error(
        res,
        400,
        'Sender',
        'InvalidIdentityToken',
        'The web identity token is not a valid JWT.',
      );
    }
    const provider = this.opts.providers.find((p) => p.issuer === iss);
    if (!provider)
      return this.error(
        res,
        400,
        'Sender',
        'InvalidIdentityToken',
        `No OpenIDConnect provider found in your account for ${iss}`,
      );
    let verifier = this.verifiers.get(iss);
    if (!verifier) {
      verifier = new OidcVerifier(provider.issuer, provider.ca);
      this.verifiers.set(iss, verifier);
    }
    let claims: Record<string, unknown>;
    const now = new Date(this.now());
    try {
      claims = await verifier.verify(token, now, 0);
    } catch (err) {
      if (err instanceof OidcFetchError)
        return this.error(
          res,
          400,
          'Sender',
          'IDPCommunicationError',
          "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements",
        );
      if (err instanceof joseErrors.JWTExpired) {
        const exp = new Date(Number((err.payload as { exp?: number }).exp) * 1000).toISOString();
        return this.error(
          res,
          400,
          'Sender',
          'ExpiredTokenException',
          `Token expired: current date/time ${now.toISOString()} must be before the expiration date/time ${exp}`,
        );
      }
      return this.error(
        res,
        400,
        'Sender',
        'InvalidIdentityToken',
        'The web identity token could not be verified.',
      );
    }
    this.lastClaims = claims;
    const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : [];
    if (!aud.some((a) => provider.clientIds.includes(String(a))))
      return this.error(res, 400, 'Sender', 'InvalidIdentityToken', 'Incorrect token audience');
    if (!role)
      return this.error(
        res,
        403,
        'Sender',
        'AccessDenied',
        'Not authorized to perform sts:AssumeRoleWithWebIdentity',
      );
    const sub = String(claims.sub ?? '');
    const allowed = role.sub === undefined ? undefined : Array.isArray(role.sub) ? role.sub : [role.sub];
    if (allowed && !allowed.includes(sub))
      return this.error(
        res,
        403,
        'Sender',
        'IDPRejectedClaim',
        'Not authorized to perform sts:AssumeRoleWithWebIdentity',
      );
    if (duration > maxSession)
      return this.validation(
        res,
        String(duration),
        'durationSeconds',
        `The requested DurationSeconds exceeds the MaxSessionDuration set for this role (${maxSession})`,
      );
    const accessKeyId = `ASIA${randomBytes(10).toString('hex').toUpperCase().slice(0, 16)}`;
    const secretAccessKey = randomBytes(30).toString('base64');
    const sessionToken = `IQoJb3JpZ2luX2Vj${randomBytes(120).toString('base64')}${this.sessionTokenSuffix}`;
    this.issuedValues.push(secretAccessKey, sessionToken);
    this.sessionNames.push(sessionName);
    const lifetime = this.expirationOverrideSec ?? duration;
    const expiration = new Date(this.now() + lifetime * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const roleName = roleArn.split('/').pop() ?? roleArn;
    const account = roleArn.split(':')[4] ?? '000000000000';
    const xml = `<AssumeRoleWithWebIdentityResponse xmlns="${NS}">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>${xmlEscape(sub)}</SubjectFromWebIdentityToken>
    <Audience>${xmlEscape(String(aud[0]))}</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::${account}:assumed-role/${xmlEscape(roleName)}/${xmlEscape(sessionName)}</Arn>
      <AssumedRoleId>AROA${randomBytes(8).toString('hex').toUpperCase()}:${xmlEscape(sessionName)}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>${xmlEscape(sessionToken)}</SessionToken>
      <SecretAccessKey>${xmlEscape(secretAccessKey)}</SecretAccessKey>
      <Expiration>${expiration}</Expiration>
      <AccessKeyId>${accessKeyId}</AccessKeyId>
    </Credentials>
    <Provider>${xmlEscape(iss)}</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>${randomUUID()}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
`;
    res.writeHead(200, { 'content-type': 'text/xml', 'content-length': Buffer.byteLength(xml) });
    res.end(xml);
  }
}
