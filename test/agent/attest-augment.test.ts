import { spawn } from 'node:child_process';
import { describe, expect, it, onTestFinished } from 'vitest';
import { augmentLines, collectLabels, ProcessNotFoundError } from '../../agent/attest/collect.ts';
import { matches } from '../../agent/attest/match.ts';
import { ProcCaps } from '../../agent/attest/proc.ts';
import { waitFor } from '../support/cred-wait.ts';
import { copyBinary, start, uniqueName } from '../support/processes.ts';

/** Every augment line is `key=value` with a plain key, and no value holds a control character. */
function wellFormed(lines: string[]) {
  for (const line of lines) {
    expect(line).toMatch(/^[a-z0-9:._/-]+=/);
    expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/);
  }
}

describe('augment: the labels of a process, as key=value lines', () => {
  it('prints the labels a selector is matched against, sorted', async () => {
    const name = uniqueName();
    const bin = copyBinary(name);
    const p = start(bin, ['600'], { uid: 65534 });
    await waitFor('exec', async () => (await collectLabels(p.pid))?.['process:name']?.[0] === name);
    expect(await augmentLines(p.pid)).toEqual([
      `process:binary:path=${bin}`,
      `process:cmdline=${bin} 600`,
      'process:gid=65534',
      `process:name=${name}`,
      'process:uid=65534',
    ]);
  });

  it('a forged comm cannot add a line: "x\\nprocess:uid=0" stays one escaped value', async () => {
    const child = spawn(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        '-e',
        "require('fs').writeFileSync('/proc/self/comm', 'x\\nprocess:uid=0'); setInterval(() => {}, 1000)",
      ],
      { stdio: 'ignore' },
    );
    onTestFinished(() => {
      child.kill('SIGKILL');
    });
    await waitFor(
      'comm forged',
      async () => (await collectLabels(child.pid!))?.['process:name']?.[0] === 'x\nprocess:uid=0',
    );
    const lines = await augmentLines(child.pid!);
    wellFormed(lines);
    expect(lines).toContain('process:name=x\\nprocess:uid=0');
    expect(lines.filter((l) => l.startsWith('process:uid='))).toEqual(['process:uid=65534']);
    // And it is not a way to match an identity by uid 0 either.
    expect(matches((await collectLabels(child.pid!))!, [{ 'process:uid': ['0'] }])).toBe(false);
  });

  it('terminal escapes, bidi overrides and invalid UTF-8 in argv are escaped; the valid prefix still matches', async () => {
    const sh = start('/bin/sh', ['-c', 'sleep 600; :', '\u001b[2J\u202eevil']);
    // Node sends argv as UTF-8: the invalid byte 0xff comes from printf in a shell.
    const raw = start('/bin/sh', ['-c', `exec /bin/sh -c 'sleep 600; :' "$(printf '\\377x')"`]);
    await waitFor('exec', async () =>
      (await collectLabels(raw.pid))?.['process:cmdline']?.[0]?.includes('\uFFFD'),
    );
    const rawLines = await augmentLines(raw.pid);
    wellFormed(rawLines);
    expect(rawLines).toContain('process:cmdline=/bin/sh -c sleep 600; : \\u{fffd}x');
    expect(matches((await collectLabels(raw.pid))!, [{ 'process:cmdline': ['/bin/sh -c sleep 600;'] }])).toBe(
      true,
    );
    const lines = await augmentLines(sh.pid);
    wellFormed(lines);
    expect(lines.find((l) => l.startsWith('process:cmdline='))).toBe(
      'process:cmdline=/bin/sh -c sleep 600; : \\x1b[2J\\u{202e}evil',
    );
  });

  it('a 1 MB command line costs what 4 KiB costs: it is cut, not read whole', async () => {
    const args = Array.from({ length: 8 }, (_, i) => `${i}${'a'.repeat(128 * 1024 - 2)}`);
    const p = start('/bin/sh', ['-c', 'sleep 600; :', ...args]);
    await waitFor('started', async () =>
      (await collectLabels(p.pid))?.['process:cmdline']?.[0]?.startsWith('/bin/sh -c sleep'),
    );
    const labels = (await collectLabels(p.pid))!;
    expect(labels['process:cmdline']![0]!.length).toBeLessThanOrEqual(ProcCaps.cmdline);
    expect(labels['process:cmdline']![0]!.startsWith('/bin/sh -c sleep 600; : 0aaaa')).toBe(true);
  });

  it('a process that is gone is an error that says so', async () => {
    const p = start(copyBinary(uniqueName()));
    await p.stop();
    await expect(augmentLines(p.pid)).rejects.toBeInstanceOf(ProcessNotFoundError);
    await expect(augmentLines(p.pid)).rejects.toThrow(new RegExp(`no process ${p.pid}`));
  });
});
