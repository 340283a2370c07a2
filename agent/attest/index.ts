/** Process attestation: labels from /proc (and the Kubernetes API), selector matching, the Attestor. */
export {
  type AttestationSnapshot,
  Attestor,
  type AttestorEvents,
  type AttestorOptions,
  type ProcessAttestation,
} from './attestor.ts';
export { type CgroupFacts, parseCgroup, podOfPath, unitOfPath } from './cgroup.ts';
export { augmentLines, type CollectOptions, collectLabels, ProcessNotFoundError } from './collect.ts';
export {
  type KubeOptions,
  KubernetesPodSource,
  kubeConfigFrom,
  type PodLookup,
  type PodMatch,
  type PodSource,
} from './kubernetes.ts';
export { escapeLabelValue, formatLabels, type Labels } from './labels.ts';
export {
  type IdentityMatch,
  type IdentitySelectors,
  matches,
  matchIdentity,
  type Resolution,
  resolveMatches,
  type Selector,
  SelectorIndex,
  selectorMatch,
} from './match.ts';
export { joinCmdline, ProcCaps, parseStat } from './proc.ts';
export { openProcEvents, type ProcEventBatch, type ProcEventSource } from './proc-events.ts';
