import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_KEEP_REPORTS, ReportsDir, recordDrift } from '../../reconciler/drift/history.ts';
import { checkWebhookUrl, postReport } from '../../reconciler/drift/notify.ts';
import { renderJson, renderMarkdown } from '../../reconciler/drift/render.ts';
import { buildDriftReport, driftExitCode, type NodeDrift } from '../../reconciler/drift/report.ts';
import { DriftScheduleError, nextRuns, scheduleDrift } from '../../reconciler/drift/schedule.ts';
import { StateStore } from '../../reconciler/store/state-store.ts';
import { tempDir } from '../support/scratch.ts';

const T0 = new Date('2026-03-01T12:00:00Z');
const REV = 'abc'.repeat(13) + 'a';

function nodes(): NodeDrift[] {
  return [
    {
      node: 'node-clean',
      group: 'g',
      reachable: true,
      lastContact: T0.toISOString(),
      desiredVersion: 'v1',
      liveVersion: 'v1',
      items: [],
    },
    {
      node: 'node-b',
      group: 'g',
      reachable: true,
      lastContact: T0.toISOString(),
      desiredVersion: 'v2aaaaaaaaaaaaaa',
      liveVersion: 'v1bbbbbbbbbbbbbb',
      items: [
        {
          kind: 'changed',
          what: 'program',
          subject: 'daemonGroup:g',
          detail: 'program differs',
          desired: 'v2aaaaaaaaaaaaaa',
          live: 'v1bbbbbbbbbbbbbb',
        },
        {
          kind: 'stale',
          what: 'svid',
          subject: 'spiffe://example.org/app/api',
          detail: 'SVID expires in 4m and was not renewed',
          expiresAt: '2026-03-01T12:04:00.000Z',
        },
        {
          kind: 'out-of-band',
          what: 'file',
          subject: 'rules',
          detail: 'edited by hand: sha256 differs from the manifest',
        },
      ],
    },
    {
      node: 'node-a',
      group: 'g',
      reachable: false,
      lastContact: '2026-03-01T11:00:00.000Z',
      desiredVersion: 'v1',
      liveVersion: null,
      items: [{ kind: 'unreachable', what: 'agent', subject: 'node-a', detail: 'no stream for 1h' }],
    },
  ];
}

