/**
 * Configuration from environment variables, parsed once into a typed object. An invalid
 * value fails fast with a message naming the variable. README.md's configuration table
 * lists every variable read here.
 */
import path from 'node:path';
import { AUTH_TIMEOUT_MS, MAX_ENVELOPE_BYTES, MAX_FRAME_BYTES } from '../protocol/limits.js';
import {
  DEFAULT_LOG_CHECKPOINT_INTERVAL_MS,
  DEFAULT_MAILBOX_MAX_BYTES,
  DEFAULT_MAILBOX_MAX_ENVELOPES,
  DEFAULT_MAX_PENDING_SEND_BYTES_TOTAL,
  DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
  DEFAULT_ONE_TIME_PREKEY_HANDOUT_BURST,
  DEFAULT_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR,
  HTTP_BODY_TIMEOUT_MS,
  MAX_AUTH_TIMEOUT_MS,
  MAX_LOG_CHECKPOINT_INTERVAL_MS,
  MIN_LOG_CHECKPOINT_INTERVAL_MS,
  MAX_ONE_TIME_PREKEY_HANDOUT_BURST,
  MAX_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR,
  MIN_AUTH_TIMEOUT_MS,
} from './limits.js';
import { relayOrigin } from '../protocol/origin.js';
import { NoteSigner } from '../crypto/tlog/note.js';
import type { CorsPolicy } from './http/cors.js';
import { DEFAULT_RECEIPT_WINDOW_MS, DEFAULT_RETIREMENT_AGE_MS, MAX_RECEIPT_WINDOW_MS, DEFAULT_WS_IDLE_TIMEOUT_S, MAX_RETIREMENT_AGE_MS, MAX_WS_IDLE_TIMEOUT_S, MIN_RETIREMENT_AGE_MS, MIN_WS_IDLE_TIMEOUT_S } from './limits.js';
import { DEFAULT_NATS_SUBJECT_PREFIX, MAX_NATS_SUBJECT_PREFIX_LENGTH, NATS_SUBJECT_PREFIX_PATTERN, parseNatsUrl } from './fleet/nats-url.js';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export type AuthConfig =
  | { readonly mode: 'jwks'; readonly jwksUrl?: string; readonly jwksFile?: string; readonly issuer: string; readonly audience: string; readonly clockToleranceSec: number }
  | { readonly mode: 'dev'; readonly issuer: string; readonly audience: string; readonly clockToleranceSec: number };

export interface Config {
  readonly host: string;
  readonly port: number;
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  readonly dbPoolMax: number;
  /** Bound on getting a database connection and on each statement (migrations excepted). */
  readonly dbTimeoutMs: number;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  readonly production: boolean;
  readonly auth: AuthConfig;
  readonly shutdownGraceMs: number;
  /** Open WebSockets allowed; undefined: derived from the descriptor limit (server/fd-limit.ts). */
  readonly maxConnections: number | undefined;
  readonly maxUnauthenticatedPerAddress: number;
  /** What one device's mailbox may hold (stored, not yet acknowledged or expired). */
  readonly mailboxMaxEnvelopes: number;
  readonly mailboxMaxBytes: number;
  /** HERMETIC_RETIREMENT_AGE_S: envelope partitions older than this are retired
   * (server/limits.ts, DEFAULT_RETIREMENT_AGE_MS); also the relay's idempotency window. */
  readonly retirementAgeMs: number;
  /** HERMETIC_RECEIPT_WINDOW_S: a retired partition's acknowledged envelopes are kept
   * this long after its drain, so that their delivery receipts are still confirmed
   * (server/limits.ts, DEFAULT_RECEIPT_WINDOW_MS). */
  readonly receiptWindowMs: number;
  /** Bytes of SEND frames awaiting their answer, over the whole process. */
  readonly maxPendingSendBytes: number;
  readonly httpBodyTimeoutMs: number;
  /** Time a WebSocket has to authenticate before it is closed with AUTH_TIMEOUT. */
  readonly authTimeoutMs: number;
  readonly metrics: MetricsConfig;
  /** Serve https:// and wss:// with this certificate and key; undefined: plain HTTP. */
  readonly tls: TlsConfig | undefined;
  /** The relay's origin as devices address it (protocol/origin.ts); undefined: taken from
   * each connection's Host header (development only). */
  readonly publicOrigin: string | undefined;
  /** Seconds without a frame from a WebSocket peer before it is closed. */
  readonly wsIdleTimeoutSec: number;
  /** Browser origins that may call the HTTP routes (server/http/cors.ts). */
  readonly cors: CorsPolicy;
  /** One-time prekey hand-outs per target device, shared by all relays (server/limits.ts). */
  readonly prekeyHandout: { readonly burst: number; readonly perHour: number };
  /** The receipt log's checkpoint signing (server/log/log-key.ts). */
  readonly log: LogConfig;
  /** Wake-ups between relays over NATS instead of PostgreSQL NOTIFY; undefined: NOTIFY. */
  readonly nats: NatsConfig | undefined;
}

