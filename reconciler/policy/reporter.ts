/** Collects diagnostics about located resources, each pointing at a path inside the resource's document. */
import { type Code, type NodePath, type PendingDiagnostic, pending, type Severity } from './diagnostics.ts';
import type { Located } from './resources.ts';

export class Reporter {
  readonly out: PendingDiagnostic[] = [];
  at(
    code: Code,
    message: string,
    r: Located<unknown>,
    path: NodePath,
    opts: { hint?: string | undefined; at?: 'key' | 'value'; severity?: Severity } = {},
  ) {
    this.out.push(
      pending(
        code,
        message,
        {
          file: r.file,
          doc: r.doc,
          path,
          at: opts.at ?? 'value',
          resource: r.key,
          ...(opts.hint ? { hint: opts.hint } : {}),
        },
        opts.severity,
      ),
    );
  }
}
