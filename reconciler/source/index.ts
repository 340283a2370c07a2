export { BlobCache } from './blob-cache.ts';
export { userCacheDir } from './cache-dir.ts';
export { credentialsFromEnv, type SourceAuth } from './credentials.ts';
export { BlobTooLargeError, isScpLikeRemote, SourceError, type SourceErrorCode } from './errors.ts';
export { openSource, type PolicySource, type SourceOptions, type TransferProgress } from './git-source.ts';
export type { ChangedFiles, TreeEntry } from './tree.ts';