describe('drift report', () => {
  it('summarises per kind, orders drifted nodes first, and exits 1 on drift, 0 without', () => {
    const r = buildDriftReport(nodes(), { revision: REV, staleThresholdSeconds: 600, now: T0 });
    expect(r.drifted).toBe(true);
    expect(r.summary).toEqual({
      nodes: 3,
      nodesDrifted: 2,
      counts: { missing: 0, extra: 0, changed: 1, stale: 1, unreachable: 1, 'out-of-band': 1 },
    });
    expect(r.nodes.map((n) => n.node)).toEqual(['node-b', 'node-a', 'node-clean']);
    expect(driftExitCode(r)).toBe(1);
    const clean = buildDriftReport([nodes()[0]!], { revision: REV, staleThresholdSeconds: 600, now: T0 });
    expect([clean.drifted, driftExitCode(clean)]).toEqual([false, 0]);
  });

  it('Markdown says at the top whether anything drifted; JSON is the report exactly', () => {
    const r = buildDriftReport(nodes(), { revision: REV, staleThresholdSeconds: 600, now: T0 });
    const md = renderMarkdown(r);
    expect(md.split('\n').slice(0, 3)).toEqual([
      '## Drift report',
      '',
      '**Drift detected**: 4 item(s) on 2 of 3 node(s), against revision `abcabcabcabc`.',
    ]);
    expect(md).toContain('| 0 | 0 | 1 | 1 | 1 | 1 |');
    expect(md).toContain(
      '| stale | svid | `spiffe://example.org/app/api` | SVID expires in 4m and was not renewed (expires `2026-03-01T12:04:00.000Z`) |',
    );
    expect(md).toContain('**unreachable**');
    expect(md).toContain('1 node(s) without drift.');
    expect(JSON.parse(renderJson(r))).toEqual(r);
    const clean = renderMarkdown(
      buildDriftReport([nodes()[0]!], { revision: REV, staleThresholdSeconds: 600, now: T0 }),
    );
    expect(clean.split('\n')[2]).toBe('**No drift**: 1 node(s) run revision `abcabcabcabc` as git says.');
  });

  it('values from nodes cannot forge Markdown: code spans hold, mentions and tables break', () => {
    const hostile: NodeDrift = {
      node: 'evil @org/security-team',
      group: null,
      reachable: true,
      lastContact: null,
      desiredVersion: 'v1',
      liveVersion: 'v1',
      items: [
        {
          kind: 'extra',
          what: 'identity',
          subject: 'spiffe://x/` **pwned** | forged | cell `',
          detail: 'cells | split\n\n# heading <img src=x>',
          desired: null,
          live: 'ev|il',
        },
      ],
    };
    const md = renderMarkdown(
      buildDriftReport([hostile], { revision: REV, staleThresholdSeconds: 60, now: T0 }),
    );
    expect(md).not.toMatch(/@org/);
    expect(md).toContain('@&#8203;org');
    // A `|` in a cell's code span is escaped, or GitHub splits the cell there.
    expect(md).toContain('`` spiffe://x/` **pwned** \\| forged \\| cell ` ``');
    const row = md.split('\n').find((l) => l.startsWith('| extra'))!;
    expect(row.replace(/\\\|/g, '').split('|')).toHaveLength(6);
    expect(md).toContain(String.raw`cells \| split\\n\\n\# heading \<img src\=x\>`);
    expect(md.split('\n').filter((l) => l.startsWith('| extra'))).toHaveLength(1);
  });

  it('a huge report is cut before the comment limit, saying so', () => {
    const many: NodeDrift[] = Array.from({ length: 400 }, (_, i) => ({
      node: `node-${i}`,
      group: 'g',
      reachable: true,
      lastContact: null,
      desiredVersion: 'v2',
      liveVersion: 'v1',
      items: Array.from({ length: 5 }, (_, k) => ({
        kind: 'missing' as const,
        what: 'rule' as const,
        subject: `rule-${k}`,
        detail: 'x'.repeat(50),
      })),
    }));
    const md = renderMarkdown(buildDriftReport(many, { revision: REV, staleThresholdSeconds: 60, now: T0 }));
    expect(md.length).toBeLessThanOrEqual(60_000 + 200);
    expect(md).toMatch(
      /_\d+ more node\(s\) with drift are left out to keep this short; the JSON report lists every item\._\n$/,
    );
  });
});

describe('reports directory and history', () => {
  it('keeps the newest N reports in both formats, and the store keeps the same history', async () => {
    const dir = join(tempDir('reports'), 'reports');
    const reports = new ReportsDir(dir, 3);
    const store = await StateStore.open({ stateDir: tempDir('reports-store') });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = buildDriftReport(i % 2 ? nodes() : [nodes()[0]!], {
        revision: REV,
        staleThresholdSeconds: 60,
        now: new Date(T0.getTime() + i * 60_000),
      });
      const { id, files } = await reports.write(r);
      ids.push(id);
      await recordDrift(store, r, id, files, 3);
    }
    // Two reports in the same millisecond do not overwrite each other.
    const same = await reports.write(
      buildDriftReport([], {
        revision: REV,
        staleThresholdSeconds: 60,
        now: new Date(T0.getTime() + 4 * 60_000),
      }),
    );
    expect(same.id).toBe(`${ids[4]}-1`);
    expect(await reports.list()).toEqual([same.id, ids[4], ids[3]]);
    expect(readdirSync(dir).sort()).toEqual(
      [same.id, ids[4], ids[3]].flatMap((id) => [`${id}.json`, `${id}.md`]).sort(),
    );
    expect(readFileSync(join(dir, `${ids[3]}.md`), 'utf8')).toMatch(/\*\*Drift detected\*\*/);
    expect((await reports.latest())?.generatedAt).toBe(new Date(T0.getTime() + 4 * 60_000).toISOString());
    expect([...store.drift.entries()].map(([k, v]) => [k, v.drifted])).toEqual([
      [ids[2], false],
      [ids[3], true],
      [ids[4], false],
    ]);
    await store.close();
    expect(DEFAULT_KEEP_REPORTS).toBe(50);
  });
});

