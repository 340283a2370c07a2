import { connect, createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { checkEndpoint } from '../../reconciler/credentials/http.ts';
import { CredentialError } from '../../reconciler/credentials/types.ts';
import { durationSeconds } from '../../reconciler/credentials/util.ts';
import { attempt, classify, validationFailure } from '../../reconciler/errors/classify.ts';
import {
  ERROR_CODES,
  formatError,
  MAX_DETAILS,
  reconcileError,
} from '../../reconciler/errors/reconcile-error.ts';
import { initAuthority, openAuthority } from '../../reconciler/identity/authority.ts';
import { checkSvidRequest } from '../../reconciler/identity/issuance.ts';
import { loadPolicyDir } from '../../reconciler/policy/load-dir.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { openSource, SourceError } from '../../reconciler/source/index.ts';
import { tempDir } from '../support/scratch.ts';

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('classify: the errors the reconciler throws today', () => {
  it('maps every SourceError code, keeping the source hint', () => {
    const expected = {
      unreachable: ['SourceUnreachable', false],
      auth: ['SourceAuthFailed', true],
      'unknown-ref': ['SourceRefNotFound', true],
      'force-push': ['SourceHistoryRewritten', true],
      'too-large': ['SourceTooLarge', true],
      'not-a-repo': ['SourceNotARepository', true],
      'bad-path': ['SourcePathInvalid', true],
      'bad-object': ['SourceObjectInvalid', true],
      busy: ['SourceCacheBusy', false],
    } as const;
    for (const [code, [mapped, terminal]] of Object.entries(expected)) {
      const e = classify(new SourceError(code as keyof typeof expected, `msg ${code}`, `hint ${code}`));
      expect(e).toMatchObject({
        code: mapped,
        terminal,
        reason: `msg ${code}`,
        hint: `hint ${code}`,
        step: 'source',
      });
    }
  });

  it('a repository that does not exist is terminal; a git server that is down is transient', async () => {
    const missing = await attempt(() => openSource({ repo: `${tempDir('cls')}/nope` }));
    expect(missing.ok).toBe(false);
    if (!missing.ok) expect(missing.error).toMatchObject({ code: 'SourceNotARepository', terminal: true });

    const port = await closedPort();
    const down = await attempt(async () => {
      const src = await openSource({
        repo: `http://127.0.0.1:${port}/repo.git`,
        cacheDir: tempDir('cls-cache'),
        timeoutMs: 2000,
      });
      await src.fetch();
    });
    expect(down.ok).toBe(false);
    if (!down.ok) expect(down.error).toMatchObject({ code: 'SourceUnreachable', terminal: false });
  });

  it('a policy that does not validate is ValidationFailed, terminal, naming file:line of the first error', () => {
    const tree = loadPolicyDir({ repo: 'fixtures/bad/unknown-field' });
    const result = renderPolicy(tree.files, { trustDomain: 'example.org' }, tree.diagnostics);
    const e = validationFailure(result.diagnostics, 'a'.repeat(40));
    expect(e).not.toBeNull();
    expect(e!.code).toBe('ValidationFailed');
    expect(e!.terminal).toBe(true);
    expect(e!.reason).toMatch(
      /^commit aaaaaaaaaaaa does not validate: 1 error\(s\), first identity\.yaml:13:3 RT020 /,
    );
    expect(e!.details).toEqual([
      expect.objectContaining({ code: 'RT020', file: 'identity.yaml', line: 13, column: 3 }),
    ]);
  });

  it('warnings alone are no failure', () => {
    expect(
      validationFailure([
        { code: 'RT045', severity: 'warning', message: 'w', file: 'a.yaml', line: 1, column: 1 },
      ]),
    ).toBeNull();
  });

  it('bounds the details a huge invalid commit carries, saying how many were left out', () => {
    const diags = Array.from({ length: 10_000 }, (_, i) => ({
      code: 'RT020',
      severity: 'error' as const,
      message: 'x'.repeat(2000),
      file: `f${i}.yaml`,
      line: i + 1,
      column: 1,
    }));
    const e = validationFailure(diags)!;
    expect(e.details).toHaveLength(MAX_DETAILS);
    expect(e.omittedDetails).toBe(10_000 - MAX_DETAILS);
    expect(e.details![0]!.message.length).toBeLessThanOrEqual(300);
    expect(e.reason.length).toBeLessThanOrEqual(500);
  });

  it('identity: a CSR refused is IdentityRequestRefused; an unusable CA directory is AuthorityUnavailable', async () => {
    let thrown: unknown;
    try {
      checkSvidRequest({ csrPem: 'not a csr' } as never, 'example.org');
    } catch (err) {
      thrown = err;
    }
    expect(classify(thrown)).toMatchObject({
      code: 'IdentityRequestRefused',
      terminal: true,
      step: 'identity',
    });
    const opened = await attempt(() => openAuthority(tempDir('cls-ca')));
    expect(opened.ok).toBe(false);
    if (!opened.ok) expect(opened.error).toMatchObject({ code: 'AuthorityUnavailable', terminal: true });
  });

  it('credentials: withdrawn is terminal, a backend failure transient, an unsupported source terminal', () => {
    expect(classify(new CredentialError('Secret s not found', { withdraw: true }))).toMatchObject({
      code: 'CredentialWithdrawn',
      terminal: true,
    });
    expect(classify(new CredentialError('Vault login failed: no answer within 10000 ms'))).toMatchObject({
      code: 'CredentialUnavailable',
      terminal: false,
    });
    expect(
      classify(
        new CredentialError('CredentialSource x: provider "gcp" is not yet supported (supported: …)', {
          code: 'misconfigured',
        }),
      ),
    ).toMatchObject({ code: 'CredentialUnavailable', terminal: true });
  });

  it('credential and authority errors carry their code from where they are thrown', async () => {
    const thrownBy = async (f: () => unknown) => {
      try {
        await f();
      } catch (err) {
        return err;
      }
      throw new Error('did not throw');
    };
    // Misconfiguration found by the providers themselves: terminal, whatever the message says.
    for (const err of [
      await thrownBy(() => checkEndpoint('ftp://sts.example.com/', '--sts-endpoint')),
      await thrownBy(() => durationSeconds('1.5h', 'spec.aws.lifetime')),
    ]) {
      expect(err).toBeInstanceOf(CredentialError);
      expect(classify(err)).toMatchObject({ code: 'CredentialUnavailable', terminal: true });
    }
    expect(
      classify(await thrownBy(() => initAuthority({ trustDomain: 'Not A Domain', dir: tempDir('cls-td') }))),
    ).toMatchObject({ code: 'AuthorityConfigInvalid', terminal: true });
    // A CSR whose DER does not parse is a refused request, not a broken authority.
    const garbage = `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.from('0\x03\x02\x01\x00').toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    expect(
      classify(await thrownBy(() => checkSvidRequest({ csrPem: garbage } as never, 'example.org'))),
    ).toMatchObject({ code: 'IdentityRequestRefused' });
  });

  it('system errors: a refused connection is a transient NetworkError; permissions stall; a full disk retries', async () => {
    const port = await closedPort();
    const refused = await new Promise<unknown>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.on('error', resolve);
    });
    expect(classify(refused)).toMatchObject({ code: 'NetworkError', terminal: false });
    expect(classify(Object.assign(new Error('open /state/x'), { code: 'EACCES' }))).toMatchObject({
      code: 'StateDirUnusable',
      terminal: true,
    });
    expect(classify(Object.assign(new Error('write'), { code: 'ENOSPC' }))).toMatchObject({
      code: 'DiskFull',
      terminal: false,
    });
    const timedOut = await new Promise<unknown>((resolve) => {
      const signal = AbortSignal.timeout(1);
      signal.addEventListener('abort', () => resolve(signal.reason));
    });
    expect(classify(timedOut)).toMatchObject({ code: 'Timeout', terminal: false });
  });

  it('anything else is Internal and transient; a ReconcileError passes through', () => {
    expect(classify('boom')).toMatchObject({ code: 'Internal', reason: 'boom', terminal: false });
    const e = reconcileError('ProgramRejected', 'agent a NACKed v1: bad table');
    expect(classify(e)).toBe(e);
    expect(formatError(e)).toBe(
      `ProgramRejected: agent a NACKed v1: bad table (${ERROR_CODES.ProgramRejected.hint})`,
    );
  });

  it('every catalogue entry has an actionable hint and a step', () => {
    for (const [code, entry] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^[A-Z][A-Za-z]+$/);
      expect(entry.hint.length).toBeGreaterThan(20);
    }
  });
});
