/**
 * One duration grammar everywhere: the same string means the same number of seconds, or is refused with the
 * same account of what is accepted, on the command line, in policy, and in the credential providers.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { DURATION_FORMS, formatDuration, parseDuration } from '../../reconciler/common/duration.ts';
import { durationSeconds } from '../../reconciler/credentials/util.ts';
import { renderPolicy } from '../../reconciler/policy/render.ts';
import { capture } from '../support/cli.ts';
import { tempDir } from '../support/scratch.ts';

const VALID: Array<[string, number]> = [
  ['3600s', 3600], // the form the resources' API documents (^\d+s$)
  ['45s', 45],
  ['15m', 900],
  ['1h', 3600],
  ['1h30m', 5400],
  ['7d', 604_800],
  ['1d12h', 129_600],
  ['90m', 5400],
];
const INVALID = ['', '90', '1.5h', '5 minutes', '-5m', '1s1h', '1h1h', 'h', '500ms', ' 1h', 'PT1H'];

function x509Ttl(ttl: string) {
  const doc = `apiVersion: core.riptides.io/v1alpha1
kind: WorkloadIdentity
metadata:
  name: w
spec:
  workloadID: apps/w
  scope:
    daemonGroup:
      id: g
  selectors:
    - process:name: w
  svid:
    x509:
      ttl: ${JSON.stringify(ttl)}
`;
  return renderPolicy([{ path: 'w.yaml', bytes: new TextEncoder().encode(doc) }], {
    trustDomain: 'example.com',
  });
}

describe('the duration grammar', () => {
  it.each(VALID)('%s is %i s in the grammar, in policy and in the credential providers', (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds);
    const policy = x509Ttl(text);
    expect(policy.diagnostics).toEqual([]);
    expect(policy.programs![0]!.identities[0]!.x509.ttlSeconds).toBe(seconds);
    expect(durationSeconds(text, 'aws.lifetime')).toBe(seconds);
    expect(parseDuration(formatDuration(seconds))).toBe(seconds);
  });

  it.each(INVALID)('"%s" is refused everywhere, with what is accepted', (text) => {
    expect(parseDuration(text)).toBeNull();
    const policy = x509Ttl(text);
    expect(policy.diagnostics).toMatchObject([{ code: 'RT023', line: 14, column: 12 }]);
    expect(policy.diagnostics[0]!.message).toContain(`must be ${DURATION_FORMS}`);
    expect(() => durationSeconds(text, 'aws.lifetime')).toThrow(
      `aws.lifetime "${text}" is not ${DURATION_FORMS}`,
    );
  });

  it('is what --ttl and --ca-ttl take, zero refused', async () => {
    const dir = tempDir('durations');
    const ca = async (ttl: string) => {
      const out = capture(dir);
      const code = await main(
        ['ca', 'init', '--trust-domain', 'example.org', '--dir', `ca-${ttl || 'empty'}`, '--ca-ttl', ttl],
        out.io,
      );
      return { code, ...out };
    };
    const ok = await ca('1h30m');
    expect(ok.code).toBe(0);
    const signing = /signing CA\s+\S+\s+active\s+(\S+) → (\S+)/.exec(ok.stdout)!;
    // Backdated by 10 s, so 90 minutes and 10 seconds from notBefore to notAfter.
    expect(Date.parse(signing[2]!) - Date.parse(signing[1]!)).toBe(5410 * 1000);
    for (const bad of ['90', '0s', '1.5h']) {
      const r = await ca(bad);
      expect(r.code, bad).toBe(2);
      expect(r.stderr, bad).toContain(
        `--ca-ttl must be ${DURATION_FORMS}, and more than zero (got "${bad}")`,
      );
    }
  });

  it('is what --timeout takes too, in every command that has one, as well as whole seconds', async () => {
    const dir = tempDir('timeouts');
    const run = async (argv: string[]) => {
      const out = capture(dir, { XDG_CACHE_HOME: join(dir, 'xdg'), XDG_STATE_HOME: join(dir, 'state') });
      const code = await main(argv, out.io);
      return { code, ...out };
    };
    const commands = {
      plan: ['plan', '--repo', join(dir, 'no-such-repo'), '--head', 'main'],
      credentials: ['credentials', 'check', '--repo', dir, '--source', 's', '--ca-dir', join(dir, 'no-ca')],
      ctl: ['ctl', 'get', 'wid', '--state-dir', join(dir, 'no-state')],
    };
    const refusal = (value: string) =>
      `--timeout must be whole seconds ("30") or a duration with units h, m, s ("45s", "2m", "1m30s"), from 1s to 1h (got "${value}")`;
    for (const [name, argv] of Object.entries(commands)) {
      // Accepted: the command goes on to what it was given (a repository, a CA, a reconciler that is not there).
      for (const value of ['30s', '2m', '1m30s', '30', '1h']) {
        const r = await run([...argv, '--timeout', value]);
        expect(r.code, `${name} --timeout ${value}`).toBe(2);
        expect(r.stderr, `${name} --timeout ${value}`).not.toContain('--timeout');
      }
      for (const value of ['0', '0s', '1.5', '1e9', 'Infinity', '0x10', '2h', '30 s']) {
        const r = await run([...argv, '--timeout', value]);
        expect(r.code, `${name} --timeout ${value}`).toBe(2);
        expect(r.stderr, `${name} --timeout ${value}`).toContain(refusal(value));
      }
    }
  });
});
