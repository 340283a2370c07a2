/**
 * What a process's cgroup says about it (/proc/<pid>/cgroup, cgroups(7)): the systemd unit it runs in, and, for
 * a container of a Kubernetes pod, the pod UID and the container ID that the Kubernetes API then turns into
 * namespace, name, labels and container name.
 */

export interface CgroupFacts {
  /** The systemd unit, as systemd's cg_path_get_unit() finds it: the first component after the slices. */
  unit: string | null;
  /** Pod UID (canonical, with dashes) and the 64-hex container ID, when the path is a pod's container. */
  pod: { uid: string; containerId: string } | null;
  /** Set when different cgroup lines name different pods or containers: nothing is inferred then. */
  ambiguous: string | null;
}

/** A line `hierarchy-ID:controller-list:path`; the path may contain ":" itself. */
function pathOf(line: string): { controllers: string; path: string } | null {
  const first = line.indexOf(':');
  const second = first < 0 ? -1 : line.indexOf(':', first + 1);
  if (second < 0) return null;
  return { controllers: line.slice(first + 1, second), path: line.slice(second + 1) };
}

const UNIT_SUFFIX = /\.(service|scope|socket|mount|swap|target|device|automount|timer|path)$/;
const UNIT_NAME = /^[A-Za-z0-9:_.\\@-]{1,255}$/;

/**
 * systemd's rule (src/basic/cgroup-util.c, cg_path_get_unit): skip the leading `*.slice` components; the next
 * component, when it is a valid unit name, is the unit. `/system.slice/nginx.service` → `nginx.service`;
 * `/kubepods.slice/…/cri-containerd-<id>.scope` → that scope; `/user.slice/user-1000.slice/session-2.scope`
 * → `session-2.scope`.
 */
export function unitOfPath(path: string): string | null {
  const parts = path.split('/').filter((p) => p !== '');
  let i = 0;
  while (i < parts.length && parts[i]!.endsWith('.slice')) i++;
  const candidate = parts[i];
  if (!candidate || !UNIT_SUFFIX.test(candidate) || !UNIT_NAME.test(candidate)) return null;
  return candidate;
}

/**
 * The pod and container of a cgroup path, in every layout the kubelet and the runtimes make: cgroupfs
 * (`/kubepods/burstable/pod<uid>/<id>`), systemd (`/kubepods.slice/…-pod<uid_with_underscores>.slice/
 * cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`), nested or cgroup-namespaced
 * (`/../../pod<uid>/<id>`). As SPIRE's k8s attestor does, the pod UID is found by its shape (punctuation between
 * hex groups) after a `pod` prefix, and the container ID is the last run of the path; here it must also be 64
 * hex digits, as every CRI runtime's IDs are.
 */
const POD_CONTAINER =
  /[!-/:-@[-`{-~]pod([0-9a-f]{8})[-_]([0-9a-f]{4})[-_]([0-9a-f]{4})[-_]([0-9a-f]{4})[-_]([0-9a-f]{12})[!-/:-@[-`{-~](?:[^!-/:-@[-`{-~]+[!-/:-@[-`{-~])*([0-9a-f]{64})$/;

export function podOfPath(path: string): { uid: string; containerId: string } | null {
  const m = POD_CONTAINER.exec(path.endsWith('.scope') ? path.slice(0, -'.scope'.length) : path);
  if (!m) return null;
  return { uid: `${m[1]}-${m[2]}-${m[3]}-${m[4]}-${m[5]}`, containerId: m[6]! };
}

export function parseCgroup(lines: readonly string[]): CgroupFacts {
  let unified: string | null = null;
  let systemdV1: string | null = null;
  let pod: CgroupFacts['pod'] = null;
  let ambiguous: string | null = null;
  for (const line of lines) {
    const parsed = pathOf(line);
    if (!parsed) continue;
    if (parsed.controllers === '' && line.startsWith('0:')) unified = parsed.path;
    if (parsed.controllers === 'name=systemd') systemdV1 = parsed.path;
    const found = podOfPath(parsed.path);
    if (!found) continue;
    if (pod && (pod.uid !== found.uid || pod.containerId !== found.containerId)) {
      ambiguous = `cgroups name two containers (${pod.containerId.slice(0, 12)}, ${found.containerId.slice(0, 12)})`;
    }
    pod ??= found;
  }
  // Hybrid hierarchies: systemd's own v1 hierarchy names the unit; on pure cgroup v2 the unified path does.
  const unitPath = systemdV1 !== null && systemdV1 !== '/' ? systemdV1 : unified;
  return {
    unit: unitPath ? unitOfPath(unitPath) : null,
    pod: ambiguous ? null : pod,
    ambiguous,
  };
}
