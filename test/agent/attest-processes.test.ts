import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { type AttestationSnapshot, Attestor, type ProcessAttestation } from '../../agent/attest/attestor.ts';
import { collectLabels } from '../../agent/attest/collect.ts';
import type { IdentitySelectors } from '../../agent/attest/match.ts';
import { ControlWriter } from '../../kernel-module/control/writer.ts';
import { waitFor } from '../support/cred-wait.ts';
import { copyBinary, moveToCgroup, start, uniqueName } from '../support/processes.ts';
import { tempDir } from '../support/scratch.ts';

const TD = 'spiffe://example.org';

async function attestor(identities: IdentitySelectors[], events: 'auto' | 'off' = 'auto') {
  const a = new Attestor({ kube: null, events, rescanIntervalMs: events === 'off' ? 200 : 30_000 });
  const snapshots: AttestationSnapshot[] = [];
  const conflicts: ProcessAttestation[] = [];
  a.on('change', (s) => snapshots.push(s));
  a.on('conflict', (c) => conflicts.push(c));
  a.setIdentities(identities);
  await a.start();
  onTestFinished(() => a.stop());
  return { a, snapshots, conflicts };
}

const pidsOf = (a: Attestor, id: string) => a.snapshot().byIdentity.get(id) ?? [];

