/**
 * Structured JSON logs (pino): one object per line with an ISO time, a `level` label and a message. No secret
 * value is ever passed to a log call (credentials serialise to metadata only; servers' text is redacted at the
 * source); as a second line of defence, fields named like credentials are censored at any of the first three
 * levels of a logged object (`token`, `req.headers.authorization`, `lease.secret.token`…), and every message
 * string can pass through the project's redactor (`redactText`).
 */
import { type DestinationStream, type Logger, type LoggerOptions, pino } from 'pino';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Field names whose values are censored wherever they appear in the first three levels of an object. */
export const REDACTED_FIELDS = [
  'token',
  'accessToken',
  'clientToken',
  'idToken',
  'jwt',
  'password',
  'secret',
  'clientSecret',
  'secretAccessKey',
  'sessionToken',
  'privateKey',
  'apiKey',
  'authorization',
  'cookie',
  '"x-gitlab-token"',
  '"x-vault-token"',
  'stringData',
  'data',
  'keyPem',
];

/** The paths handed to pino's redaction: each field at the top level and under one or two levels of nesting. */
export function redactPaths(fields: readonly string[] = REDACTED_FIELDS): string[] {
  const at = (f: string) => (f.startsWith('"') ? `[${f}]` : `.${f}`);
  return fields.flatMap((f) => [f.startsWith('"') ? `[${f}]` : f, `*${at(f)}`, `*.*${at(f)}`]);
}

export interface LoggerSettings {
  level?: LogLevel;
  /** Where lines go; default stdout. Tests pass a stream to read every line. */
  destination?: DestinationStream;
  /** Applied to every message string (the project's Redactor.redact). */
  redactText?: (text: string) => string;
  /** Fixed fields on every line (e.g. `{ component: 'reconciler' }`). */
  base?: Record<string, unknown>;
  /** Field names censored in addition to REDACTED_FIELDS (a component's own, e.g. the agent's `value`). */
  extraRedacted?: readonly string[];
}

export function createLogger(settings: LoggerSettings = {}): Logger {
  const redactText = settings.redactText;
  const withStack = settings.level === 'debug' || settings.level === 'trace';
  const options: LoggerOptions = {
    level: settings.level ?? 'info',
    base: { pid: process.pid, ...settings.base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: {
      paths: redactPaths([...REDACTED_FIELDS, ...(settings.extraRedacted ?? [])]),
      censor: '[redacted]',
    },
    ...(redactText
      ? {
          hooks: {
            logMethod(args, method) {
              const redacted = args.map((a) => (typeof a === 'string' ? redactText(a) : a)) as typeof args;
              return method.apply(this, redacted);
            },
          },
        }
      : {}),
    serializers: {
      err: (err: Error & { code?: unknown }) => ({
        type: err.name,
        message: redactText ? redactText(err.message) : err.message,
        ...(typeof err.code === 'string' ? { code: err.code } : {}),
        ...(withStack && err.stack ? { stack: redactText ? redactText(err.stack) : err.stack } : {}),
      }),
    },
  };
  return settings.destination ? pino(options, settings.destination) : pino(options);
}

export type { Logger };
