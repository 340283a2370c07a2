import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createWebhookHandler,
  ReplayGuard,
  verifySignature,
  type WebhookOptions,
  type WebhookOutcome,
} from '../../reconciler/loop/webhook.ts';

const SECRET = 'a-webhook-secret-of-enough-length';

/** HMAC-SHA256 hex by openssl, an implementation independent of the code under test. */
function hmac(body: string, secret = SECRET): string {
  const out = execFileSync('openssl', ['dgst', '-sha256', '-hmac', secret], { input: body }).toString();
  return out.trim().split('= ')[1]!;
}

interface Hook {
  url: string;
  port: number;
  outcomes: WebhookOutcome[];
}

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function startHook(opts: Partial<WebhookOptions> = {}): Promise<Hook> {
  const outcomes: WebhookOutcome[] = [];
  const handle = createWebhookHandler({ secret: SECRET, branch: 'main', ...opts }, (o) => outcomes.push(o));
  const server = createServer((req, res) => handle(req, res, (req.url ?? '').replace(/^\/hooks\//, '')));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/hooks`, port, outcomes };
}

function pushBody(ref = 'refs/heads/main', after = 'b'.repeat(40)): string {
  return JSON.stringify({ ref, before: 'a'.repeat(40), after, repository: { full_name: 'org/policies' } });
}

async function post(url: string, body: string, headers: Record<string, string>) {
  const res = await fetch(url, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', ...headers },
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('webhook signatures', () => {
  it("accepts GitHub's documented example signature and refuses it with another secret", () => {
    const headers = {
      'x-hub-signature-256': 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17',
    };
    const body = Buffer.from('Hello, World!');
    expect(verifySignature('github', headers, body, "It's a Secret to Everybody")).toEqual({ ok: true });
    expect(verifySignature('github', headers, body, "It's a Secret to Everybody!")).toEqual({
      ok: false,
      reason: 'bad-signature',
    });
  });

  it('GitHub: a good signature starts a pass (202); a bad, malformed or missing one is 401 and counted', async () => {
    const hook = await startHook();
    const body = pushBody();
    const good = await post(`${hook.url}/github`, body, {
      'x-github-event': 'push',
      'x-github-delivery': 'd-1',
      'x-hub-signature-256': `sha256=${hmac(body)}`,
    });
    expect(good).toEqual({ status: 202, json: { result: 'accepted' } });

    const flipped = hmac(body).replace(/^./, (c) => (c === '0' ? '1' : '0'));
    const bad = await post(`${hook.url}/github`, body, {
      'x-github-event': 'push',
      'x-hub-signature-256': `sha256=${flipped}`,
    });
    const otherSecret = await post(`${hook.url}/github`, body, {
      'x-github-event': 'push',
      'x-hub-signature-256': `sha256=${hmac(body, 'another-secret-of-enough-length')}`,
    });
    const noPrefix = await post(`${hook.url}/github`, body, {
      'x-github-event': 'push',
      'x-hub-signature-256': hmac(body),
    });
    const missing = await post(`${hook.url}/github`, body, { 'x-github-event': 'push' });
    expect([bad, otherSecret, noPrefix, missing].map((r) => r.status)).toEqual([401, 401, 401, 401]);
    expect(missing.json).toEqual({ result: 'rejected', reason: 'missing-signature' });
    expect(hook.outcomes.map((o) => o.result)).toEqual([
      'accepted',
      'rejected',
      'rejected',
      'rejected',
      'rejected',
    ]);
    expect(hook.outcomes.slice(1).map((o) => o.result === 'rejected' && o.reason)).toEqual([
      'bad-signature',
      'bad-signature',
      'bad-signature',
      'missing-signature',
    ]);
  });

  it('GitLab token, Gitea and generic HMAC signatures: good accepted, bad refused', async () => {
    const hook = await startHook();
    const cases: Array<
      [string, (b: string) => Record<string, string>, (b: string) => Record<string, string>]
    > = [
      [
        'gitlab',
        () => ({ 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': SECRET }),
        () => ({ 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': `${SECRET}x` }),
      ],
      [
        'gitea',
        (b) => ({ 'x-gitea-event': 'push', 'x-gitea-signature': hmac(b) }),
        (b) => ({ 'x-gitea-event': 'push', 'x-gitea-signature': hmac(`${b} `) }),
      ],
      [
        'generic',
        (b) => ({ 'x-signature': `sha256=${hmac(b)}` }),
        (b) => ({ 'x-signature': `sha1=${hmac(b)}` }),
      ],
    ];
    for (const [provider, good, bad] of cases) {
      // A different body per provider, so the replay guard does not answer "duplicate".
      const b = pushBody('refs/heads/main', provider.padEnd(40, '0'));
      expect((await post(`${hook.url}/${provider}`, b, good(b))).status, provider).toBe(202);
      expect((await post(`${hook.url}/${provider}`, b, bad(b))).status, provider).toBe(401);
    }
  });

  it('an unauthenticated body is never parsed: invalid JSON with a bad signature is 401, with a good one 400', async () => {
    const hook = await startHook();
    const junk = '{"ref": ';
    expect(
      (
        await post(`${hook.url}/github`, junk, {
          'x-github-event': 'push',
          'x-hub-signature-256': `sha256=${'0'.repeat(64)}`,
        })
      ).status,
    ).toBe(401);
    expect(
      (
        await post(`${hook.url}/github`, junk, {
          'x-github-event': 'push',
          'x-hub-signature-256': `sha256=${hmac(junk)}`,
        })
      ).status,
    ).toBe(400);
  });

  it('a provider turned off answers 404; a short secret is refused at start', async () => {
    const hook = await startHook({ providers: ['github'] });
    const body = pushBody();
    expect(
      (await post(`${hook.url}/gitlab`, body, { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': SECRET }))
        .status,
    ).toBe(404);
    expect(() => createWebhookHandler({ secret: 'short', branch: 'main' }, () => {})).toThrow(
      /at least 16 bytes/,
    );
  });
});

describe('webhook events', () => {
  it('a push to another branch, a tag, a ping and another event start nothing', async () => {
    const hook = await startHook();
    const send = (body: string, event = 'push') =>
      post(`${hook.url}/github`, body, {
        'x-github-event': event,
        'x-hub-signature-256': `sha256=${hmac(body)}`,
      });
    expect((await send(pushBody('refs/heads/feature'))).json).toEqual({
      result: 'ignored',
      why: 'other-branch',
      tracking: 'refs/heads/main',
    });
    expect((await send(pushBody('refs/tags/v1'))).json.why).toBe('other-branch');
    expect((await send('{"zen":"hi"}', 'ping')).json).toEqual({ result: 'ignored', why: 'ping' });
    expect((await send('{"action":"opened"}', 'pull_request')).json).toEqual({
      result: 'ignored',
      why: 'not-a-push',
    });
    expect(hook.outcomes.filter((o) => o.result === 'accepted')).toHaveLength(0);
  });

  it('before the tracked branch is known every authenticated push starts a pass; once known, others are ignored', async () => {
    // A reconciler without --branch learns the default branch on its first fetch; a git server does not
    // retry a delivery refused meanwhile, so such a push must still start a pass.
    let branch: string | null = null;
    const hook = await startHook({ branch: () => branch });
    const send = (ref: string) => {
      const body = pushBody(ref, ref.length.toString(16).repeat(40).slice(0, 40));
      return post(`${hook.url}/github`, body, {
        'x-github-event': 'push',
        'x-hub-signature-256': `sha256=${hmac(body)}`,
      });
    };
    expect(await send('refs/heads/feature')).toEqual({ status: 202, json: { result: 'accepted' } });
    branch = 'trunk';
    expect((await send('refs/heads/main')).json).toEqual({
      result: 'ignored',
      why: 'other-branch',
      tracking: 'refs/heads/trunk',
    });
    expect((await send('refs/heads/trunk')).status).toBe(202);
    expect(hook.outcomes.map((o) => o.result)).toEqual(['accepted', 'ignored', 'accepted']);
    const unsigned = await post(`${hook.url}/github`, pushBody('refs/heads/x'), { 'x-github-event': 'push' });
    expect(unsigned.status).toBe(401);
  });

  it('a replayed delivery (same id, or byte-identical body) is acknowledged as duplicate and starts nothing', async () => {
    const hook = await startHook();
    const body = pushBody();
    const headers = {
      'x-github-event': 'push',
      'x-github-delivery': 'delivery-7',
      'x-hub-signature-256': `sha256=${hmac(body)}`,
    };
    expect((await post(`${hook.url}/github`, body, headers)).status).toBe(202);
    expect(await post(`${hook.url}/github`, body, headers)).toEqual({
      status: 200,
      json: { result: 'duplicate' },
    });
    // Same body under a new delivery id: still the same push.
    expect(
      (await post(`${hook.url}/github`, body, { ...headers, 'x-github-delivery': 'delivery-8' })).json.result,
    ).toBe('duplicate');
    // Same delivery id with another body: a redelivery of the same event id is a duplicate too.
    const other = pushBody('refs/heads/main', 'c'.repeat(40));
    expect(
      (
        await post(`${hook.url}/github`, other, {
          ...headers,
          'x-hub-signature-256': `sha256=${hmac(other)}`,
        })
      ).json.result,
    ).toBe('duplicate');
    // A new push (new body, new id) is accepted.
    const next = pushBody('refs/heads/main', 'd'.repeat(40));
    expect(
      (
        await post(`${hook.url}/github`, next, {
          ...headers,
          'x-github-delivery': 'delivery-9',
          'x-hub-signature-256': `sha256=${hmac(next)}`,
        })
      ).status,
    ).toBe(202);
    expect(hook.outcomes.map((o) => o.result)).toEqual([
      'accepted',
      'duplicate',
      'duplicate',
      'duplicate',
      'accepted',
    ]);
  });

  it('a generic sender posting one constant body on every push (no commit named, no delivery id) starts a pass each time', async () => {
    const hook = await startHook();
    const body = '{"event":"push"}';
    const headers = { 'x-signature': `sha256=${hmac(body)}` };
    for (let i = 0; i < 3; i++) expect((await post(`${hook.url}/generic`, body, headers)).status).toBe(202);
    expect(hook.outcomes.map((o) => o.result)).toEqual(['accepted', 'accepted', 'accepted']);
  });

  it('the replay memory is bounded in entries and age', () => {
    let now = 0;
    const guard = new ReplayGuard(1000, 3, () => now);
    expect(guard.check(['a'])).toBe(false);
    expect(guard.check(['a'])).toBe(true);
    guard.check(['b']);
    guard.check(['c']);
    guard.check(['d']); // evicts the oldest, 'a'
    expect(guard.check(['a'])).toBe(false);
    now = 5000;
    expect(guard.check(['d'])).toBe(false); // older than the window
  });
});

describe('webhook budget', () => {
  it('a body over the cap is 413, whether declared or streamed', async () => {
    const hook = await startHook({ maxBodyBytes: 1024 });
    const big = 'x'.repeat(4096);
    const declared = await post(`${hook.url}/github`, big, {
      'x-github-event': 'push',
      'x-hub-signature-256': `sha256=${hmac(big)}`,
    });
    expect(declared.status).toBe(413);
    // Chunked: no Content-Length, the cap is enforced while reading.
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < 8; i++) c.enqueue(new TextEncoder().encode('y'.repeat(512)));
        c.close();
      },
    });
    const res = await fetch(`${hook.url}/github`, {
      method: 'POST',
      body: stream,
      duplex: 'half',
      headers: { 'x-github-event': 'push', 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` },
    } as RequestInit).catch((err: Error) => err);
    // The server answers 413 and closes; depending on timing the client sees the answer or the reset.
    if (res instanceof Error)
      expect(hook.outcomes.at(-1)).toMatchObject({ result: 'rejected', reason: 'too-large' });
    else expect(res.status).toBe(413);
    expect(hook.outcomes.map((o) => o.result === 'rejected' && o.reason)).toEqual(['too-large', 'too-large']);
  });

  it('a sender trickling its body past the deadline gets 408 and a closed connection', async () => {
    const hook = await startHook({ deadlineMs: 300 });
    const socket = connect(hook.port, '127.0.0.1');
    let received = '';
    socket.on('data', (d) => {
      received += d.toString();
    });
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.write(
      'POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nX-GitHub-Event: push\r\n\r\n',
    );
    const trickle = setInterval(() => socket.writable && socket.write('x'), 50);
    await closed;
    clearInterval(trickle);
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(hook.outcomes).toEqual([
      { result: 'rejected', provider: 'github', reason: 'deadline', status: 408 },
    ]);
  });
});