describe('posting a report', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  });
  async function receiver(
    answer: (
      req: import('node:http').IncomingMessage,
      res: import('node:http').ServerResponse,
      body: string,
    ) => void,
  ) {
    const got: Array<{ headers: import('node:http').IncomingHttpHeaders; body: string; url: string }> = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        got.push({ headers: req.headers, body, url: req.url ?? '' });
        answer(req, res, body);
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, got };
  }

  it('POSTs the JSON report, signed so the receiver can check it', async () => {
    const rx = await receiver((_, res) => res.writeHead(204).end());
    const report = buildDriftReport(nodes(), { revision: REV, staleThresholdSeconds: 60, now: T0 });
    const secret = 'drift-hook-secret-0123456789';
    expect(await postReport(`${rx.url}/hook`, report, { secret })).toEqual({ ok: true, status: 204 });
    const [req] = rx.got;
    expect(JSON.parse(req!.body)).toEqual(report);
    const expected = execFileSync('openssl', ['dgst', '-sha256', '-hmac', secret], { input: req!.body })
      .toString()
      .trim()
      .split('= ')[1];
    expect(req!.headers['x-riptides-signature-256']).toBe(`sha256=${expected}`);
  });

  it('is bounded and careful: no redirect followed, a deadline, errors naming only the origin', async () => {
    const report = buildDriftReport([], { revision: REV, staleThresholdSeconds: 60, now: T0 });
    const target = await receiver((_, res) => res.writeHead(200).end());
    const redirect = await receiver((_, res) =>
      res.writeHead(307, { location: `${target.url}/elsewhere` }).end(),
    );
    const r = await postReport(`${redirect.url}/services/T0KEN/SECRET`, report);
    expect(r).toEqual({
      ok: false,
      reason: `${redirect.url} answered a redirect (307); redirects are not followed`,
    });
    expect(target.got).toHaveLength(0);
    const failing = await receiver((_, res) => res.writeHead(500).end('x'.repeat(200_000)));
    expect(await postReport(`${failing.url}/hooks/T0KEN`, report)).toEqual({
      ok: false,
      reason: `${failing.url} answered HTTP 500`,
    });
    const silent = await receiver(() => {});
    const slow = await postReport(`${silent.url}/hooks/T0KEN?key=SECRET`, report, { timeoutMs: 300 });
    expect(slow).toEqual({ ok: false, reason: `${silent.url} did not answer within 300 ms` });
    expect(() => checkWebhookUrl('http://hooks.example.com/x')).toThrow(/must be https/);
    expect(() => checkWebhookUrl('https://user:pw@hooks.example.com/x')).toThrow(
      /may not carry user:password/,
    );
    expect(JSON.stringify([r, slow])).not.toMatch(/T0KEN|SECRET/);
  });
});

describe('--drift-schedule', () => {
  it('reads cron patterns with croner, in UTC, and refuses a bad one with an example', () => {
    expect(nextRuns('0 */6 * * *', 3, { from: T0 }).map((d) => d.toISOString())).toEqual([
      '2026-03-01T18:00:00.000Z',
      '2026-03-02T00:00:00.000Z',
      '2026-03-02T06:00:00.000Z',
    ]);
    expect(nextRuns('@hourly', 1, { from: T0 })[0]!.toISOString()).toBe('2026-03-01T13:00:00.000Z');
    expect(() => nextRuns('every six hours', 1)).toThrow(DriftScheduleError);
    expect(() => scheduleDrift('61 * * * *', async () => {})).toThrow(
      /--drift-schedule "61 \* \* \* \*": .*\(write it like/,
    );
  });

  it('never overlaps runs, reports failures, and stops', async () => {
    let runs = 0;
    let skipped = 0;
    const errors: unknown[] = [];
    let release!: () => void;
    const job = scheduleDrift(
      '0 0 1 1 *',
      async () => {
        runs++;
        if (runs === 1) await new Promise<void>((r) => (release = r));
        if (runs === 2) throw new Error('agent server down');
      },
      { onSkipped: () => skipped++, onError: (e) => errors.push(e) },
    );
    expect(job.next()?.toISOString()).toMatch(/-01-01T00:00:00\.000Z$/);
    const first = job.runNow();
    await job.runNow(); // while the first still runs: skipped
    expect([runs, skipped]).toEqual([1, 1]);
    release();
    await first;
    await job.runNow();
    expect(errors.map((e) => (e as Error).message)).toEqual(['agent server down']);
    job.stop();
    expect(job.next()).toBeNull();
  });
});