describe('attestation of real processes', () => {
  it('matches by name, binary path, cmdline prefix and list values', async () => {
    const nameA = uniqueName();
    const nameB = uniqueName();
    const binA = copyBinary(nameA);
    const binB = copyBinary(nameB);
    const { a } = await attestor([
      { spiffeId: `${TD}/by-name`, selectors: [{ 'process:name': [nameA] }] },
      { spiffeId: `${TD}/by-path`, selectors: [{ 'process:binary:path': [binB] }] },
      {
        spiffeId: `${TD}/by-list`,
        selectors: [{ 'process:name': ['no-such-thing', nameA, nameB], 'destination:port': ['8080'] }],
      },
    ]);
    // by-name and by-list both claim A, by-path and by-list both claim B, on overlapping ports: conflicts.
    const pa = start(binA);
    const pb = start(binB);
    await waitFor(
      'both attested',
      () => a.snapshot().processes.has(pa.pid) && a.snapshot().processes.has(pb.pid),
    );
    expect(a.snapshot().processes.get(pa.pid)?.conflict).toEqual([`${TD}/by-list`, `${TD}/by-name`]);
    // Without the overlapping identity each process gets exactly one.
    a.setIdentities([
      { spiffeId: `${TD}/by-name`, selectors: [{ 'process:name': [nameA] }] },
      { spiffeId: `${TD}/by-path`, selectors: [{ 'process:binary:path': [binB] }] },
    ]);
    expect(pidsOf(a, `${TD}/by-name`)).toEqual([pa.pid]);
    expect(pidsOf(a, `${TD}/by-path`)).toEqual([pb.pid]);
    a.setIdentities([{ spiffeId: `${TD}/by-list`, selectors: [{ 'process:name': [nameB, 'x', nameA] }] }]);
    expect(pidsOf(a, `${TD}/by-list`)).toEqual([pa.pid, pb.pid].sort((x, y) => x - y));
    // A prefix of the space-joined argv.
    const marker = uniqueName('srv');
    const pc = start('/bin/sleep', ['600'], { argv0: `${marker} --listen 127.0.0.1:8080 --mode` });
    a.setIdentities([
      {
        spiffeId: `${TD}/by-cmdline`,
        selectors: [{ 'process:cmdline': [`${marker} --listen 127.0.0.1:8080`] }],
      },
    ]);
    await waitFor('cmdline match', () => pidsOf(a, `${TD}/by-cmdline`).includes(pc.pid));
    expect(pidsOf(a, `${TD}/by-cmdline`)).toEqual([pc.pid]);
    expect((await collectLabels(pc.pid))?.['process:cmdline']).toEqual([
      `${marker} --listen 127.0.0.1:8080 --mode 600`,
    ]);
  });

  it('matches by uid (a child run as another uid with setpriv), comparing numbers', async () => {
    const name = uniqueName();
    const bin = copyBinary(name);
    const { a } = await attestor([
      { spiffeId: `${TD}/nobody`, selectors: [{ 'process:name': [name], 'process:uid': ['065534'] }] },
      { spiffeId: `${TD}/root`, selectors: [{ 'process:name': [name], 'process:uid': ['0'] }] },
    ]);
    const asNobody = start(bin, ['600'], { uid: 65534 });
    const asRoot = start(bin);
    await waitFor(
      'uid attested',
      () => pidsOf(a, `${TD}/nobody`).length === 1 && pidsOf(a, `${TD}/root`).length === 1,
    );
    expect(pidsOf(a, `${TD}/nobody`)).toEqual([asNobody.pid]);
    expect(pidsOf(a, `${TD}/root`)).toEqual([asRoot.pid]);
    expect((await collectLabels(asNobody.pid))?.['process:gid']).toEqual(['65534']);
  });

  for (const mode of ['auto', 'off'] as const) {
    it(`an identity whose process exits and returns (${mode === 'auto' ? 'proc connector' : 'rescans only'})`, async () => {
      const name = uniqueName();
      const bin = copyBinary(name);
      const id = `${TD}/worker`;
      const { a, snapshots } = await attestor(
        [{ spiffeId: id, selectors: [{ 'process:name': [name] }] }],
        mode,
      );
      expect(a.eventSource).toBe(mode === 'auto' ? 'proc-connector' : 'rescan');
      const first = start(bin);
      await waitFor('first attested', () => pidsOf(a, id).includes(first.pid));
      await first.stop();
      await waitFor('exit noticed', () => pidsOf(a, id).length === 0);
      expect(a.snapshot().processes.has(first.pid)).toBe(false);
      const again = start(bin);
      await waitFor('return attested', () => pidsOf(a, id).includes(again.pid));
      // The changes were published as they happened: present, gone, present again.
      const seen = snapshots.map((s) => (s.byIdentity.get(id) ?? []).join(','));
      expect(seen).toContain(String(first.pid));
      expect(seen).toContain('');
      expect(seen.at(-1)).toBe(String(again.pid));
    });
  }

  it('a matched process stays attested through rescans (no flapping, no change published)', async () => {
    const name = uniqueName();
    const bin = copyBinary(name);
    const id = `${TD}/steady`;
    const a = new Attestor({ kube: null, events: 'off', rescanIntervalMs: 3_600_000 });
    onTestFinished(() => a.stop());
    a.setIdentities([{ spiffeId: id, selectors: [{ 'process:name': [name] }] }]);
    await a.start();
    const p = start(bin);
    await a.rescan();
    expect(pidsOf(a, id)).toEqual([p.pid]);
    const changes: AttestationSnapshot[] = [];
    a.on('change', (s) => changes.push(s));
    // More rescans than the rolling refresh period: every process is re-read at least once.
    for (let i = 0; i < 12; i++) {
      await a.rescan();
      expect(pidsOf(a, id)).toEqual([p.pid]);
    }
    expect(changes.filter((s) => !(s.byIdentity.get(id) ?? []).includes(p.pid))).toEqual([]);
  });

  for (const mode of ['auto', 'off'] as const) {
    it(`follows exec: the same pid becoming another program is attested anew (${mode === 'auto' ? 'proc connector' : 'rescans only'})`, async () => {
      const name = uniqueName();
      const bin = copyBinary(name);
      const marker = uniqueName('m');
      const { a } = await attestor(
        [
          { spiffeId: `${TD}/before-exec`, selectors: [{ 'process:cmdline': [`/bin/sh -c : ${marker};`] }] },
          { spiffeId: `${TD}/after-exec`, selectors: [{ 'process:name': [name] }] },
        ],
        mode,
      );
      // A shell that is attested as itself, then execs the binary in place (same pid, same start time).
      const sh = start('/bin/sh', ['-c', `: ${marker}; sleep 1; exec ${bin} 600`]);
      await waitFor('shell attested', () => pidsOf(a, `${TD}/before-exec`).includes(sh.pid));
      await waitFor('exec attested', () => pidsOf(a, `${TD}/after-exec`).includes(sh.pid));
      expect(pidsOf(a, `${TD}/before-exec`)).toEqual([]);
    });
  }

  it('reports a process claimed by two identities as a conflict and gives it neither', async () => {
    const name = uniqueName();
    const bin = copyBinary(name);
    const { a, conflicts } = await attestor([
      { spiffeId: `${TD}/one`, selectors: [{ 'process:name': [name] }] },
      { spiffeId: `${TD}/two`, selectors: [{ 'process:binary:path': [bin] }] },
    ]);
    const p = start(bin);
    await waitFor('conflict', () => conflicts.find((c) => c.pid === p.pid));
    const record = a.snapshot().processes.get(p.pid)!;
    expect(record).toMatchObject({ spiffeId: null, conflict: [`${TD}/one`, `${TD}/two`] });
    expect(a.snapshot().byIdentity.size).toBe(0);
    // Limited to disjoint destination ports, the two are no longer in conflict: per-port routes.
    a.setIdentities([
      { spiffeId: `${TD}/one`, selectors: [{ 'process:name': [name], 'destination:port': ['5432'] }] },
      { spiffeId: `${TD}/two`, selectors: [{ 'process:binary:path': [bin], 'destination:port': ['443'] }] },
    ]);
    expect(a.snapshot().processes.get(p.pid)).toMatchObject({
      conflict: null,
      routes: [
        { spiffeId: `${TD}/one`, destinationPorts: [5432] },
        { spiffeId: `${TD}/two`, destinationPorts: [443] },
      ],
    });
    // What the agent hands the control interface validates there.
    const writer = await ControlWriter.open(join(tempDir('attest-control'), 'riptides'));
    const table = await writer.writeProcesses(a.processRecords());
    expect(table.processes.find((r) => r.pid === p.pid)?.routes).toHaveLength(2);
  });

  it('systemd:unit from the cgroup, as systemd names it', async () => {
    const name = uniqueName();
    const bin = copyBinary(name);
    const unit = `${uniqueName('rt-')}.service`;
    const { a } = await attestor([{ spiffeId: `${TD}/unit`, selectors: [{ 'systemd:unit': [unit] }] }]);
    const p = start(bin);
    moveToCgroup(p.pid, `system.slice/${unit}`);
    await a.rescan(); // a cgroup move is not a proc event: the rescan (or the next event of the process) sees it
    expect(pidsOf(a, `${TD}/unit`)).toEqual([p.pid]);
    expect((await collectLabels(p.pid))?.['systemd:unit']).toEqual([unit]);
  });

  it('attribution is by pid and start time: a reused pid never inherits the identity', async () => {
    const nameOld = uniqueName();
    const nameNew = uniqueName();
    const binOld = copyBinary(nameOld);
    const binNew = copyBinary(nameNew);
    // Rescans only, and none by timer: the exit is not seen before the pid is taken again.
    const a = new Attestor({ kube: null, events: 'off', rescanIntervalMs: 3_600_000 });
    onTestFinished(() => a.stop());
    a.setIdentities([{ spiffeId: `${TD}/old`, selectors: [{ 'process:name': [nameOld] }] }]);
    await a.start();
    const old = start(binOld);
    await a.rescan();
    expect(pidsOf(a, `${TD}/old`)).toEqual([old.pid]);
    const oldStart = a.snapshot().processes.get(old.pid)!.startTime;
    await old.stop();
    // Start times count clock ticks (10 ms): let one pass, or a pid forced back at once can start in the very
    // tick the old process did (a real reuse waits for the pid space to wrap, far longer than a tick).
    await new Promise((resolve) => setTimeout(resolve, 25));
    // Make the kernel hand out the same pid again (ns_last_pid); other processes may race for it: retry.
    let reused: ReturnType<typeof start> | null = null;
    for (let i = 0; i < 200 && !reused; i++) {
      writeFileSync('/proc/sys/kernel/ns_last_pid', String(old.pid - 1));
      const p = start(binNew);
      if (p.pid === old.pid) reused = p;
      else await p.stop();
    }
    expect(reused?.pid).toBe(old.pid);
    // resolve() (what the data plane asks for a new connection) sees the new process, not the old identity.
    const resolved = await a.resolve(old.pid);
    const newStart = Number(readFileSync(`/proc/${old.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]);
    expect(newStart).not.toBe(oldStart);
    expect(resolved).toMatchObject({ pid: old.pid, startTime: newStart, spiffeId: null, conflict: null });
    expect(pidsOf(a, `${TD}/old`)).toEqual([]);
    expect(readFileSync(`/proc/${old.pid}/comm`, 'utf8').trim()).toBe(nameNew);
  });
});
