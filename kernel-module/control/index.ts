/** The kernel module's control interface: ABI types, the one writer, the one reader, the kernel side, the credential store. */
export * from './abi.ts';
export { type Owner, TEMP_FILE, writeFileAtomic } from './atomic.ts';
export {
  type CredentialChange,
  type CredentialInfo,
  type CredentialLookup,
  type CredentialMeta,
  CredentialStore,
  type CredentialValue,
  LoadedCredential,
} from './credential-store.ts';
export { ControlError, type ControlErrorCode } from './errors.ts';
export { INTERCEPT_CA_VALIDITY_DAYS } from './intercept-ca.ts';
export { type DriftReport, hasDrift } from './manifest.ts';
export {
  ControlModule,
  type ControlModuleOptions,
  type EnforcedState,
  type LoadedSvid,
  type Refusal,
} from './module.ts';
export { ControlReader, type HealthStatus, parseHealth } from './reader.ts';
export { checkSvid, normalizeSerial } from './svid.ts';
export { composeCaBundle, loadSystemRoots, SYSTEM_ROOT_FILES, type SystemRoots } from './trust-store.ts';
export { type Diagnostic, Limits, validateProcessTable, validateRuleTable } from './validate.ts';
export {
  type BatchWriter,
  ControlWriter,
  type ControlWriterOptions,
  type RuleTableInput,
  sysfsFiles,
} from './writer.ts';
