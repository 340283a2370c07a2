import { describe, expect, it } from 'vitest';
import { Redactor } from '../../reconciler/common/redact.ts';
import { makeCredential } from '../../reconciler/credentials/types.ts';
import { createLogger } from '../../reconciler/telemetry/logger.ts';

function capture(level: 'info' | 'warn' | 'debug' = 'info', redactText?: (s: string) => string) {
  const lines: string[] = [];
  const logger = createLogger({
    level,
    destination: { write: (s: string) => void lines.push(s) },
    ...(redactText ? { redactText } : {}),
  });
  return { logger, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

const SECRETS = {
  bearer: 'sk-ant-api03-SECRETbearerVALUE',
  vault: 'hvs.CAESIJsecretVaultToken',
  awsSecret: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  awsSession: 'IQoJb3JpZ2luX2VjEXAMPLESESSION',
  gitlab: 'glpat-webhookSECRETtoken',
  admin: 'rt_admin_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG',
  gitToken: 'ghp_SECRETgitTOKEN0123456789',
};

describe('structured logs', () => {
  it('are JSON lines with an ISO time and a level label; levels filter', () => {
    const { logger, parsed } = capture('warn');
    logger.info('not shown');
    logger.warn({ source: 'policy' }, 'fetch failed, retrying');
    const [line] = parsed();
    expect(parsed()).toHaveLength(1);
    expect(line).toMatchObject({ level: 'warn', msg: 'fetch failed, retrying', source: 'policy' });
    expect(line!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('carry no credential value, in any shape a careless call could pass one', () => {
    const redactor = new Redactor();
    for (const s of Object.values(SECRETS)) redactor.add(s);
    const { logger, lines } = capture('debug', (s) => redactor.redact(s));
    logger.info({ token: SECRETS.bearer }, 'top-level field');
    logger.info({ lease: { auth: { token: SECRETS.vault } } }, 'nested field');
    logger.info(
      { credentials: { aws: { secretAccessKey: SECRETS.awsSecret, sessionToken: SECRETS.awsSession } } },
      'aws keys',
    );
    logger.info(
      { req: { headers: { authorization: `Bearer ${SECRETS.admin}`, 'x-gitlab-token': SECRETS.gitlab } } },
      'request',
    );
    logger.info({ headers: { 'x-gitlab-token': SECRETS.gitlab } }, 'webhook');
    logger.info(
      {
        credential: makeCredential(
          { kind: 'bearer', token: SECRETS.bearer },
          { version: 3, obtainedAt: new Date(0), fingerprint: 'hmac-sha256:0123456789abcdef' },
        ),
      },
      'credential object',
    );
    logger.info(
      {
        credential: makeCredential(
          {
            kind: 'aws',
            aws: {
              accessKeyId: 'AKIDEXAMPLE',
              secretAccessKey: SECRETS.awsSecret,
              sessionToken: SECRETS.awsSession,
            },
          },
          { version: 1, obtainedAt: new Date(0), fingerprint: 'hmac-sha256:0123456789abcdef' },
        ),
      },
      'aws credential object',
    );
    logger.warn(`git fetch failed: https://x-access-token:${SECRETS.gitToken}@git.example.com/org/repo.git`);
    logger.error(
      { err: new Error(`Vault said: permission denied for token ${SECRETS.vault}`) },
      'credential refresh failed',
    );
    const out = lines.join('');
    for (const [name, value] of Object.entries(SECRETS)) {
      expect(out, name).not.toContain(value);
      expect(out, `${name} (base64)`).not.toContain(Buffer.from(value).toString('base64'));
    }
    expect(lines).toHaveLength(9);
    expect(out).toContain('[redacted]');
    // The metadata a person needs is still there.
    expect(out).toContain('"fingerprint"');
    expect(out).toContain('"version":3');
    expect(out).toContain('credential refresh failed');
  });
});
