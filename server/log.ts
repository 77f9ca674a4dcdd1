/**
 * Structured logs (pino, JSON lines on stdout). Tokens, signatures and key material are
 * never logged: the fields that could carry them are redacted by path, and code logs
 * user and device ids only.
 */
import { pino, type Logger } from 'pino';

export const REDACTED_PATHS = [
  'signerKey',
  '*.signerKey',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'signature',
  '*.signature',
  'privateKey',
  '*.privateKey',
];

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'hermetic-relay', pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
