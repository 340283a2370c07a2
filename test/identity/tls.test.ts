import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  type ConnectionOptions,
  connect,
  createServer,
  type PeerCertificate,
  type TLSSocket,
} from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Authority, generateKeyAndCsr, initAuthority } from '../../reconciler/identity/authority.ts';
import { parseCertificate } from '../../reconciler/identity/x509.ts';
import { parseBundlePem, verifyX509Svid } from '../../reconciler/identity/x509-svid.ts';
import { DAY, fakeClock, tempDir } from '../support/identity-helpers.ts';

const tmp = tempDir();
afterAll(tmp.cleanup);

interface Svid {
  key: string;
  cert: string;
}

async function mint(authority: Authority, spiffeId: string): Promise<Svid> {
  const { keyPem, csrPem } = await generateKeyAndCsr(spiffeId);
  return { key: keyPem, cert: (await authority.signX509Svid({ csrPem })).chainPem };
}

/** The URI SANs of a certificate as node:tls reports them (`URI:spiffe://…`). */
function uriSans(subjectAltName: string | undefined): string[] {
  return (subjectAltName ?? '')
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
}

/** A client check for a URI-SAN-only server certificate: Node's default wants a DNS name. */
function expectServerId(expected: string): ConnectionOptions['checkServerIdentity'] {
  return (_host: string, cert: PeerCertificate) => {
    const ids = uriSans(cert.subjectaltname);
    return ids.length === 1 && ids[0] === expected
      ? undefined
      : new Error(`server SPIFFE ID ${ids.join(',') || '(none)'} is not ${expected}`);
  };
}

/**
 * An mTLS server that answers each connection with the SPIFFE ID it read from the client certificate and
 * that our verifier confirms against the bundle, and counts the connections it served.
 */
async function startServer(server: Svid, bundlePem: string) {
  const served = { count: 0 };
  const bundle = new Map([['example.org', parseBundlePem(bundlePem)]]);
  const srv = createServer(
    { key: server.key, cert: server.cert, ca: bundlePem, requestCert: true, rejectUnauthorized: true },
    (socket: TLSSocket) => {
      const peer = socket.getPeerX509Certificate();
      const [id] = uriSans(peer?.subjectAltName);
      const chain = [];
      for (let c = socket.getPeerCertificate(true); c?.raw; c = c.issuerCertificate) {
        chain.push(parseCertificate(c.raw));
        if (c.issuerCertificate === c) break;
      }
      const verified = verifyX509Svid(chain, bundle).spiffeId;
      served.count++;
      socket.end(`${id} ${verified}`);
    },
  );
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return { srv, port: (srv.address() as AddressInfo).port, served };
}

function request(port: number, client: Svid, bundlePem: string, serverId: string) {
  return new Promise<{ reply: string; serverId: string | undefined }>((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port,
      key: client.key,
      cert: client.cert,
      ca: bundlePem,
      checkServerIdentity: expectServerId(serverId),
      timeout: 5_000,
    });
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      reply += d;
    });
    socket.on('end', () =>
      resolve({ reply, serverId: uriSans(socket.getPeerX509Certificate()?.subjectAltName)[0] }),
    );
    socket.on('timeout', () => socket.destroy(new Error('timed out')));
    socket.on('error', reject);
  });
}

/**
 * With TLS 1.3 the client finishes its handshake before the server has judged the client certificate, so a
 * refused client sees either an alert (error) or a connection closed without the server's reply.
 */
async function refused(attempt: Promise<{ reply: string }>): Promise<boolean> {
  try {
    return (await attempt).reply === '';
  } catch {
    return true;
  }
}

describe('mutual TLS between two SVIDs (node:tls)', () => {
  let authority: Authority;
  let server: Svid;
  let client: Svid;
  let running: Awaited<ReturnType<typeof startServer>>;

  beforeAll(async () => {
    authority = await initAuthority({ trustDomain: 'example.org', dir: join(tmp.dir, 'ca') });
    server = await mint(authority, 'spiffe://example.org/server');
    client = await mint(authority, 'spiffe://example.org/client');
    running = await startServer(server, authority.bundlePem());
  });
  afterAll(() => running.srv.close());

  it('each side reads the SPIFFE ID of the other', async () => {
    const result = await request(running.port, client, authority.bundlePem(), 'spiffe://example.org/server');
    expect(result.serverId).toBe('spiffe://example.org/server');
    expect(result.reply).toBe('spiffe://example.org/client spiffe://example.org/client');
  });

  it('the client refuses a server with another SPIFFE ID', async () => {
    await expect(
      request(running.port, client, authority.bundlePem(), 'spiffe://example.org/db'),
    ).rejects.toThrow('server SPIFFE ID spiffe://example.org/server is not spiffe://example.org/db');
  });

  it('the server refuses a client certificate from a foreign CA, even for the same trust domain name', async () => {
    const foreign = await initAuthority({ trustDomain: 'example.org', dir: join(tmp.dir, 'foreign') });
    const intruder = await mint(foreign, 'spiffe://example.org/client');
    const before = running.served.count;
    const attempt = request(running.port, intruder, authority.bundlePem(), 'spiffe://example.org/server');
    expect(await refused(attempt)).toBe(true);
    expect(running.served.count).toBe(before);
  });

  it('the client refuses a server certificate from a foreign CA', async () => {
    const foreign = await initAuthority({ trustDomain: 'example.org', dir: join(tmp.dir, 'foreign2') });
    const impostor = await startServer(
      await mint(foreign, 'spiffe://example.org/server'),
      authority.bundlePem(),
    );
    try {
      await expect(
        request(impostor.port, client, authority.bundlePem(), 'spiffe://example.org/server'),
      ).rejects.toMatchObject({ code: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' });
    } finally {
      impostor.srv.close();
    }
  });

  describe('expired certificates (issued by a CA whose clock was set three days back)', () => {
    let past: Authority;
    beforeAll(async () => {
      const clock = fakeClock(Date.now() - 3 * DAY);
      past = await initAuthority({ trustDomain: 'example.org', dir: join(tmp.dir, 'past'), now: clock.now });
    });

    it('the client refuses an expired server certificate', async () => {
      const stale = await startServer(await mint(past, 'spiffe://example.org/server'), past.bundlePem());
      try {
        await expect(
          request(stale.port, client, past.bundlePem(), 'spiffe://example.org/server'),
        ).rejects.toMatchObject({ code: 'CERT_HAS_EXPIRED' });
      } finally {
        stale.srv.close();
      }
    });

    it('the server refuses an expired client certificate', async () => {
      const stale = await mint(past, 'spiffe://example.org/client');
      const peer = await startServer(server, `${authority.bundlePem()}${past.bundlePem()}`);
      try {
        expect(
          await refused(request(peer.port, stale, authority.bundlePem(), 'spiffe://example.org/server')),
        ).toBe(true);
        expect(peer.served.count).toBe(0);
      } finally {
        peer.srv.close();
      }
    });
  });
});
