/**
 * Structured logs of the long-running commands (`reconciler`, `agent`): one JSON object per line on
 * standard error, through pino. Callers log metadata only (IDs, versions, fingerprints, reasons); the
 * redaction list is a second line of defence for field names that could hold a secret.
 */
import { pino } from 'pino';
import type { CommandIO } from './command.ts';

export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const REDACT = [
  'token',
  '*.token',
  'secretAccessKey',
  '*.secretAccessKey',
  'sessionToken',
  '*.sessionToken',
  'keyPem',
  '*.keyPem',
  'value',
  '*.value',
];

export function commandLogger(io: CommandIO, component: string, level = 'info'): Logger {
  const log = pino(
    {
      base: { component },
      level,
      redact: { paths: REDACT, censor: '***' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    { write: (line: string) => io.stderr(line) },
  );
  return {
    info: (message, fields) => log.info(fields ?? {}, message),
    warn: (message, fields) => log.warn(fields ?? {}, message),
    error: (message, fields) => log.error(fields ?? {}, message),
  };
}
