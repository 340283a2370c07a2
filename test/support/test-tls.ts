/**
 * A throwaway CA and a loopback server certificate, made with the openssl CLI once per test process into a
 * temp dir, so every test server speaks real TLS and every client verifies it against this CA only. The
 * certificate also serves as a client certificate, for mutual TLS between test peers.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestTls {
  /** PEM of the CA that signed `cert`; give it to clients as their only trust anchor. */
  ca: string;
  cert: string;
  key: string;
}

let cached: TestTls | undefined;

export function testTls(): TestTls {
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'riptides-test-tls-'));
  try {
    const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    run('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key');
    run(
      'req',
      '-x509',
      '-new',
      '-key',
      'ca.key',
      '-subj',
      '/CN=riptides test CA',
      '-days',
      '2',
      '-out',
      'ca.pem',
    );
    run('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'server.key');
    run('req', '-new', '-key', 'server.key', '-subj', '/CN=localhost', '-out', 'server.csr');
    writeFileSync(
      join(dir, 'ext.cnf'),
      'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n',
    );
    run(
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      'ext.cnf',
      '-out',
      'server.pem',
    );
    cached = {
      ca: readFileSync(join(dir, 'ca.pem'), 'utf8'),
      cert: readFileSync(join(dir, 'server.pem'), 'utf8'),
      key: readFileSync(join(dir, 'server.key'), 'utf8'),
    };
    return cached;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
