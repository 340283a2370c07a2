/**
 * A warm plan says exactly what a cold one says: the same bytes, diagnostics of every code at the same line
 * and column, although cached files carry no text (cross-resource diagnostics such as RT045 and RT048 land
 * in files whose parse came from the cache).
 */
import { cpSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../reconciler/cli/main.ts';
import { CODES } from '../../reconciler/policy/diagnostics.ts';
import { capture } from '../support/cli.ts';
import { createBareRepo, WorkClone } from '../support/git-fixtures.ts';
import { scratch } from '../support/scratch.ts';
import { repoRoot } from '../support/shared.ts';
import { H } from './plan-helpers.ts';

/** Codes a plan cannot show next to others: an invalid riptides.config.yaml stops the plan before any file. */
const NOT_IN_ONE_PLAN = new Set(['RT060']);

const service = (name: string, labels: string, extra = '') =>
  `${H}kind: Service\nmetadata:\n  name: ${name}\nspec:\n  addresses:\n    - address: ${name}.internal\n      port: 443\n  labels:\n${labels}${extra}`;

/** Warnings and cross-resource findings that the fixtures/bad trees (one error class each) do not hold. */
const WARNINGS: Record<string, string> = {
  // RT045 and RT048 in a file that is otherwise clean, so its parse is cached; RT049 toward a TLS service.
  'cross/identities.yaml': `${H}kind: WorkloadIdentity
metadata:
  name: warm-client
spec:
  workloadID: warm/client
  scope:
    daemonGroup:
      id: warm
  selectors:
    - process:name: warm-client
  allowedSPIFFEIDs:
    outbound:
      - spiffe://example.com/warm/nobody
      - spiffe://elsewhere.org/warm/server
  egress:
    - selectors:
        - app: nothing-has-this-label
    - selectors:
        - app: warm-tls
      credentialName: warm-legacy
---
${H}kind: WorkloadCredential
metadata:
  name: warm-legacy
spec:
  workloadID: warm/someone-else
  credentialSource: warm-vault
`,
  'cross/services.yaml': `${service('warm-tls', '    app: warm-tls\n')}status:\n  observed: true\n`,
  'cross/sources.yaml': `${H}kind: CredentialSource
metadata:
  name: warm-vault
spec:
  vault:
    address: http://vault.internal:8200
    audience: [vault]
    path: secret/data/x
    role: r
    type:
      token:
        source: token
---
${H}kind: CredentialSource
metadata:
  name: warm-gcp
spec:
  gcp:
    oidcProviderId: projects/1/locations/global/workloadIdentityPools/p/providers/q
---
${H}kind: WorkloadIdentity
metadata:
  name: warm-someone
spec:
  workloadID: warm/someone-else
  scope:
    daemonGroup:
      id: warm
  selectors:
    - process:name: warm-someone
`,
  // More diagnostics than one file may show (the per-file cap, when there is one, reports the rest as one).
  'cross/many.yaml': Array.from(
    { length: 120 },
    (_, i) =>
      `${H}kind: Service\nmetadata:\n  name: many-${i}\nspec:\n  labels:\n    app: many\nstatus:\n  n: ${i}\n`,
  ).join('---\n'),
  'big/over-cap.yaml': `# ${'x'.repeat(70 * 1024)}\n`,
};

let tmp: ReturnType<typeof scratch>;
let work: WorkClone;

beforeAll(async () => {
  tmp = scratch('warm-cache');
  const bare = await createBareRepo(tmp.dir, 'policy');
  work = await WorkClone.create(bare, join(tmp.dir, 'work'));
  await work
    .write({
      'policy/riptides.config.yaml': 'trustDomain: example.com\n',
      'policy/base.yaml': service('base-only', '    app: base\n'),
    })
    .commit('base');
  await work.git('checkout', '--quiet', '-b', 'everything');
  // Every class of bad input, each in its own folder, plus the warnings above.
  const bad = join(repoRoot, 'fixtures', 'bad');
  for (const name of readdirSync(bad)) {
    for (const file of readdirSync(join(bad, name))) {
      if (file === 'expected.json' || file === 'riptides.config.yaml') continue;
      cpSync(join(bad, name, file), join(work.dir, 'policy', name, file));
    }
  }
  work.write(Object.fromEntries(Object.entries(WARNINGS).map(([path, text]) => [`policy/${path}`, text])));
  // A committed symlink that leaves the repository (RT005).
  symlinkSync('/etc/passwd', join(work.dir, 'policy', 'link-out.yaml'));
  await work.commit('every diagnostic');
});

afterAll(() => tmp?.cleanup());

async function plan(cacheDir: string, format: string) {
  const out = capture(process.cwd(), {});
  const code = await main(
    [
      'plan',
      '--repo',
      work.dir,
      '--path',
      'policy',
      '--base',
      'main',
      '--head',
      'everything',
      '--format',
      format,
      '--max-file-size',
      '64KiB',
      '--cache-dir',
      cacheDir,
    ],
    out.io,
  );
  return { code, ...out };
}

describe('warm plans', () => {
  it.each(['text', 'json'])(
    'print the same %s as a cold plan, with every diagnostic code at its place',
    async (format) => {
      const cacheDir = join(tmp.dir, `cache-${format}`);
      const cold = await plan(cacheDir, format);
      expect(cold.code).toBe(2);
      const warm = await plan(cacheDir, format);
      // The warm run did use the cache: only files with diagnostics of their own (never cached) are parsed again.
      const parsed = (r: { stderr: string }) => Number(/parsed (\d+) file/.exec(r.stderr)?.[1]);
      expect(parsed(warm)).toBeLessThan(parsed(cold) - 5);
      expect(warm.code).toBe(cold.code);
      expect(warm.stdout).toBe(cold.stdout);

      const shown = new Set(
        [...cold.stdout.matchAll(/\b(RT\d{3})\b/g)].map((m) => m[1]!).filter((c) => c in CODES),
      );
      const expected = Object.keys(CODES).filter((c) => !NOT_IN_ONE_PLAN.has(c));
      expect([...expected].filter((c) => !shown.has(c))).toEqual([]);
    },
  );

  it('places cross-resource warnings in a cached file at their line and column, not at 1:1', async () => {
    const cacheDir = join(tmp.dir, 'cache-positions');
    await plan(cacheDir, 'text');
    const warm = await plan(cacheDir, 'text');
    expect(warm.stdout).toContain('policy/cross/identities.yaml:14:9: warning RT048');
    expect(warm.stdout).toContain('policy/cross/identities.yaml:18:11: warning RT045');
    expect(warm.stdout).not.toMatch(/policy\/cross\/identities\.yaml:1:1:/);
  });
});
