import { countBySeverity } from '../../policy/diagnostics.ts';
import {
  DIAGNOSTIC_FORMATS,
  formatGithub,
  formatJson,
  formatSarif,
  formatSummary,
  formatText,
} from '../../policy/report/diagnostics-report.ts';
import { packageVersion } from '../../version.ts';
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

const help = `Usage: riptides-cli validate --repo DIR [--path SUBDIR] [--trust-domain TD] [--format text|json|github|sarif]

Validates a policy repository: YAML safety, the schema of every kind, and references between resources.
It reads YAML files (*.yaml, *.yml) under DIR/SUBDIR recursively and applies nothing.

Flags:
  --repo DIR                 the policy repository (a directory)
  --path SUBDIR              the policy path inside it (default: the repository root)
  --trust-domain TD          the trust domain; default: trustDomain in SUBDIR/riptides.config.yaml
  --format FORMAT            text (default), json, github (Actions annotations) or sarif (2.1.0)
  --max-file-size BYTES      refuse larger files (default 1048576)
  --allow-plaintext-secrets  accept v1 Secrets with plaintext values committed to git (not recommended)

Exit status: 0 no errors (warnings allowed), 1 errors found, 2 could not run.
`;

export const command: Command = {
  name: 'validate',
  summary: 'validate a policy repository (schema, references, YAML safety)',
  help,
  async run(argv: string[], io: CommandIO) {
    const { values } = parseFlags(argv, {
      ...POLICY_DIR_FLAGS,
      format: { type: 'string' },
    });
    const format = oneOf(values.format, DIAGNOSTIC_FORMATS, 'format', 'text');
    const opened = await openPolicyDir(values, io);
    if (!opened) return EXIT_USAGE;
    const { result, summary } = opened;
    const { errors } = countBySeverity(result.diagnostics);
    switch (format) {
      case 'json':
        io.stdout(formatJson(result.diagnostics, { valid: errors === 0, stats: result.stats }));
        break;
      case 'github':
        io.stdout(formatGithub(result.diagnostics));
        io.stderr(formatSummary(result.diagnostics, { summary }));
        break;
      case 'sarif':
        io.stdout(formatSarif(result.diagnostics, packageVersion()));
        break;
      default:
        io.stdout(formatText(result.diagnostics, { summary }));
    }
    return errors ? EXIT_FINDINGS : EXIT_OK;
  },
};
