import { resolve } from 'node:path';
import { writeFileAtomic } from '../../common/atomic-file.ts';
import { escapeText } from '../../encoding/escape.ts';
import { type NodeProgram, serializePrograms } from '../../policy/compile.ts';
import { formatText } from '../../policy/report/diagnostics-report.ts';
import {
  type Command,
  type CommandIO,
  EXIT_FINDINGS,
  EXIT_OK,
  EXIT_USAGE,
  oneOf,
  parseFlags,
} from '../command.ts';
import { openPolicyDir, POLICY_DIR_FLAGS } from '../policy-input.ts';

const help = `Usage: riptides-cli compile --repo DIR [--path SUBDIR] [--trust-domain TD] [--format summary|json] [--out FILE]

Validates a policy repository and compiles it into the desired state: one node program per scope (daemon
group, daemon or agent), each identity, egress rule and credential reference with a stable content hash.
The same resources in any file order give byte-identical JSON.

Flags:
  --repo DIR            the policy repository (a directory)
  --path SUBDIR         the policy path inside it (default: the repository root)
  --trust-domain TD     the trust domain; default: trustDomain in SUBDIR/riptides.config.yaml
  --format FORMAT       summary (default: a table per node program) or json (the programs themselves)
  --out FILE            write the output to FILE instead of standard output
  --max-file-size BYTES refuse larger files (default 1048576)
  --allow-plaintext-secrets  accept v1 Secrets with plaintext values committed to git (not recommended)

Exit status: 0 compiled, 1 validation errors (nothing compiled), 2 could not run.
`;

function summarizePrograms(programs: readonly NodeProgram[]): string {
  const lines: string[] = [];
  for (const p of programs) {
    const rules = p.identities.reduce((n, i) => n + i.egress.length, 0);
    const creds = p.identities.reduce((n, i) => n + i.credentials.length, 0);
    lines.push(
      `${p.scope.kind} ${p.scope.id}  program ${p.hash}: ${p.identities.length} identities, ${rules} egress rules, ${creds} credential references`,
    );
    for (const i of p.identities) {
      const flows = i.credentials.map(
        (c) =>
          `${c.source.resource.split('/').pop()}${c.injection ? ` → ${c.injection.destinations.map((d) => `${d.address}${d.port ? `:${d.port}` : ''}`).join(', ') || '(no destination)'}` : ''}${c.sysfs ? ' (+sysfs)' : ''}`,
      );
      lines.push(
        `  ${i.spiffeId}  ${i.tls.mode}${i.tls.intercept ? '+intercept' : ''}  egress ${i.egress.length}  ${i.hash}`,
      );
      for (const f of flows) lines.push(`    credential ${f}`);
    }
  }
  lines.push(
    `${programs.length} node program(s), ${programs.reduce((n, p) => n + p.identities.length, 0)} identities`,
  );
  // Scope ids, SPIFFE IDs and addresses come from the repository: each line is escaped for the terminal whole.
  return `${lines.map(escapeText).join('\n')}\n`;
}

/** Commands that build on a compiled repository, with its --repo and --path, shell-quoted. */
function nextSteps(repo: string, path: string | undefined): string {
  const q = (v: string) => (/^[\w./@:+-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`);
  const at = `--repo ${q(repo)}${path ? ` --path ${q(path)}` : ''}`;
  return [
    '',
    'Next:',
    `  riptides-cli plan ${at} --local     edit a policy file, then see what the change would do`,
    `  riptides-cli validate ${at} --format sarif     the same checks, for code scanning`,
    `  riptides-cli reconciler ${at} --listen 127.0.0.1:9443     serve node agents (README: "reconciler, token, agent")`,
    '',
  ]
    .map(escapeText)
    .join('\n');
}

export const command: Command = {
  name: 'compile',
  summary: 'validate and compile policy into per-scope node programs',
  help,
  async run(argv: string[], io: CommandIO) {
    const { values } = parseFlags(argv, {
      ...POLICY_DIR_FLAGS,
      format: { type: 'string' },
      out: { type: 'string' },
    });
    const format = oneOf(values.format, ['summary', 'json'] as const, 'format', 'summary');
    const opened = await openPolicyDir(values, io);
    if (!opened) return EXIT_USAGE;
    const { result, summary } = opened;
    if (result.diagnostics.length) io.stderr(formatText(result.diagnostics, { summary }));
    if (!result.programs) {
      io.stderr('nothing compiled: fix the errors above\n');
      return EXIT_FINDINGS;
    }
    const output =
      format === 'json' ? `${serializePrograms(result.programs)}\n` : summarizePrograms(result.programs);
    if (values.out) {
      await writeFileAtomic(resolve(io.cwd, values.out), output, { dirMode: 0o777 });
      io.stderr(`wrote ${result.programs.length} node program(s) to ${values.out}\n`);
    } else {
      io.stdout(output);
      // Someone at a terminal reading a summary (`npm start` on a fresh clone): what to try next.
      if (format === 'summary' && io.stderrTTY) io.stderr(nextSteps(values.repo ?? '.', values.path));
    }
    return EXIT_OK;
  },
};
