/**
 * A server-first protocol (MySQL, SMTP, FTP…) under an identity whose `connection.tls.intercept` covers every
 * destination it reaches: the client is silent past the sniff, and is piped after it (the README's "costs
 * sniffTimeoutMs (300 ms) once per connection"). A fix for slow clients owed a credential (e87ec36) held every
 * silent client where an intercept was owed and refused it after handshakeTimeoutMs; the second review found it.
 */
import { execFile } from 'node:child_process';
import { symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataPlane } from '../../kernel-module/dataplane/dataplane.ts';
import type { MemoryInputs } from '../../kernel-module/dataplane/inputs.ts';
import {
  authority,
  baseInputs,
  destination,
  egress,
  id,
  identity,
  loopbackLookup,
  scratch,
  table,
} from '../dataplane/support.ts';

const CLIENT = id('review2/client');
const HOST = 'db.review2.test';

/** CONNECT, then wait (sending nothing) for the server's banner. */
const CLIENT_SCRIPT = `
import net from 'node:net';
const [proxyPort, target] = process.argv.slice(2);
const out = { connect: '', banner: '' };
const done = () => { process.stdout.write(JSON.stringify(out)); process.exit(0); };
setTimeout(done, 6000);
const s = net.connect(Number(proxyPort), '127.0.0.1', () => s.write('CONNECT ' + target + ' HTTP/1.1\\r\\nHost: ' + target + '\\r\\n\\r\\n'));
s.on('error', done);
let head = '';
s.on('data', (d) => {
  if (!out.connect) {
    head += d.toString('latin1');
    const at = head.indexOf('\\r\\n\\r\\n');
    if (at < 0) return;
    out.connect = head.split('\\r\\n')[0];
    out.banner += head.slice(at + 4);
  } else out.banner += d.toString('latin1');
  if (out.banner.includes('\\r\\n')) done();
});
s.on('close', done);
`;

describe('a server-first protocol under an identity that intercepts', () => {
  const tmp = scratch('riptides-review2-');
  let inputs: MemoryInputs;
  let dp: DataPlane;
  let banner: NetServer;
  let bannerPort = 0;
  let proxyPort = 0;
  let clientBin = '';
  let scriptFile = '';

  beforeAll(async () => {
    banner = createNetServer((s) => {
      s.on('error', () => {});
      // Reads what comes (as a real server does), so that it sees each connection end.
      s.resume();
      s.write('220 review2 banner\r\n');
    });
    await new Promise<void>((r) => banner.listen(0, '127.0.0.1', r));
    bannerPort = (banner.address() as { port: number }).port;
    const ca = await authority(join(tmp.dir, 'ca'));
    inputs = await baseInputs(new Map([['r2client', CLIENT]]), ca, [CLIENT]);
    const client = identity(CLIENT, { egress: [egress([destination(HOST, null)], { mode: null })] });
    client.inbound.intercept = true; // the quickstart's shape: the identity intercepts
    inputs.setRules(table([client]));
    clientBin = join(tmp.dir, 'r2client');
    symlinkSync(process.execPath, clientBin);
    scriptFile = join(tmp.dir, 'client.mjs');
    writeFileSync(scriptFile, CLIENT_SCRIPT);
    dp = new DataPlane({
      inputs,
      proxyListen: { host: '127.0.0.1', port: 0 },
      lookup: loopbackLookup,
      limits: { handshakeTimeoutMs: 3000 },
    });
    proxyPort = (await dp.start()).proxy!.port;
  }, 60_000);

  afterAll(async () => {
    await dp?.stop();
    await new Promise((r) => banner?.close(r));
    tmp.cleanup();
  });

  it('the server speaks first and the client receives its banner', async () => {
    const r = await new Promise<{ connect: string; banner: string }>((resolve, reject) =>
      execFile(
        clientBin,
        [scriptFile, String(proxyPort), `${HOST}:${bannerPort}`],
        { timeout: 15_000 },
        (err, stdout) => (err && !stdout ? reject(err) : resolve(JSON.parse(stdout))),
      ),
    );
    expect(r.connect).toMatch(/ 200 /);
    expect(r.banner, 'the server-first connection was refused (client-silent)').toBe(
      '220 review2 banner\r\n',
    );
    // The client is gone: nothing the data plane opened toward the server stays open (the pipe, the probe).
    const open = () => new Promise<number>((res) => banner.getConnections((_e, n) => res(n)));
    const started = Date.now();
    while ((await open()) > 0 && Date.now() - started < 10_000) await new Promise((w) => setTimeout(w, 50));
    expect(await open()).toBe(0);
  }, 30_000);
});
