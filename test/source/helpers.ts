import { SourceError } from '../../reconciler/source/index.ts';

export { scratch } from '../support/scratch.ts';

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
