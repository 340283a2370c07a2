/**
 * The SPIFFE ID parser lives in the lowest layer (kernel-module/spiffe-id.ts) so that the policy language, the
 * CA, the agent and the kernel module's own validation share one implementation; this path re-exports it.
 */

export { reservedWorkloadPath } from '../../kernel-module/identity-paths.ts';
export * from '../../kernel-module/spiffe-id.ts';
