/**
 * Configuration from the environment: defaults, and fail-fast errors that name the
 * variable at fault.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AUTH_TIMEOUT_MS } from '../../protocol/limits.js';
import { ConfigError, DEV_AUDIENCE, DEV_ISSUER, loadConfig } from '../../server/config.js';
import {
  DEFAULT_MAILBOX_MAX_BYTES,
  DEFAULT_RECEIPT_WINDOW_MS,
  DEFAULT_RETIREMENT_AGE_MS,
  DEFAULT_MAILBOX_MAX_ENVELOPES,
  DEFAULT_MAX_PENDING_SEND_BYTES_TOTAL,
  DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
  DEFAULT_ONE_TIME_PREKEY_HANDOUT_BURST,
  DEFAULT_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR,
  DEFAULT_LOG_CHECKPOINT_INTERVAL_MS,
  HTTP_BODY_TIMEOUT_MS,
} from '../../server/limits.js';
import { NoteSigner } from '../../crypto/tlog/note.js';

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

const LOG_KEY = NoteSigner.generate('relay.example.com/log').exportSignerKey();
const jwks = { HERMETIC_JWKS_FILE: '/keys/jwks.json', HERMETIC_JWT_ISSUER: 'https://idp.example', HERMETIC_JWT_AUDIENCE: 'chat' };

describe('loadConfig', () => {
  it('has defaults for everything (dev-mode auth, PGlite in ./data)', () => {
    const c = loadConfig({});
    expect(c).toEqual({
      host: '0.0.0.0',
      port: 8080,
      databaseUrl: undefined,
      dataDir: path.resolve('data'),
      dbPoolMax: 10,
      dbTimeoutMs: 10_000,
      logLevel: 'info',
      production: false,
      auth: { mode: 'dev', issuer: DEV_ISSUER, audience: DEV_AUDIENCE, clockToleranceSec: 30 },
      shutdownGraceMs: 10_000,
      maxConnections: undefined,
      maxUnauthenticatedPerAddress: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
      mailboxMaxEnvelopes: DEFAULT_MAILBOX_MAX_ENVELOPES,
      mailboxMaxBytes: DEFAULT_MAILBOX_MAX_BYTES,
      retirementAgeMs: DEFAULT_RETIREMENT_AGE_MS,
      receiptWindowMs: DEFAULT_RECEIPT_WINDOW_MS,
      maxPendingSendBytes: DEFAULT_MAX_PENDING_SEND_BYTES_TOTAL,
      httpBodyTimeoutMs: HTTP_BODY_TIMEOUT_MS,
      authTimeoutMs: AUTH_TIMEOUT_MS,
      metrics: { token: undefined, port: undefined, host: '127.0.0.1' },
      tls: undefined,
      publicOrigin: undefined,
      wsIdleTimeoutSec: 120,
      cors: { kind: 'none' },
      prekeyHandout: { burst: DEFAULT_ONE_TIME_PREKEY_HANDOUT_BURST, perHour: DEFAULT_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR },
      log: { signerKey: undefined, origin: undefined, checkpointIntervalMs: DEFAULT_LOG_CHECKPOINT_INTERVAL_MS },
      nats: undefined,
    });
  });

  it('reads every variable', () => {
    const c = loadConfig({
      ...jwks,
      HERMETIC_HOST: '127.0.0.1',
      PORT: '0',
      DATABASE_URL: 'postgresql://u@db:5432/hermetic',
      HERMETIC_DATA_DIR: 'relative/dir',
      HERMETIC_DB_POOL_MAX: '3',
      HERMETIC_DB_TIMEOUT_MS: '1500',
      HERMETIC_LOG_LEVEL: 'warn',
      HERMETIC_JWT_CLOCK_TOLERANCE: '5',
      HERMETIC_SHUTDOWN_GRACE_MS: '250',
      HERMETIC_MAX_CONNECTIONS: '5000',
      HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS: '7',
      HERMETIC_MAILBOX_MAX_ENVELOPES: '500',
      HERMETIC_MAILBOX_MAX_BYTES: '1000000',
      HERMETIC_RETIREMENT_AGE_S: '300',
      HERMETIC_RECEIPT_WINDOW_S: '0',
      HERMETIC_MAX_PENDING_SEND_BYTES: '2000000',
      HERMETIC_HTTP_BODY_TIMEOUT_MS: '1500',
      HERMETIC_AUTH_TIMEOUT_MS: '30000',
      HERMETIC_METRICS_TOKEN: 'metrics-token-0123456789',
      HERMETIC_METRICS_PORT: '9464',
      HERMETIC_METRICS_HOST: '10.0.0.5',
      HERMETIC_TLS_CERT_FILE: 'tls/cert.pem',
      HERMETIC_TLS_KEY_FILE: '/etc/hermetic/key.pem',
      HERMETIC_PUBLIC_URL: 'https://Relay.Example.com:443/v1/ws',
      HERMETIC_WS_IDLE_TIMEOUT_S: '16',
      HERMETIC_PREKEY_HANDOUT_BURST: '40',
      HERMETIC_PREKEY_HANDOUTS_PER_HOUR: '0',
      HERMETIC_CORS_ORIGINS: 'https://app.example.com, http://localhost:3000',
      HERMETIC_LOG_KEY: LOG_KEY,
      HERMETIC_LOG_ORIGIN: 'relay.example.com/log',
      HERMETIC_LOG_CHECKPOINT_INTERVAL_MS: '5000',
      NODE_ENV: 'production',
    });
    expect(c).toEqual({
      host: '127.0.0.1',
      port: 0,
      databaseUrl: 'postgresql://u@db:5432/hermetic',
      dataDir: path.resolve('relative/dir'),
      dbPoolMax: 3,
      dbTimeoutMs: 1500,
      logLevel: 'warn',
      production: true,
      auth: { mode: 'jwks', jwksFile: '/keys/jwks.json', issuer: 'https://idp.example', audience: 'chat', clockToleranceSec: 5 },
      shutdownGraceMs: 250,
      maxConnections: 5000,
      maxUnauthenticatedPerAddress: 7,
      mailboxMaxEnvelopes: 500,
      mailboxMaxBytes: 1_000_000,
      retirementAgeMs: 300_000,
      receiptWindowMs: 0,
      maxPendingSendBytes: 2_000_000,
      httpBodyTimeoutMs: 1500,
      authTimeoutMs: 30_000,
      metrics: { token: 'metrics-token-0123456789', port: 9464, host: '10.0.0.5' },
      tls: { certFile: path.resolve('tls/cert.pem'), keyFile: '/etc/hermetic/key.pem' },
      publicOrigin: 'wss://relay.example.com',
      wsIdleTimeoutSec: 16,
      cors: { kind: 'list', origins: new Set(['https://app.example.com', 'http://localhost:3000']) },
      prekeyHandout: { burst: 40, perHour: 0 },
      log: { signerKey: LOG_KEY, origin: 'relay.example.com/log', checkpointIntervalMs: 5000 },
    });
  });

  it('requires the receipt log key in production on external PostgreSQL, and refuses a malformed key or origin without echoing the key', () => {
    const prod = { ...jwks, NODE_ENV: 'production', HERMETIC_PUBLIC_URL: 'wss://relay.example.com', DATABASE_URL: 'postgresql://u@db/h' };
    expect(configError(prod).message).toMatch(/^HERMETIC_LOG_KEY is required when NODE_ENV=production with DATABASE_URL/);
    // Embedded storage keeps a generated key in its data directory: no key needed.
    const { DATABASE_URL: _url, ...embedded } = prod;
    expect(loadConfig(embedded).log.signerKey).toBeUndefined();
    expect(loadConfig({ ...prod, HERMETIC_LOG_KEY: LOG_KEY }).log.signerKey).toBe(LOG_KEY);
    const broken = `${LOG_KEY.slice(0, -6)}AAAAA=`;
    const err = configError({ HERMETIC_LOG_KEY: broken });
    expect(err.message).toMatch(/^HERMETIC_LOG_KEY is not a signed-note signer key/);
    expect(err.message).not.toContain(broken.split('+').pop());
    expect(configError({ HERMETIC_LOG_ORIGIN: 'has space/log' }).message).toMatch(/^HERMETIC_LOG_ORIGIN /);
    expect(configError({ HERMETIC_LOG_CHECKPOINT_INTERVAL_MS: '5' }).message).toMatch(/^HERMETIC_LOG_CHECKPOINT_INTERVAL_MS must be between/);
  });

  it.each(['abc', '-1', '65536', '80.5', '0x50', ' 80'])('refuses PORT=%j, naming PORT', (port) => {
    expect(configError({ PORT: port }).message).toMatch(/^PORT /);
  });

  it.each([
    ['HERMETIC_MAILBOX_MAX_ENVELOPES', '0'],
    ['HERMETIC_MAILBOX_MAX_BYTES', '262143'],
    ['HERMETIC_MAX_PENDING_SEND_BYTES', '1048575'],
    ['HERMETIC_RETIREMENT_AGE_S', '0'],
    ['HERMETIC_RECEIPT_WINDOW_S', '604801'],
  ])('refuses %s=%j, outside its range', (name, value) => {
    expect(configError({ [name]: value }).message).toMatch(new RegExp(`^${name} must be between`));
  });

  it.each(['not a url', 'mysql://u@h/db', 'http://h/db'])('refuses DATABASE_URL=%j, naming DATABASE_URL', (url) => {
    expect(configError({ DATABASE_URL: url }).message).toMatch(/^DATABASE_URL /);
  });

  it('does not echo a malformed DATABASE_URL (it may hold a password)', () => {
    expect(configError({ DATABASE_URL: 'postgres://u:s3cret@[bad' }).message).not.toContain('s3cret');
  });

  it.each(['verbose', 'INFO', 'warning'])('refuses HERMETIC_LOG_LEVEL=%j, naming the variable', (level) => {
    expect(configError({ HERMETIC_LOG_LEVEL: level }).message).toMatch(/^HERMETIC_LOG_LEVEL /);
  });

  it('refuses out-of-range numbers, naming the variable', () => {
    expect(configError({ HERMETIC_DB_POOL_MAX: '0' }).message).toMatch(/^HERMETIC_DB_POOL_MAX /);
    expect(configError({ HERMETIC_JWT_CLOCK_TOLERANCE: '601' }).message).toMatch(/^HERMETIC_JWT_CLOCK_TOLERANCE /);
    expect(configError({ HERMETIC_SHUTDOWN_GRACE_MS: 'soon' }).message).toMatch(/^HERMETIC_SHUTDOWN_GRACE_MS /);
    expect(configError({ HERMETIC_DB_TIMEOUT_MS: '99' }).message).toMatch(/^HERMETIC_DB_TIMEOUT_MS /);
    expect(configError({ HERMETIC_WS_IDLE_TIMEOUT_S: '4' }).message).toMatch(/^HERMETIC_WS_IDLE_TIMEOUT_S /);
    expect(configError({ HERMETIC_MAX_CONNECTIONS: '0' }).message).toMatch(/^HERMETIC_MAX_CONNECTIONS /);
    expect(configError({ HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS: 'lots' }).message).toMatch(/^HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS /);
    expect(configError({ HERMETIC_HTTP_BODY_TIMEOUT_MS: '50' }).message).toMatch(/^HERMETIC_HTTP_BODY_TIMEOUT_MS /);
    expect(configError({ HERMETIC_AUTH_TIMEOUT_MS: '999' }).message).toMatch(/^HERMETIC_AUTH_TIMEOUT_MS /);
    expect(configError({ HERMETIC_AUTH_TIMEOUT_MS: '60001' }).message).toMatch(/^HERMETIC_AUTH_TIMEOUT_MS /);
    // A budget of no one-time keys at all is not a budget: at least one at once.
    expect(configError({ HERMETIC_PREKEY_HANDOUT_BURST: '0' }).message).toMatch(/^HERMETIC_PREKEY_HANDOUT_BURST /);
    expect(configError({ HERMETIC_PREKEY_HANDOUTS_PER_HOUR: '-1' }).message).toMatch(/^HERMETIC_PREKEY_HANDOUTS_PER_HOUR /);
  });

  it('refuses a short or malformed metrics token without echoing it, and a metrics host without a port', () => {
    for (const token of ['short', 'has spaces in the token value', 'x'.repeat(1025)]) {
      const msg = configError({ HERMETIC_METRICS_TOKEN: token }).message;
      expect(msg).toMatch(/^HERMETIC_METRICS_TOKEN /);
      expect(msg).not.toContain(token);
    }
    expect(configError({ HERMETIC_METRICS_HOST: '0.0.0.0' }).message).toContain('HERMETIC_METRICS_PORT');
    expect(configError({ HERMETIC_METRICS_PORT: '70000' }).message).toMatch(/^HERMETIC_METRICS_PORT /);
    expect(loadConfig({ HERMETIC_METRICS_PORT: '0' }).metrics).toEqual({ token: undefined, port: 0, host: '127.0.0.1' });
  });

  it('requires an issuer and an audience with a JWKS', () => {
    expect(configError({ HERMETIC_JWKS_FILE: '/k.json', HERMETIC_JWT_AUDIENCE: 'a' }).message).toContain('HERMETIC_JWT_ISSUER');
    expect(configError({ HERMETIC_JWKS_URL: 'https://idp.example/jwks', HERMETIC_JWT_ISSUER: 'i' }).message).toContain('HERMETIC_JWT_AUDIENCE');
  });

  it('refuses both a JWKS URL and a JWKS file, and a JWKS URL that is not http(s)', () => {
    const both = configError({ ...jwks, HERMETIC_JWKS_URL: 'https://idp.example/jwks' }).message;
    expect(both).toContain('HERMETIC_JWKS_URL');
    expect(both).toContain('HERMETIC_JWKS_FILE');
    expect(configError({ HERMETIC_JWKS_URL: 'file:///etc/jwks', HERMETIC_JWT_ISSUER: 'i', HERMETIC_JWT_AUDIENCE: 'a' }).message).toMatch(
      /^HERMETIC_JWKS_URL /,
    );
  });

  it('refuses a JWKS URL over plain http in production, and allows it otherwise', () => {
    const idp = { HERMETIC_JWT_ISSUER: 'i', HERMETIC_JWT_AUDIENCE: 'a', HERMETIC_PUBLIC_URL: 'wss://relay.example' };
    const msg = configError({ ...idp, HERMETIC_JWKS_URL: 'http://idp.example/jwks', NODE_ENV: 'production' }).message;
    expect(msg).toMatch(/^HERMETIC_JWKS_URL /);
    expect(msg).toContain('https:');
    expect(loadConfig({ ...idp, HERMETIC_JWKS_URL: 'https://idp.example/jwks', NODE_ENV: 'production' }).auth).toMatchObject({
      jwksUrl: 'https://idp.example/jwks',
    });
    // Outside production (a local issuer in development), http stays allowed.
    expect(loadConfig({ ...idp, HERMETIC_JWKS_URL: 'http://127.0.0.1:9999/jwks' }).auth).toMatchObject({ jwksUrl: 'http://127.0.0.1:9999/jwks' });
  });

  it('refuses dev mode in production, naming the JWKS variables', () => {
    const msg = configError({ NODE_ENV: 'production' }).message;
    expect(msg).toContain('HERMETIC_JWKS_URL');
    expect(msg).toContain('HERMETIC_JWKS_FILE');
    expect(msg).toContain('NODE_ENV=production');
    expect(loadConfig({ NODE_ENV: 'production', HERMETIC_PUBLIC_URL: 'wss://relay.example', ...jwks }).auth.mode).toBe('jwks');
  });

  it('reads the CORS origins: none, any, or a list of bare origins', () => {
    expect(loadConfig({ HERMETIC_CORS_ORIGINS: '*' }).cors).toEqual({ kind: 'any' });
    for (const bad of ['app.example.com', 'https://app.example.com/path', 'ftp://x', 'https://a.example, nope']) {
      expect(configError({ HERMETIC_CORS_ORIGINS: bad }).message, bad).toMatch(/^HERMETIC_CORS_ORIGINS /);
    }
  });

  it('requires the public URL in production (devices sign the relay origin), and refuses one that is not a relay URL', () => {
    expect(configError({ NODE_ENV: 'production', ...jwks }).message).toMatch(/^HERMETIC_PUBLIC_URL /);
    for (const bad of ['relay.example', 'ftp://relay.example', 'wss://user:pw@relay.example']) {
      expect(configError({ HERMETIC_PUBLIC_URL: bad }).message, bad).toMatch(/^HERMETIC_PUBLIC_URL /);
    }
    expect(loadConfig({ HERMETIC_PUBLIC_URL: 'ws://127.0.0.1:8080' }).publicOrigin).toBe('ws://127.0.0.1:8080');
  });

  it('reads the NATS notifier: URL, subject prefix (default "hermetic") and credentials file; needs PostgreSQL', () => {
    const db = { DATABASE_URL: 'postgres://db/hermetic' };
    expect(loadConfig({ ...db, HERMETIC_NATS_URL: 'nats://127.0.0.1:4222' }).nats).toEqual({ url: 'nats://127.0.0.1:4222', subjectPrefix: 'hermetic', credsFile: undefined });
    expect(loadConfig({ ...db, HERMETIC_NATS_URL: 'tls://a:4222,tls://b:4222', HERMETIC_NATS_SUBJECT_PREFIX: 'eu-1.chat', HERMETIC_NATS_CREDS_FILE: 'relay.creds' }).nats).toEqual({
      url: 'tls://a:4222,tls://b:4222',
      subjectPrefix: 'eu-1.chat',
      credsFile: path.resolve('relay.creds'),
    });
    expect(configError({ HERMETIC_NATS_URL: 'nats://127.0.0.1:4222' }).message).toMatch(/^HERMETIC_NATS_URL needs DATABASE_URL/);
    expect(configError({ ...db, HERMETIC_NATS_SUBJECT_PREFIX: 'x' }).message).toMatch(/need HERMETIC_NATS_URL/);
    for (const prefix of ['a.*', 'a.>', 'a..b', '.a', 'a b', 'x'.repeat(129)]) {
      expect(configError({ ...db, HERMETIC_NATS_URL: 'nats://h', HERMETIC_NATS_SUBJECT_PREFIX: prefix }).message, prefix).toMatch(/^HERMETIC_NATS_SUBJECT_PREFIX /);
    }
    for (const url of ['http://h:4222', 'nats://h/path', 'nats://u:p@a,tls://b', 'nats://u:p@a,nats://v:p@b', 'not a url']) {
      const err = configError({ ...db, HERMETIC_NATS_URL: url });
      expect(err.message, url).toMatch(/^HERMETIC_NATS_URL /);
      expect(err.message).not.toContain(':p@');
    }
  });

  it('requires NATS credentials in production (the bus carries user and device ids), without echoing them', () => {
    const prod = { NODE_ENV: 'production', ...jwks, HERMETIC_PUBLIC_URL: 'wss://relay.example', DATABASE_URL: 'postgres://db/h', HERMETIC_LOG_KEY: LOG_KEY };
    expect(configError({ ...prod, HERMETIC_NATS_URL: 'nats://nats.internal:4222' }).message).toMatch(/^HERMETIC_NATS_URL has no credentials/);
    expect(loadConfig({ ...prod, HERMETIC_NATS_URL: 'nats://relay:s3cret@nats.internal:4222' }).nats?.url).toBe('nats://relay:s3cret@nats.internal:4222');
    expect(loadConfig({ ...prod, HERMETIC_NATS_URL: 'nats://t0ken@nats.internal' }).nats).toBeDefined();
    expect(loadConfig({ ...prod, HERMETIC_NATS_URL: 'tls://nats.internal', HERMETIC_NATS_CREDS_FILE: '/etc/relay.creds' }).nats).toBeDefined();
  });
});
