import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * The one logger. Redaction is a backstop, not the policy: callers log opaque ids only,
 * never tokens, secrets, e-mails or names.
 */
export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'accessloop' },
    redact: {
      paths: ['req.headers.authorization', '*.token', '*.password', '*.secret', '*.bindPassword', 'token', 'password'],
      censor: '[redacted]',
    },
  };
  return destination ? pino(options, destination) : pino(options);
}