export interface NatsConfig {
  /** HERMETIC_NATS_URL: may hold credentials, so never logged. */
  readonly url: string;
  /** HERMETIC_NATS_SUBJECT_PREFIX: notices go on `<prefix>.mailbox`. */
  readonly subjectPrefix: string;
  /** HERMETIC_NATS_CREDS_FILE: a NATS credentials file (JWT and NKey seed). */
  readonly credsFile: string | undefined;
}

function natsConfig(env: Env, production: boolean, databaseUrl: string | undefined): NatsConfig | undefined {
  const url = env.HERMETIC_NATS_URL || undefined;
  const prefix = env.HERMETIC_NATS_SUBJECT_PREFIX || undefined;
  const credsFile = env.HERMETIC_NATS_CREDS_FILE || undefined;
  if (url === undefined) {
    if (prefix !== undefined || credsFile !== undefined) throw new ConfigError('HERMETIC_NATS_SUBJECT_PREFIX and HERMETIC_NATS_CREDS_FILE need HERMETIC_NATS_URL');
    return undefined;
  }
  if (databaseUrl === undefined) {
    throw new ConfigError('HERMETIC_NATS_URL needs DATABASE_URL: relays wake each other when they share a PostgreSQL database (embedded PGlite serves one relay)');
  }
  let servers;
  try {
    servers = parseNatsUrl(url);
  } catch (err) {
    // Never echo the value: it may hold a password.
    throw new ConfigError(`HERMETIC_NATS_URL ${(err as Error).message}`);
  }
  if (prefix !== undefined && (prefix.length > MAX_NATS_SUBJECT_PREFIX_LENGTH || !NATS_SUBJECT_PREFIX_PATTERN.test(prefix))) {
    throw new ConfigError(`HERMETIC_NATS_SUBJECT_PREFIX must be 1..${MAX_NATS_SUBJECT_PREFIX_LENGTH} characters: dot-separated tokens of A-Z a-z 0-9 _ - (no wildcards)`);
  }
  // The bus carries user and device ids, and a notice on it can close any connection.
  if (production && servers.user === undefined && servers.token === undefined && credsFile === undefined) {
    throw new ConfigError(
      'HERMETIC_NATS_URL has no credentials (user:password@ or token@) and no HERMETIC_NATS_CREDS_FILE is set, which is refused when NODE_ENV=production: the bus must be private to the relays',
    );
  }
  return { url, subjectPrefix: prefix ?? DEFAULT_NATS_SUBJECT_PREFIX, credsFile: credsFile === undefined ? undefined : path.resolve(credsFile) };
}

export interface LogConfig {
  /** HERMETIC_LOG_KEY: a signed-note signer key string; undefined: generated in the data
   * directory (refused in production on external PostgreSQL). A secret: never logged. */
  readonly signerKey: string | undefined;
  /** HERMETIC_LOG_ORIGIN: the checkpoint origin line; undefined: the key's name. */
  readonly origin: string | undefined;
  /** HERMETIC_LOG_CHECKPOINT_INTERVAL_MS: how often a grown log gets a new checkpoint. */
  readonly checkpointIntervalMs: number;
}

