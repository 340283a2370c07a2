import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SourceError } from '../../reconciler/source/index.ts';

/** A scratch directory removed by the returned cleanup. */
export function scratch(label: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `riptides-${label}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Awaits `p`, which must reject with a SourceError, and returns that error. */
export async function sourceError(p: Promise<unknown>): Promise<SourceError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof SourceError) return err;
    throw new Error(`expected a SourceError, got: ${err instanceof Error ? err.stack : String(err)}`);
  }
  throw new Error('expected a SourceError, but the call succeeded');
}

export const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
