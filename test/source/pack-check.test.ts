/**
 * What a fetched pack may make isomorphic-git inflate, checked before it is indexed: packs made by git pass
 * whole; an object over the per-object cap, a pack over the total, an object that inflates past the size its
 * header states and a delta that states a huge result are refused from their headers, inflating at most the
 * stated size. Over the wire, a 200 MiB file of one byte (under 1 MB in git) is refused without taking
 * 200 MiB.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkPack } from '../../reconciler/source/pack-check.ts';
import { runCliBounded } from '../support/bounded.ts';
import { createBareRepo, git, WorkClone } from '../support/git-fixtures.ts';
import { type GitServer, startGitServer } from '../support/git-server.ts';
import { scratch } from './helpers.ts';

/** An upload-pack response as git-http-backend sends it: NAK, then the pack in side-band-64k lines. */
function response(pack: Buffer, lineBytes = 65515): Buffer[] {
  const pkt = (data: Buffer) =>
    Buffer.concat([Buffer.from((data.length + 4).toString(16).padStart(4, '0')), data]);
  const out = [pkt(Buffer.from('NAK\n')), pkt(Buffer.from('\x02Counting objects: done\n'))];
  for (let i = 0; i < pack.length; i += lineBytes)
    out.push(pkt(Buffer.concat([Buffer.from([1]), pack.subarray(i, i + lineBytes)])));
  out.push(Buffer.from('0000'));
  return out;
}

/** A pack entry: type and stated size in the header, then `data` deflated (or `raw` zlib bytes as given). */
function entry(type: number, size: number, body: { data?: Buffer; raw?: Buffer; base?: Buffer }): Buffer {
  const head: number[] = [];
  let byte = (type << 4) | (size & 0x0f);
  let rest = Math.floor(size / 16);
  while (rest > 0) {
    head.push(byte | 0x80);
    byte = rest & 0x7f;
    rest = Math.floor(rest / 128);
  }
  head.push(byte);
  return Buffer.concat([
    Buffer.from(head),
    body.base ?? Buffer.alloc(0),
    body.raw ?? deflateSync(body.data!),
  ]);
}

function pack(...entries: Buffer[]): Buffer {
  const header = Buffer.alloc(12);
  header.write('PACK', 0, 'latin1');
  header.writeUInt32BE(2, 4);
  header.writeUInt32BE(entries.length, 8);
  return Buffer.concat([header, ...entries, Buffer.alloc(20)]);
}

const varint = (n: number): number[] => {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n >= 128 ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  return out;
};

async function* chunks(parts: Buffer[]): AsyncIterable<Uint8Array> {
  // Re-cut into uneven chunks, as a spool file is read.
  const all = Buffer.concat(parts);
  for (let i = 0; i < all.length; i += 7777) yield all.subarray(i, i + 7777);
}

const LIMITS = { maxObjectBytes: 1024 * 1024, maxTotalBytes: 4 * 1024 * 1024 };
const BLOB = 3;
const REF_DELTA = 7;

