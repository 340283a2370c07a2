/**
 * Atomic file replacement for the agent's state directory: the one writer of kernel-module/control/atomic.ts
 * (temp file with the final mode, fsync, rename, fsync of the directory), which the reconciler uses too.
 */
export { writeFileAtomic } from '../kernel-module/control/atomic.ts';
