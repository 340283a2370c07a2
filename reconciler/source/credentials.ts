import { readFileSync } from 'node:fs';
import { CREDENTIAL_ENV_HINT, messageOf, SourceError } from './errors.ts';

export interface SourceAuth {
  username?: string;
  password?: string;
  token?: string;
}

/**
 * Credentials for `url` from the environment, never from argv: RIPTIDES_GIT_TOKEN (optionally with
 * RIPTIDES_GIT_USERNAME), RIPTIDES_GIT_USERNAME + RIPTIDES_GIT_PASSWORD, or RIPTIDES_GIT_CREDENTIALS_FILE,
 * a git-credentials file (`https://user:secret@host` per line) matched on protocol and host:port.
 */
export function credentialsFromEnv(
  url: string,
  env: Record<string, string | undefined> = process.env,
): SourceAuth | undefined {
  const token = env.RIPTIDES_GIT_TOKEN;
  const username = env.RIPTIDES_GIT_USERNAME || undefined;
  if (token) return { token, username };
  if (username && env.RIPTIDES_GIT_PASSWORD) return { username, password: env.RIPTIDES_GIT_PASSWORD };
  const file = env.RIPTIDES_GIT_CREDENTIALS_FILE;
  return file ? fromCredentialsFile(file, url) : undefined;
}

function fromCredentialsFile(file: string, url: string): SourceAuth | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    // The error text names the path only: the file's content is never echoed.
    throw new SourceError(
      'auth',
      `cannot read the git credentials file ${file}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`,
      `fix RIPTIDES_GIT_CREDENTIALS_FILE, or ${CREDENTIAL_ENV_HINT}`,
    );
  }
  const target = new URL(url);
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) continue;
    let entry: URL;
    try {
      entry = new URL(trimmed);
    } catch {
      continue; // git-credential-store skips lines it cannot parse; so do we
    }
    if (entry.protocol === target.protocol && entry.host === target.host && entry.password) {
      return { username: decodeURIComponent(entry.username), password: decodeURIComponent(entry.password) };
    }
  }
  return undefined;
}

/** The Authorization header for `auth`. A token goes as the Basic password (user `x-access-token` unless a
 * username is given): GitHub, GitLab, Gitea and Bitbucket all accept that form for git over HTTPS. */
export function authorizationHeader(auth: SourceAuth | undefined): string | undefined {
  if (!auth) return undefined;
  const secret = auth.token ?? auth.password;
  if (!secret) return undefined;
  const user = auth.username ?? (auth.token ? 'x-access-token' : '');
  return `Basic ${Buffer.from(`${user}:${secret}`).toString('base64')}`;
}