/** A checkpoint origin: one line of printable ASCII, no spaces or '+' (it names a key). */
const LOG_ORIGIN_PATTERN = /^[\x21-\x2a\x2c-\x7e]{1,256}$/;

function logConfig(env: Env, production: boolean, databaseUrl: string | undefined): LogConfig {
  const signerKey = env.HERMETIC_LOG_KEY || undefined;
  if (signerKey === undefined && production && databaseUrl !== undefined) {
    throw new ConfigError(
      'HERMETIC_LOG_KEY is required when NODE_ENV=production with DATABASE_URL: every relay on the database must sign checkpoints with the same log key (a signed-note signer key, PRIVATE+KEY+<name>+<key id>+<key>)',
    );
  }
  if (signerKey !== undefined) {
    try {
      NoteSigner.parse(signerKey.trim());
    } catch {
      // Never echo the value: it is a secret.
      throw new ConfigError('HERMETIC_LOG_KEY is not a signed-note signer key (PRIVATE+KEY+<name>+<key id>+<base64 key>)');
    }
  }
  const origin = env.HERMETIC_LOG_ORIGIN || undefined;
  if (origin !== undefined && !LOG_ORIGIN_PATTERN.test(origin)) {
    throw new ConfigError('HERMETIC_LOG_ORIGIN must be 1..256 printable ASCII characters without spaces or "+", such as relay.example.com/log');
  }
  return {
    signerKey,
    origin,
    checkpointIntervalMs: intVar(env, 'HERMETIC_LOG_CHECKPOINT_INTERVAL_MS', DEFAULT_LOG_CHECKPOINT_INTERVAL_MS, MIN_LOG_CHECKPOINT_INTERVAL_MS, MAX_LOG_CHECKPOINT_INTERVAL_MS),
  };
}

/** HERMETIC_CORS_ORIGINS: `*`, or a comma-separated list of http(s) origins. */
function corsVar(env: Env): CorsPolicy {
  const raw = env.HERMETIC_CORS_ORIGINS;
  if (raw === undefined || raw.trim() === '') return { kind: 'none' };
  if (raw.trim() === '*') return { kind: 'any' };
  const origins = new Set<string>();
  for (const part of raw.split(',')) {
    const item = part.trim();
    let u: URL;
    try {
      u = new URL(item);
    } catch {
      throw new ConfigError('HERMETIC_CORS_ORIGINS must be * or a comma-separated list of origins such as https://app.example.com');
    }
    if ((u.protocol !== 'https:' && u.protocol !== 'http:') || u.origin !== item.replace(/\/$/, '')) {
      throw new ConfigError('HERMETIC_CORS_ORIGINS must list bare origins (scheme://host[:port]), such as https://app.example.com');
    }
    origins.add(u.origin);
  }
  return { kind: 'list', origins };
}

export interface TlsConfig {
  /** PEM certificate (chain) file. */
  readonly certFile: string;
  /** PEM private key file (unencrypted). */
  readonly keyFile: string;
}

/** Where GET /metrics is served, and whether it needs a token. */
export interface MetricsConfig {
  /** Required as `Authorization: Bearer <token>` when set. */
  readonly token: string | undefined;
  /** A listener of its own for /metrics (then not served on the main port). */
  readonly port: number | undefined;
  readonly host: string;
}

/** A metrics token: a bearer token68 (RFC 7235), long enough not to be guessed. */
const METRICS_TOKEN_PATTERN = /^[A-Za-z0-9._~+/-]{16,1024}=*$/;

/** Issuer and audience of tokens minted by `hermetic token` in dev mode. */
export const DEV_ISSUER = 'hermetic-dev';
export const DEV_AUDIENCE = 'hermetic';

type Env = Readonly<Record<string, string | undefined>>;

