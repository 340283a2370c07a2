/**
 * The labels of a process: what selectors are matched against, and what `riptides-cli agent augment PID`
 * prints (as the real daemon's `augment`). Keys are the selector keys of the policy language
 * (reconciler/policy/selectors.ts); `k8s:pod:uid` and `k8s:container:id` are shown for debugging a pod lookup.
 */
import type { CgroupFacts } from './cgroup.ts';
import type { RawProcess } from './proc.ts';

/** Label key → values (one value per key today; a list so that a future multi-valued key needs no new type). */
export type Labels = Record<string, string[]>;

/** What the Kubernetes API said about a process's pod and container. */
export interface PodLabels {
  namespace: string;
  name: string;
  container: string;
  labels: Record<string, string>;
}

/**
 * Labels of a process: `process:name` (comm), `process:cmdline` (argv joined by spaces), `process:binary:path`
 * (the exe link), `process:uid` / `process:gid` (effective IDs, as the kernel checks permissions with them and
 * SPIRE's unix attestor reports them), `systemd:unit`, and the pod's when known.
 */
export function labelsOf(raw: RawProcess, cgroup: CgroupFacts, pod: PodLabels | null): Labels {
  return withPod(processLabels(raw, cgroup), pod);
}

/** The labels /proc alone gives. */
export function processLabels(raw: RawProcess, cgroup: CgroupFacts): Labels {
  const labels: Labels = {
    'process:name': [raw.comm],
    'process:uid': [String(raw.uid.effective)],
    'process:gid': [String(raw.gid.effective)],
  };
  if (raw.cmdline !== '') labels['process:cmdline'] = [raw.cmdline];
  if (raw.exe !== null) labels['process:binary:path'] = [raw.exe];
  if (cgroup.unit) labels['systemd:unit'] = [cgroup.unit];
  if (cgroup.pod) {
    labels['k8s:pod:uid'] = [cgroup.pod.uid];
    labels['k8s:container:id'] = [cgroup.pod.containerId];
  }
  return labels;
}

/** Process labels plus the pod's (a new object; `base` is not changed). */
export function withPod(base: Labels, pod: PodLabels | null): Labels {
  if (!pod) return base;
  const labels: Labels = { ...base };
  labels['k8s:pod:namespace'] = [pod.namespace];
  labels['k8s:pod:name'] = [pod.name];
  labels['k8s:container:name'] = [pod.container];
  for (const [k, v] of Object.entries(pod.labels)) labels[`k8s:label:${k}`] = [v];
  return labels;
}

/**
 * Escapes a value for one `key=value` line on a terminal: backslash, control characters (C0, DEL, C1),
 * line and paragraph separators, bidirectional overrides and U+FFFD (what invalid UTF-8 became) are written
 * as `\n`, `\xNN` or `\u{NNNN}`, so no value can start another line, move the cursor or disguise itself.
 */
export function escapeLabelValue(value: string): string {
  let out = '';
  for (const ch of value) {
    const c = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else if (
      (c >= 0x80 && c <= 0x9f) ||
      c === 0x2028 ||
      c === 0x2029 ||
      (c >= 0x202a && c <= 0x202e) ||
      (c >= 0x2066 && c <= 0x2069) ||
      c === 0x200e ||
      c === 0x200f ||
      c === 0xfffd
    )
      out += `\\u{${c.toString(16)}}`;
    else out += ch;
  }
  return out;
}

/** `key=value` lines, sorted by key then value, values escaped. */
export function formatLabels(labels: Labels): string[] {
  const lines: string[] = [];
  for (const key of Object.keys(labels).sort()) {
    for (const value of [...labels[key]!].sort())
      lines.push(`${escapeLabelValue(key)}=${escapeLabelValue(value)}`);
  }
  return lines;
}
