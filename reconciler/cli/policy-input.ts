/** Shared by the commands that read a policy directory: flags → a rendered (validated, compiled) policy. */

import { escapeText } from '../encoding/escape.ts';
import { readRepoConfig } from '../policy/config.ts';
import { loadPolicyDir, PolicyPathError } from '../policy/load-dir.ts';
import { type RenderResult, renderPolicy, resolvePositions } from '../policy/render.ts';
import { formatText } from '../policy/report/diagnostics-report.ts';
import type { CommandIO } from './command.ts';
import { UsageError } from './command.ts';

/** The flags every command that reads a policy directory takes, for parseFlags. */
export const POLICY_DIR_FLAGS = {
  repo: { type: 'string' },
  path: { type: 'string' },
  'trust-domain': { type: 'string' },
  'max-file-size': { type: 'string' },
  'allow-plaintext-secrets': { type: 'boolean' },
} as const;

export interface PolicyDirFlags {
  repo?: string | undefined;
  path?: string | undefined;
  'trust-domain'?: string | undefined;
  'max-file-size'?: string | undefined;
  'allow-plaintext-secrets'?: boolean | undefined;
}

export function parseByteSize(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(value.trim());
  if (!m) throw new UsageError(`--${flag} must be a size like 1048576, 512KiB or 2MiB (got "${value}")`);
  const unit = (m[2] ?? '').toUpperCase()[0];
  const factor = unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1;
  return Number(m[1]) * factor;
}

/**
 * Loads, validates and compiles a policy directory. Returns null (after printing why) when it cannot run at
 * all: no repository, no trust domain, an unreadable configuration.
 */
export async function openPolicyDir(
  flags: PolicyDirFlags,
  io: CommandIO,
  /** Used when neither --trust-domain nor riptides.config.yaml names one (e.g. the CA's own). */
  fallbackTrustDomain?: string,
): Promise<{ result: RenderResult; summary: string; trustDomain: string } | null> {
  if (!flags.repo) throw new UsageError('missing required flag --repo');
  const maxFileBytes = parseByteSize(flags['max-file-size'], 'max-file-size');
  let tree: ReturnType<typeof loadPolicyDir>;
  try {
    tree = loadPolicyDir({
      repo: flags.repo,
      ...(flags.path ? { path: flags.path } : {}),
      ...(maxFileBytes ? { maxFileBytes } : {}),
    });
  } catch (err) {
    if (err instanceof PolicyPathError) {
      io.stderr(`riptides-cli: ${escapeText(err.message)}\n`);
      return null;
    }
    throw err;
  }
  let trustDomain = flags['trust-domain'];
  let federatesWith: string[] | undefined;
  if (tree.config) {
    const { config, diagnostics } = readRepoConfig(tree.config.path, tree.config.text);
    if (diagnostics.length) {
      io.stderr(formatText(resolvePositions(diagnostics, new Map([[tree.config.path, tree.config.text]]))));
      return null;
    }
    trustDomain ??= config.trustDomain;
    federatesWith = config.federatesWith;
  }
  trustDomain ??= fallbackTrustDomain;
  if (!trustDomain) {
    io.stderr(
      `riptides-cli: no trust domain: pass --trust-domain, or write "trustDomain: <name>" into riptides.config.yaml at the root of the policy path\n`,
    );
    return null;
  }
  const result = renderPolicy(
    tree.files,
    {
      trustDomain,
      ...(federatesWith ? { federatesWith } : {}),
      ...(flags['allow-plaintext-secrets'] ? { allowSecrets: true } : {}),
      ...(maxFileBytes ? { maxFileBytes } : {}),
    },
    tree.diagnostics,
  );
  const summary = `${result.stats.files} file(s), ${result.stats.resources} resource(s)`;
  return { result, summary, trustDomain };
}