function intVar(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return def;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  const v = Number(raw);
  if (v < min || v > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${v}`);
  return v;
}

function optionalIntVar(env: Env, name: string, min: number, max: number): number | undefined {
  const raw = env[name];
  return raw === undefined || raw === '' ? undefined : intVar(env, name, min, min, max);
}

function urlVar(env: Env, name: string, protocols: readonly string[], why = ''): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a valid URL`);
  }
  if (!protocols.includes(u.protocol)) throw new ConfigError(`${name} must use ${protocols.join(' or ')}${why}`);
  return raw;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export function loadConfig(env: Env = process.env): Config {
  const logLevel = env.HERMETIC_LOG_LEVEL || 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`HERMETIC_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  }
  const production = env.NODE_ENV === 'production';
  // In production the key set that decides who every user is must come over TLS: over
  // plain http anyone on the path could substitute their own keys and mint tokens.
  const jwksUrl = urlVar(env, 'HERMETIC_JWKS_URL', production ? ['https:'] : ['https:', 'http:'], production ? ' when NODE_ENV=production' : '');
  const jwksFile = env.HERMETIC_JWKS_FILE || undefined;
  if (jwksUrl && jwksFile) throw new ConfigError('set only one of HERMETIC_JWKS_URL and HERMETIC_JWKS_FILE');
  const clockToleranceSec = intVar(env, 'HERMETIC_JWT_CLOCK_TOLERANCE', 30, 0, 600);
  let auth: AuthConfig;
  if (jwksUrl || jwksFile) {
    const issuer = env.HERMETIC_JWT_ISSUER;
    const audience = env.HERMETIC_JWT_AUDIENCE;
    if (!issuer) throw new ConfigError('HERMETIC_JWT_ISSUER is required when a JWKS is configured');
    if (!audience) throw new ConfigError('HERMETIC_JWT_AUDIENCE is required when a JWKS is configured');
    auth = { mode: 'jwks', ...(jwksUrl ? { jwksUrl } : {}), ...(jwksFile ? { jwksFile } : {}), issuer, audience, clockToleranceSec };
  } else {
    if (production) {
      throw new ConfigError(
        'no HERMETIC_JWKS_URL or HERMETIC_JWKS_FILE is set, and dev mode (self-issued tokens) is refused when NODE_ENV=production',
      );
    }
    auth = { mode: 'dev', issuer: DEV_ISSUER, audience: DEV_AUDIENCE, clockToleranceSec };
  }
  const databaseUrl = urlVar(env, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  const publicUrl = env.HERMETIC_PUBLIC_URL || undefined;
  const publicOrigin = publicUrl === undefined ? undefined : relayOrigin(publicUrl);
  if (publicUrl !== undefined && publicOrigin === undefined) {
    throw new ConfigError('HERMETIC_PUBLIC_URL must be a ws://, wss://, http:// or https:// URL of this relay, without credentials');
  }
  if (production && publicOrigin === undefined) {
    throw new ConfigError('HERMETIC_PUBLIC_URL is required when NODE_ENV=production: devices sign the relay origin when they connect');
  }
  return {
    host: env.HERMETIC_HOST || '0.0.0.0',
    port: intVar(env, 'PORT', 8080, 0, 65535),
    databaseUrl,
    dataDir: path.resolve(env.HERMETIC_DATA_DIR || 'data'),
    dbPoolMax: intVar(env, 'HERMETIC_DB_POOL_MAX', 10, 1, 1000),
    dbTimeoutMs: intVar(env, 'HERMETIC_DB_TIMEOUT_MS', 10_000, 100, 600_000),
    logLevel: logLevel as Config['logLevel'],
    production,
    auth,
    shutdownGraceMs: intVar(env, 'HERMETIC_SHUTDOWN_GRACE_MS', 10_000, 0, 600_000),
    maxConnections: optionalIntVar(env, 'HERMETIC_MAX_CONNECTIONS', 1, 10_000_000),
    maxUnauthenticatedPerAddress: intVar(env, 'HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS', DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS, 1, 10_000_000),
    mailboxMaxEnvelopes: intVar(env, 'HERMETIC_MAILBOX_MAX_ENVELOPES', DEFAULT_MAILBOX_MAX_ENVELOPES, 1, 1_000_000_000),
    // At least one envelope of the largest size must fit.
    retirementAgeMs: 1000 * intVar(env, 'HERMETIC_RETIREMENT_AGE_S', DEFAULT_RETIREMENT_AGE_MS / 1000, MIN_RETIREMENT_AGE_MS / 1000, MAX_RETIREMENT_AGE_MS / 1000),
    receiptWindowMs: 1000 * intVar(env, 'HERMETIC_RECEIPT_WINDOW_S', DEFAULT_RECEIPT_WINDOW_MS / 1000, 0, MAX_RECEIPT_WINDOW_MS / 1000),
    mailboxMaxBytes: intVar(env, 'HERMETIC_MAILBOX_MAX_BYTES', DEFAULT_MAILBOX_MAX_BYTES, MAX_ENVELOPE_BYTES, Number.MAX_SAFE_INTEGER),
    // At least one frame of the largest size must fit.
    maxPendingSendBytes: intVar(env, 'HERMETIC_MAX_PENDING_SEND_BYTES', DEFAULT_MAX_PENDING_SEND_BYTES_TOTAL, MAX_FRAME_BYTES, Number.MAX_SAFE_INTEGER),
    httpBodyTimeoutMs: intVar(env, 'HERMETIC_HTTP_BODY_TIMEOUT_MS', HTTP_BODY_TIMEOUT_MS, 100, 600_000),
    authTimeoutMs: intVar(env, 'HERMETIC_AUTH_TIMEOUT_MS', AUTH_TIMEOUT_MS, MIN_AUTH_TIMEOUT_MS, MAX_AUTH_TIMEOUT_MS),
    metrics: metricsConfig(env),
    tls: tlsConfig(env),
    publicOrigin,
    cors: corsVar(env),
    wsIdleTimeoutSec: intVar(env, 'HERMETIC_WS_IDLE_TIMEOUT_S', DEFAULT_WS_IDLE_TIMEOUT_S, MIN_WS_IDLE_TIMEOUT_S, MAX_WS_IDLE_TIMEOUT_S),
    prekeyHandout: {
      burst: intVar(env, 'HERMETIC_PREKEY_HANDOUT_BURST', DEFAULT_ONE_TIME_PREKEY_HANDOUT_BURST, 1, MAX_ONE_TIME_PREKEY_HANDOUT_BURST),
      perHour: intVar(env, 'HERMETIC_PREKEY_HANDOUTS_PER_HOUR', DEFAULT_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR, 0, MAX_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR),
    },
    log: logConfig(env, production, databaseUrl),
    nats: natsConfig(env, production, databaseUrl),
  };
}

function metricsConfig(env: Env): MetricsConfig {
  const token = env.HERMETIC_METRICS_TOKEN || undefined;
  // Never echo the token: it is a secret.
  if (token !== undefined && !METRICS_TOKEN_PATTERN.test(token)) {
    throw new ConfigError('HERMETIC_METRICS_TOKEN must be 16 to 1024 characters of A-Z a-z 0-9 . _ ~ + / - (a bearer token)');
  }
  const port = optionalIntVar(env, 'HERMETIC_METRICS_PORT', 0, 65535);
  const host = env.HERMETIC_METRICS_HOST || undefined;
  if (host !== undefined && port === undefined) throw new ConfigError('HERMETIC_METRICS_HOST needs HERMETIC_METRICS_PORT');
  return { token, port, host: host ?? '127.0.0.1' };
}

function tlsConfig(env: Env): TlsConfig | undefined {
  const cert = env.HERMETIC_TLS_CERT_FILE || undefined;
  const key = env.HERMETIC_TLS_KEY_FILE || undefined;
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined || key === undefined) {
    throw new ConfigError('set both HERMETIC_TLS_CERT_FILE and HERMETIC_TLS_KEY_FILE, or neither');
  }
  return { certFile: path.resolve(cert), keyFile: path.resolve(key) };
}
