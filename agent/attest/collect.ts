/**
 * One process's labels, and the `augment` lines of `riptides-cli agent augment PID`: the one-shot forms of
 * what the Attestor does continuously.
 */
import { parseCgroup } from './cgroup.ts';
import { type KubeOptions, KubernetesPodSource, type PodSource } from './kubernetes.ts';
import { formatLabels, type Labels, labelsOf, type PodLabels } from './labels.ts';
import { readProcess } from './proc.ts';

export interface CollectOptions {
  /** Default /proc. */
  procRoot?: string;
  /** Where pods come from: a running source (the Attestor's), or null for none. */
  pods?: PodSource | null;
}

/** The labels of a process, or null when it is gone (or is a kernel thread or a zombie). */
export async function collectLabels(pid: number, opts: CollectOptions = {}): Promise<Labels | null> {
  const raw = readProcess(opts.procRoot ?? '/proc', pid);
  if (!raw) return null;
  const cgroup = parseCgroup(raw.cgroup);
  let pod: PodLabels | null = null;
  if (cgroup.pod && opts.pods) {
    const found = opts.pods.lookup(cgroup.pod.uid, cgroup.pod.containerId);
    if (found.state === 'found') pod = found.pod;
  }
  return labelsOf(raw, cgroup, pod);
}

export class ProcessNotFoundError extends Error {
  override readonly name = 'ProcessNotFoundError';
  readonly code = 'ESRCH';
  constructor(readonly pid: number) {
    super(`no process ${pid} (it exited, or it is a kernel thread or a zombie)`);
  }
}

/**
 * `key=value` lines for a process, sorted, every value escaped for a terminal (labels.ts). With `kube`, the
 * pod of a container is looked up once in the Kubernetes API (no watch). Rejects with ProcessNotFoundError
 * when there is no such process.
 */
export async function augmentLines(
  pid: number,
  opts: { procRoot?: string; kube?: KubeOptions | PodSource | null } = {},
): Promise<string[]> {
  let pods: PodSource | null = null;
  let owned = false;
  if (opts.kube && 'lookup' in opts.kube) pods = opts.kube;
  else if (opts.kube) {
    pods = KubernetesPodSource.fromEnvironment(opts.kube);
    owned = pods !== null;
  }
  try {
    if (owned) await pods!.start();
    const labels = await collectLabels(pid, { procRoot: opts.procRoot, pods });
    if (!labels) throw new ProcessNotFoundError(pid);
    return formatLabels(labels);
  } finally {
    if (owned) await pods!.stop();
  }
}
