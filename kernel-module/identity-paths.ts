/**
 * The SPIFFE ID paths the product gives its own parts, in the lowest layer so that the policy language, the
 * agent server, the agent and the protocol share them without loading gRPC: `riptides/daemon/<daemon id>` is
 * an agent's SVID (what the reconciler trusts for that daemon's program and credentials) and
 * `riptides/reconciler` the reconciler's serving SVID (what agents trust for their programs).
 */

/** The URI path of an agent SVID: `riptides/daemon/<daemon id>` (the daemon's workload ID). */
export const DAEMON_PATH_PREFIX = 'riptides/daemon/';
export const RECONCILER_PATH = 'riptides/reconciler';

/**
 * Why a workload ID (a path, with or without its leading "/") is reserved, or null. A policy that gave a
 * workload one of these would let that workload's node act as another daemon or as the reconciler: validation
 * refuses it (RT031) and the agent server signs it only for the agent it names.
 */
export function reservedWorkloadPath(workloadID: string): string | null {
  const path = workloadID.replace(/^\/+/, '');
  if (path === RECONCILER_PATH || path.startsWith(`${RECONCILER_PATH}/`))
    return `is reserved for the reconciler's own identity (${RECONCILER_PATH})`;
  if (path.startsWith(DAEMON_PATH_PREFIX) || path === DAEMON_PATH_PREFIX.slice(0, -1))
    return `is reserved for agents' own identities (${DAEMON_PATH_PREFIX}<daemon id>)`;
  return null;
}