describe('checkPack', () => {
  const tmp = scratch('pack-check');
  afterAll(() => tmp.cleanup());

  it('passes a pack git made, counting every object', async () => {
    const repo = join(tmp.dir, 'made-by-git');
    mkdirSync(repo);
    execFileSync('git', ['init', '--quiet', '-b', 'main'], { cwd: repo });
    for (let i = 0; i < 40; i++) {
      writeFileSync(join(repo, 'a.yaml'), `kind: Service\n${'line\n'.repeat(i * 50)}`);
      writeFileSync(join(repo, `f${i}.yaml`), `n: ${i}\n`);
      execFileSync('git', ['add', '--all'], { cwd: repo });
      execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '--quiet', '-m', `c${i}`], {
        cwd: repo,
      });
    }
    const made = execFileSync('git', ['pack-objects', '--all', '--stdout', '--delta-base-offset'], {
      cwd: repo,
      input: '',
    });
    const count = made.readUInt32BE(8);
    const verdict = await checkPack(chunks(response(made)), LIMITS);
    expect(verdict).toMatchObject({ ok: true, objects: count });
    expect(count).toBeGreaterThan(120);
  });

  it('refuses an object whose header states more than the per-object cap, before inflating it', async () => {
    const big = LIMITS.maxObjectBytes + 1;
    const verdict = await checkPack(
      chunks(response(pack(entry(BLOB, big, { data: Buffer.alloc(big, 0x61) })))),
      LIMITS,
    );
    expect(verdict).toEqual({ ok: false, reason: 'object-too-large', bytes: big });
  });

  it('refuses an object that inflates past the size its header states (a lying header)', async () => {
    const verdict = await checkPack(
      chunks(response(pack(entry(BLOB, 100, { data: Buffer.alloc(900_000, 0x61) })))),
      LIMITS,
    );
    expect(verdict).toEqual({ ok: false, reason: 'size-mismatch', bytes: 100 });
  });

  it('refuses a delta a few bytes long that states a result over the cap', async () => {
    const huge = 3 * 1024 * 1024 * 1024;
    // base size 4, result size 3 GiB, then copy operations (offset 0, size 0x10000 each) from the base.
    const delta = Buffer.from([...varint(4), ...varint(huge), ...new Array(64).fill(0x80)]);
    const verdict = await checkPack(
      chunks(
        response(
          pack(
            entry(BLOB, 4, { data: Buffer.from('base') }),
            entry(REF_DELTA, delta.length, { base: Buffer.alloc(20, 0xab), data: delta }),
          ),
        ),
      ),
      LIMITS,
    );
    expect(verdict).toEqual({ ok: false, reason: 'object-too-large', bytes: huge });
  });

  it('refuses a pack whose objects together inflate past the total', async () => {
    const part = Buffer.alloc(LIMITS.maxObjectBytes, 0x62);
    const entries = Array.from({ length: 5 }, () => entry(BLOB, part.length, { data: part }));
    const verdict = await checkPack(chunks(response(pack(...entries))), LIMITS);
    expect(verdict).toEqual({ ok: false, reason: 'total-too-large', bytes: 5 * part.length });
  });

  it('reads an object whose stream is far longer than its content (stored blocks), across many lines', async () => {
    const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) & 0xff));
    const raw = deflateSync(data, { level: 0 });
    const verdict = await checkPack(
      chunks(
        response(pack(entry(BLOB, data.length, { raw }), entry(BLOB, 3, { data: Buffer.from('end') })), 999),
      ),
      LIMITS,
    );
    expect(verdict).toEqual({ ok: true, objects: 2, inflatedBytes: data.length + 3 });
  });
});

describe('plan of a remote holding a 200 MiB file of one byte (under 1 MB in git)', () => {
  const tmp = scratch('remote-huge-blob');
  let server: GitServer;

  beforeAll(async () => {
    const root = join(tmp.dir, 'srv');
    await createBareRepo(root, 'policy');
    server = await startGitServer({ root });
    const work = await WorkClone.create(`${server.url}/policy.git`, join(tmp.dir, 'work'));
    work.write({ 'riptides.config.yaml': 'trustDomain: example.com\n' });
    await work.commit('base');
    await work.push('main');
    await work.git('checkout', '--quiet', '-b', 'feature');
    writeFileSync(join(work.dir, 'huge.yaml'), Buffer.alloc(200 * 1024 * 1024, 0x61));
    await work.commit('huge');
    await git(work.dir, 'push', '--quiet', 'origin', 'feature');
  }, 120_000);
  afterAll(async () => {
    await server.close();
    tmp.cleanup();
  });

  it('is refused from the pack before isomorphic-git inflates it, and says which cap to raise', async () => {
    const run = await runCliBounded(
      [
        'plan',
        '--repo',
        `${server.url}/policy.git`,
        '--head',
        'feature',
        '--base',
        'main',
        '--cache-dir',
        join(tmp.dir, 'cache'),
      ],
      { env: { XDG_CACHE_HOME: join(tmp.dir, 'xdg') }, timeoutMs: 60_000 },
    );
    expect(run.timedOut).toBe(false);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(
      /the pack holds an object of 209715200 bytes once inflated \(\d+ bytes received\), over the cap of 134217728 bytes per object \(a quarter of the repository cap\); nothing was indexed/,
    );
    expect(run.stderr).toContain('raise the cap with --max-repo-size (plan)');
    expect(run.peakRssMiB).toBeLessThan(200);
  });
});
