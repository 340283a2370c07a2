import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';

/** A scratch directory removed by the returned cleanup. */
export function scratch(label: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `riptides-${label}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A scratch directory for the current test, removed when the test finishes. */
export function tempDir(label: string): string {
  const t = scratch(label);
  onTestFinished(t.cleanup);
  return t.dir;
}
