/**
 * Reading a process from /proc (proc(5)), bounded: every file is read into a fixed buffer up to a cap, so a
 * process with a 2 MB command line or a forged comm costs the same small, fixed amount. Reads are synchronous
 * on purpose: procfs answers from memory in microseconds, and a synchronous read costs ~12 µs where the same
 * read through the libuv thread pool costs ~160 µs (bench/attest.bench.ts); callers slice their work so the
 * event loop is never held for long.
 */
import { closeSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';

/**
 * What is read of each file at most. A longer command line is cut here, as `ps` cuts it: a `process:cmdline`
 * prefix longer than 4 KiB cannot match. This also bounds what the Attestor keeps per process (a process
 * costs the kernel far more than that, so no process count can make the agent's share grow out of proportion).
 */
export const ProcCaps = {
  stat: 4096,
  comm: 64,
  cmdline: 4096,
  status: 16 * 1024,
  cgroup: 64 * 1024,
} as const;

/** PF_KTHREAD (include/linux/sched.h): kernel threads make no connections of their own and are not attested. */
const PF_KTHREAD = 0x00200000;

const buffer = Buffer.allocUnsafe(Math.max(...Object.values(ProcCaps)));

/** Reads up to `cap` bytes of a procfs file; null when it cannot be read (the process is gone, or no permission). */
function readProc(path: string, cap: number): Buffer | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    let total = 0;
    while (total < cap) {
      const n = readSync(fd, buffer, total, cap - total, null);
      if (n === 0) break;
      total += n;
    }
    return Buffer.from(buffer.subarray(0, total));
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

const strict = new TextDecoder('utf-8', { fatal: true });
const lenient = new TextDecoder('utf-8');

/**
 * Bytes from /proc as text. Invalid UTF-8 becomes U+FFFD, which no selector value can match (match.ts), so bytes
 * that are not text can never be made to look like a selector's value.
 */
export function decodeProcText(bytes: Uint8Array): string {
  try {
    return strict.decode(bytes);
  } catch {
    return lenient.decode(bytes);
  }
}

export interface ProcStat {
  pid: number;
  /** The name in parentheses (may contain spaces and parentheses: parsed up to the last ")"). */
  comm: string;
  state: string;
  ppid: number;
  flags: number;
  /** Field 22: clock ticks after boot at which the process started. With the pid, it names the process. */
  startTime: number;
  /** Fields that change when the process calls execve (comm, code and argument addresses): a cheap exec detector. */
  execSignature: string;
}

/** Parses /proc/<pid>/stat (proc(5)); null when it is not of that shape. */
export function parseStat(text: string): ProcStat | null {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 1 || close < open) return null;
  const pid = Number(text.slice(0, open).trim());
  const comm = text.slice(open + 1, close);
  const rest = text
    .slice(close + 2)
    .trim()
    .split(' ');
  // rest[0] is field 3 (state); field n is rest[n - 3].
  const field = (n: number) => rest[n - 3] ?? '';
  const startTime = Number(field(22));
  if (!Number.isSafeInteger(pid) || !Number.isSafeInteger(startTime)) return null;
  return {
    pid,
    comm,
    state: field(3),
    ppid: Number(field(4)),
    flags: Number(field(9)),
    startTime,
    execSignature: `${comm}\u0000${field(26)}\u0000${field(28)}\u0000${field(48)}\u0000${field(49)}`,
  };
}

export function isKernelThread(stat: ProcStat): boolean {
  return (stat.flags & PF_KTHREAD) !== 0;
}

export function readStat(procRoot: string, pid: number): ProcStat | null {
  const data = readProc(`${procRoot}/${pid}/stat`, ProcCaps.stat);
  return data ? parseStat(data.toString('latin1')) : null;
}

export interface IdPair {
  real: number;
  effective: number;
}

