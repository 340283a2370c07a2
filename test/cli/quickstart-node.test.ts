/**
 * The embedded default's node (reconciler/cli/quickstart.ts) and the flag named for a port in use
 * (reconciler/cli/node-flags.ts): the quickstart's data plane defaults apply flag by flag; the echo server's
 * certificate is made once, kept, remade when it cannot be kept, and is what real TLS verifies the echo server
 * against; a listen address maps back to the flag that asked for it.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import { describe, expect, it, onTestFinished } from 'vitest';
import { flagListeningAt } from '../../reconciler/cli/node-flags.ts';
import {
  ECHO_CERT_VALIDITY_DAYS,
  quickstartEchoCertificate,
  withQuickstartNodeDefaults,
} from '../../reconciler/cli/quickstart.ts';
import { tempDir } from '../support/scratch.ts';

const INBOUND = 'identity=quickstart/app/orders-api,listen=127.0.0.1:18080,forward=127.0.0.1:18081';

describe('the quickstart node defaults', () => {
  it('fill in the proxy and the orders-api inbound mapping, each only where its flag is not given', () => {
    expect(withQuickstartNodeDefaults({}).values).toEqual({
      'proxy-listen': '127.0.0.1:15001',
      inbound: [INBOUND],
    });
    const some = withQuickstartNodeDefaults({
      'proxy-listen': '127.0.0.1:0',
      transparent: '127.0.0.1:15002',
    });
    expect(some.values).toEqual({
      'proxy-listen': '127.0.0.1:0',
      transparent: '127.0.0.1:15002',
      inbound: [INBOUND],
    });
    expect([...some.defaulted]).toEqual(['inbound']);
    const mine = 'identity=app/x,listen=127.0.0.1:1,forward=127.0.0.1:2';
    const none = withQuickstartNodeDefaults({ 'proxy-listen': '127.0.0.1:9', inbound: [mine] });
    expect(none.values).toEqual({ 'proxy-listen': '127.0.0.1:9', inbound: [mine] });
    expect(none.defaulted.size).toBe(0);
  });

  it('name the flag whose address is in use', () => {
    const values = {
      'proxy-listen': '127.0.0.1:15001',
      transparent: '127.0.0.1:15002',
      'metrics-listen': '127.0.0.1:0',
      inbound: [INBOUND],
      outbound: ['listen=[::1]:7000,destination=example.com:443'],
    };
    expect(flagListeningAt(values, { host: '127.0.0.1', port: 15001 })).toBe('--proxy-listen');
    expect(flagListeningAt(values, { host: '127.0.0.1', port: 15002 })).toBe('--transparent');
    expect(flagListeningAt(values, { host: '127.0.0.1', port: 18080 })).toBe('--inbound');
    expect(flagListeningAt(values, { host: '::1', port: 7000 })).toBe('--outbound');
    // forward= is where the workload listens, not the data plane; port 0 never collides.
    expect(flagListeningAt(values, { host: '127.0.0.1', port: 18081 })).toBeNull();
    expect(flagListeningAt(values, { host: '127.0.0.1', port: 0 })).toBeNull();
  });
});

describe("the quickstart echo server's certificate", () => {
  it('is made once (key 0600), kept, and verifies the echo server over real TLS at 127.0.0.1', async () => {
    const dir = join(tempDir('qs-echo'), 'quickstart');
    const first = await quickstartEchoCertificate(dir);
    expect(first.made).toBe(true);
    expect(statSync(first.keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const cert = new X509Certificate(first.certPem);
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkHost('localhost')).toBe('localhost');
    const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
    expect(Math.round(days)).toBe(ECHO_CERT_VALIDITY_DAYS);

    const again = await quickstartEchoCertificate(dir);
    expect(again).toEqual({ ...first, made: false });

    // What the data plane does with it as --upstream-ca: verify the server it is given to, by IP.
    const server = createServer(
      { cert: readFileSync(first.certFile), key: readFileSync(first.keyFile) },
      (s) => s.end('echo'),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    onTestFinished(() => new Promise<void>((r) => server.close(() => r())));
    const { port } = server.address() as AddressInfo;
    const got = await new Promise<string>((resolve, reject) => {
      const c = connect({ host: '127.0.0.1', port, ca: first.certPem }, () => {
        let data = '';
        c.on('data', (b: Buffer) => {
          data += b.toString();
        });
        c.on('end', () => resolve(data));
      });
      c.on('error', reject);
    });
    expect(got).toBe('echo');
  });

  it('is made anew when within 30 days of expiry, or when the key does not match', async () => {
    const dir = tempDir('qs-echo-renew');
    const first = await quickstartEchoCertificate(dir);
    const late = new Date(Date.now() + (ECHO_CERT_VALIDITY_DAYS - 20) * 86_400_000);
    const renewed = await quickstartEchoCertificate(dir, late);
    expect(renewed.made).toBe(true);
    expect(renewed.certPem).not.toBe(first.certPem);
    expect(Date.parse(new X509Certificate(renewed.certPem).validFrom)).toBeGreaterThan(Date.now());

    const other = await quickstartEchoCertificate(tempDir('qs-echo-other'));
    writeFileSync(renewed.keyFile, readFileSync(other.keyFile));
    const fixed = await quickstartEchoCertificate(dir);
    expect(fixed.made).toBe(true);
    expect(
      new X509Certificate(fixed.certPem).checkPrivateKey(createPrivateKey(readFileSync(fixed.keyFile))),
    ).toBe(true);
  });
});
