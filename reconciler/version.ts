import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The project's version, from the nearest package.json above this module (in sources and in dist/). */
export function packageVersion(): string {
  if (cached) return cached;
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      cached = (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
      return cached;
    }
  }
  cached = '0.0.0';
  return cached;
}
