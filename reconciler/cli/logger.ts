/**
 * Structured logs of the long-running commands in the `(message, fields)` form the agent runtime takes: the
 * project's one logger (telemetry/logger.ts: pino JSON lines, ISO time, level labels, the redaction list)
 * writing to standard error. Callers log metadata only (IDs, versions, fingerprints, reasons); the redaction
 * list is a second line of defence for field names that could hold a secret.
 */
import { createLogger } from '../telemetry/logger.ts';
import type { CommandIO } from './command.ts';

export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export function commandLogger(io: CommandIO, component: string, level: 'info' | 'debug' = 'info'): Logger {
  const log = createLogger({
    level,
    base: { component },
    // The agent handles credential values as `value` in its messages' shapes: censored by name too.
    extraRedacted: ['value'],
    destination: { write: (line: string) => io.stderr(line) },
  });
  return {
    info: (message, fields) => log.info(fields ?? {}, message),
    warn: (message, fields) => log.warn(fields ?? {}, message),
    error: (message, fields) => log.error(fields ?? {}, message),
  };
}
