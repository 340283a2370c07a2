/**
 * A real PostgreSQL 15 for tests: initdb + pg_ctl from Debian's /usr/lib/postgresql/15/bin into a temp dir,
 * run as `nobody` (PostgreSQL refuses root), listening on 127.0.0.1 only, trust authentication.
 */
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BIN = '/usr/lib/postgresql/15/bin';
const NOBODY = 65_534;

export interface Postgres {
  port: number;
  user: string;
  stop(): void;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

export async function startPostgres(): Promise<Postgres> {
  const dir = mkdtempSync(join(tmpdir(), 'riptides-pg-'));
  chownSync(dir, NOBODY, NOBODY);
  const asNobody = (cmd: string, args: string[]) =>
    execFileSync('/usr/sbin/runuser', ['-u', 'nobody', '--', join(BIN, cmd), ...args], {
      stdio: 'pipe',
      cwd: dir,
      timeout: 60_000,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C', LC_ALL: 'C' },
    });
  const data = join(dir, 'data');
  asNobody('initdb', ['-D', data, '-U', 'dp', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  asNobody('pg_ctl', [
    '-D',
    data,
    '-l',
    join(dir, 'log'),
    '-w',
    '-t',
    '30',
    '-o',
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
    'start',
  ]);
  return {
    port,
    user: 'dp',
    stop: () => {
      try {
        asNobody('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