export interface RawProcess {
  pid: number;
  startTime: number;
  execSignature: string;
  /** /proc/<pid>/comm without its newline: the kernel's task name, at most 15 bytes. */
  comm: string;
  /** argv joined by single spaces (trailing empty arguments dropped); '' for a process without one. */
  cmdline: string;
  /** True when the command line was longer than {@link ProcCaps.cmdline} and was cut. */
  cmdlineTruncated: boolean;
  /** readlink of /proc/<pid>/exe (may end in " (deleted)"); null when unreadable. */
  exe: string | null;
  uid: IdPair;
  gid: IdPair;
  /** The lines of /proc/<pid>/cgroup. */
  cgroup: string[];
}

/** argv as one string: the NUL-separated arguments joined with single spaces, as `ps -o args` shows them. */
export function joinCmdline(bytes: Uint8Array): string {
  const args = decodeProcText(bytes).split('\u0000');
  while (args.length && args[args.length - 1] === '') args.pop();
  return args.join(' ');
}

function parseIds(status: string, key: 'Uid' | 'Gid'): IdPair | null {
  const start = status.indexOf(`\n${key}:\t`);
  if (start < 0) return null;
  const end = status.indexOf('\n', start + 1);
  const parts = status
    .slice(start + key.length + 3, end < 0 ? undefined : end)
    .split('\t')
    .map(Number);
  if (parts.length < 2 || !parts.slice(0, 2).every((n) => Number.isSafeInteger(n) && n >= 0)) return null;
  return { real: parts[0]!, effective: parts[1]! };
}

/**
 * Everything attestation reads of one process, or null when the process is gone, is a kernel thread or a
 * zombie, or changed identity (another start time) while being read.
 */
export function readProcess(procRoot: string, pid: number, knownStat?: ProcStat): RawProcess | null {
  const stat = knownStat ?? readStat(procRoot, pid);
  if (!stat || isKernelThread(stat) || stat.state === 'Z' || stat.state === 'X') return null;
  const base = `${procRoot}/${pid}`;
  const commBytes = readProc(`${base}/comm`, ProcCaps.comm);
  const cmdlineBytes = readProc(`${base}/cmdline`, ProcCaps.cmdline + 1);
  const statusBytes = readProc(`${base}/status`, ProcCaps.status);
  const cgroupBytes = readProc(`${base}/cgroup`, ProcCaps.cgroup);
  if (!commBytes || !statusBytes) return null;
  let exe: string | null = null;
  try {
    exe = decodeProcText(readlinkSync(`${base}/exe`, { encoding: 'buffer' }));
  } catch {
    exe = null;
  }
  const status = `\n${statusBytes.toString('latin1')}`;
  const uid = parseIds(status, 'Uid');
  const gid = parseIds(status, 'Gid');
  if (!uid || !gid) return null;
  // The pid may have been reused while we read: the files must belong to the process whose stat we hold.
  const after = readStat(procRoot, pid);
  if (!after || after.startTime !== stat.startTime) return null;
  const cmdTruncated = (cmdlineBytes?.length ?? 0) > ProcCaps.cmdline;
  let comm = decodeProcText(commBytes);
  if (comm.endsWith('\n')) comm = comm.slice(0, -1);
  return {
    pid,
    startTime: stat.startTime,
    execSignature: after.execSignature,
    comm,
    cmdline: cmdlineBytes ? joinCmdline(cmdlineBytes.subarray(0, ProcCaps.cmdline)) : '',
    cmdlineTruncated: cmdTruncated,
    exe,
    uid,
    gid,
    cgroup: cgroupBytes
      ? decodeProcText(cgroupBytes)
          .split('\n')
          .filter((l) => l !== '')
      : [],
  };
}

/** The pids of /proc (thread-group leaders only: threads are not listed there), at most `max`. */
export function listPids(procRoot: string, max: number): { pids: number[]; truncated: boolean } {
  const pids: number[] = [];
  let names: string[];
  try {
    names = readdirSync(procRoot);
  } catch {
    return { pids, truncated: false };
  }
  for (const name of names) {
    const c = name.charCodeAt(0);
    if (c < 0x30 || c > 0x39) continue;
    const pid = Number(name);
    if (!Number.isSafeInteger(pid)) continue;
    if (pids.length >= max) return { pids, truncated: true };
    pids.push(pid);
  }
  return { pids, truncated: false };
}
