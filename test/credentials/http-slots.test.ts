/**
 * The providers' HTTP exchange through an agent with a socket limit: requests beyond the limit wait in our
 * queue (within their deadline), not in the agent's, and one whose deadline passes there is never sent.
 */
import type { ServerResponse } from 'node:http';
import { Agent, createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { boundedRequest } from '../../reconciler/credentials/http.ts';
import { testTls } from '../support/test-tls.ts';

const closers: Array<() => void> = [];

/** GET `path` from a loopback test server through `agent`, as the Vault provider sends its requests. */
const get = (agent: Agent, server: Server, path: string, deadlineMs: number) =>
  boundedRequest({
    url: new URL(path, `https://127.0.0.1:${(server.address() as AddressInfo).port}`),
    method: 'GET',
    agent,
    deadlineMs,
    maxBodyBytes: 1024,
    what: 'Vault',
    carries: 'the test token',
  });
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

describe('boundedRequest through an agent with a socket limit', () => {
  it('runs at most maxSockets at once; a request whose deadline passes while it waits is never sent', async () => {
    const tls = testTls();
    const seen: string[] = [];
    const held: ServerResponse[] = [];
    const server = createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      seen.push(req.url ?? '');
      if (req.url?.startsWith('/hold')) held.push(res);
      else res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const agent = new Agent({ keepAlive: true, maxSockets: 2, ca: tls.ca });
    closers.push(() => {
      for (const res of held) res.destroy();
      agent.destroy();
      server.close();
    });
    const request = (path: string, deadlineMs: number) => get(agent, server, path, deadlineMs);

    // Two requests hold both sockets for 3 s; three more can wait 300 ms.
    const holding = [request('/hold/1', 3000), request('/hold/2', 3000)].map((p) => p.catch((e: Error) => e));
    const queued = ['/late/1', '/late/2', '/late/3'].map((path) => request(path, 300).catch((e: Error) => e));
    // While they wait, the agent's own queue holds nothing: they are closures in ours.
    await new Promise((r) => setTimeout(r, 100));
    expect(Object.values(agent.requests).flat()).toHaveLength(0);
    for (const e of await Promise.all(queued))
      expect(String(e)).toContain('no answer within 300 ms (the request was abandoned at that deadline)');

    // The held pair ends (answered); a request made now gets a socket and its answer.
    for (const res of held) res.end('done');
    for (const r of await Promise.all(holding)) expect((r as { status: number }).status).toBe(200);
    const after = await request('/after', 3000);
    expect(after.body.toString()).toBe('ok');
    expect(seen.sort()).toEqual(['/after', '/hold/1', '/hold/2']);
  });

  it('keeps one queue per origin: a Vault that never answers does not hold the slots of another', async () => {
    const tls = testTls();
    const held: ServerResponse[] = [];
    const hanging = createServer({ cert: tls.cert, key: tls.key }, (_req, res) => held.push(res));
    const answering = createServer({ cert: tls.cert, key: tls.key }, (_req, res) => res.end('ok'));
    await Promise.all([hanging, answering].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
    const agent = new Agent({ keepAlive: true, maxSockets: 2, ca: tls.ca });
    closers.push(() => {
      for (const res of held) res.destroy();
      agent.destroy();
      hanging.close();
      answering.close();
    });
    const at = (server: Server, deadlineMs: number) => get(agent, server, '/v1/x', deadlineMs);
    const stuck = [at(hanging, 1500), at(hanging, 1500)].map((p) => p.catch((e: Error) => e));
    const other = await at(answering, 1000);
    expect(other.body.toString()).toBe('ok');
    for (const e of await Promise.all(stuck)) expect(String(e)).toContain('no answer within 1500 ms');
  });
});
